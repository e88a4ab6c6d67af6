"""The agent's MQTT subscriber: "check in now", and nothing more.

The server publishes campaign changes (start, advance, halt, ...) on the
topics its check-in answer names (``push``: the device's own topic, its
hardware id's, the campaign's while in flight). A message carries no trust --
anyone who can publish on the broker can send one -- so all it may do is wake
the poll loop early: the check-in that follows is signed, and what it brings
is verified as always. Hence:

* the payload is read only for its ``spread_s`` (a random delay in
  ``[0, spread_s]`` before checking in, so that a start does not make a
  million vehicles call at once; 0 for a halt); anything unreadable is a plain
  "check in now" with the configured default spread;
* however many messages arrive, the agent checks in at most once per
  ``push_min_gap_s`` (the loop takes the wake, not each message);
* a broker that is down or refuses us changes nothing: polling stays correct
  (paho reconnects in the background with backoff).
"""

from __future__ import annotations

import json
import logging
import math
import threading
from urllib import parse

import paho.mqtt.client as mqtt

log = logging.getLogger(__name__)

#: The largest spread a message may ask for (a garbled number must not silence the agent).
MAX_SPREAD_S = 3600.0
MAX_PAYLOAD = 4096


def spread_of(payload: bytes, default: float) -> float:
    """The delay bound a message asks for; ``default`` for anything that is not the contract's."""
    if len(payload) > MAX_PAYLOAD:
        return default
    try:
        value = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return default
    if not isinstance(value, dict) or value.get("v") != 1:
        return default
    spread = value.get("spread_s")
    if isinstance(spread, bool) or not isinstance(spread, int | float) or not math.isfinite(spread):
        return default
    return min(max(float(spread), 0.0), MAX_SPREAD_S)


class Wake:
    """A thread-safe "check in now" flag, remembering the smallest spread asked since taken."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._spread: float | None = None
        self.rings = 0

    def ring(self, spread: float) -> None:
        with self._lock:
            self._spread = spread if self._spread is None else min(self._spread, spread)
            self.rings += 1
        self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()

    def wait(self, timeout: float) -> float | None:
        """Block up to ``timeout`` s; the spread asked if woken, else None (the flag stays)."""
        if not self._event.wait(max(0.0, timeout)):
            return None
        with self._lock:
            return self._spread if self._spread is not None else 0.0

    def take(self) -> None:
        """A check-in is starting: every message so far is answered by it."""
        with self._lock:
            self._spread = None
            self._event.clear()


def broker_address(url: str) -> tuple[str, int]:
    """``mqtt://host:port`` -> (host, port); 1883 by default."""
    split = parse.urlsplit(url)
    if split.scheme not in ("mqtt", "tcp") or not split.hostname:
        raise ValueError(f"not an mqtt:// URL: {url!r}")
    return split.hostname, split.port or 1883


class Subscriber:
    """One MQTT session following the topics of the latest check-in answer."""

    def __init__(self, wake: Wake, client_id: str, *, default_spread: float) -> None:
        self._wake = wake
        self._client_id = client_id
        self._default = default_spread
        self._lock = threading.Lock()
        self._broker: str | None = None
        self._topics: frozenset[str] = frozenset()
        self._client: mqtt.Client | None = None
        self.connected = threading.Event()
        self.subscribed = threading.Event()
        self._sessions = 0
        self._pending: int | None = None
        self._acks = threading.Lock()

    @property
    def topics(self) -> frozenset[str]:
        return self._topics

    def follow(self, broker: str | None, topics: tuple[str, ...]) -> None:
        """Listen on ``topics`` at ``broker`` (None: stop listening). Never raises."""
        wanted = frozenset(topics)
        with self._lock:
            if broker != self._broker:
                self._stop()
                self._broker, self._topics = broker, wanted
                if broker is not None:
                    self._start(broker)
                return
            added, removed = wanted - self._topics, self._topics - wanted
            self._topics = wanted
            client = self._client
        if client is None or not self.connected.is_set():
            return  # on_connect subscribes to all of them
        for topic in sorted(removed):
            client.unsubscribe(topic)
        if added:
            self._subscribe(client, sorted(added))

    def _subscribe(self, client: mqtt.Client, topics: list[str]) -> None:
        """Subscribe; ``subscribed`` is set again once the broker acknowledged these."""
        with self._acks:  # the broker's answer cannot be taken before its mid is known
            self.subscribed.clear()
            _rc, mid = client.subscribe([(t, 1) for t in topics])
            self._pending = mid

    def _start(self, broker: str) -> None:
        try:
            host, port = broker_address(broker)
        except ValueError as exc:
            log.warning("push: %s", exc)
            return
        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,  # type: ignore[attr-defined]
            client_id=self._client_id,
            clean_session=True,
        )
        client.reconnect_delay_set(1, 60)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        try:
            client.connect_async(host, port, keepalive=60)
            client.loop_start()
        except (OSError, ValueError) as exc:  # pragma: no cover - connect_async defers I/O
            log.warning("push: cannot reach %s: %s", broker, exc)
            return
        self._client = client

    def _stop(self) -> None:
        client, self._client = self._client, None
        self.connected.clear()
        self.subscribed.clear()
        if client is not None:
            client.disconnect()
            client.loop_stop()

    def close(self) -> None:
        with self._lock:
            self._stop()
            self._broker = None

    # -- paho callbacks (its network thread) ---------------------------------------------------

    def _on_connect(
        self, client: mqtt.Client, _u: object, _f: object, rc: object, _p: object
    ) -> None:
        if getattr(rc, "is_failure", False):
            log.warning("push: the broker refused the session: %s", rc)
            return
        self.connected.set()
        with self._lock:
            topics = sorted(self._topics)
        if topics:
            self._subscribe(client, topics)
        self._sessions += 1
        if self._sessions > 1:  # what was published while we were away is lost: check in
            self._wake.ring(self._default)  # (spread: a broker restart wakes everyone at once)

    def _on_subscribe(self, _c: object, _u: object, mid: int, *_args: object) -> None:
        with self._acks:
            if mid == self._pending:
                self.subscribed.set()

    def _on_disconnect(self, *_args: object) -> None:
        self.connected.clear()
        self.subscribed.clear()

    def _on_message(self, _c: mqtt.Client, _u: object, message: mqtt.MQTTMessage) -> None:
        self._wake.ring(spread_of(message.payload, self._default))


__all__ = ["Subscriber", "Wake", "broker_address", "spread_of"]
