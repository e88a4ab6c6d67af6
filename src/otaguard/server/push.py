"""Push: the server tells devices "check in now" over MQTT (paho-mqtt, any broker).

Polling stays the truth; push only shortens the wait. A campaign change
(start, advance, halt, pause, resume, cancel) is published after its
transaction commits, QoS 1, on the topics of the campaign contract:

* ``otaguard/v1/devices/<device id>``   -- every device listens to its own;
* ``otaguard/v1/hardware/<hardware id>`` -- and to its hardware id's (a start
  reaches a selector's devices without one message per device);
* ``otaguard/v1/campaigns/<campaign id>`` -- while it is in flight in that
  campaign (a halt reaches exactly the devices that may need to abandon or
  revert).

The payload (:func:`message`) carries no trust: ``{"v": 1, "reason", "campaign",
"spread_s"}`` asks for a check-in within a random ``[0, spread_s]`` seconds
(0 for a halt; a start spreads the herd). Anyone able to publish on the broker
can only make devices check in -- the signed check-in decides everything. Still, a
broker open to every publisher lets anyone wake the whole fleet at once (a herd at
the server): the server can log in (``mqtt://USER@host:port``, the password from
``OTAGUARD_MQTT_PASSWORD``, never in the URL devices are told), so the broker's ACL
can keep writing to the server alone (docs/server.md, "Push").

:class:`Pusher` never raises into its caller: a broker that is down, slow or
refusing is logged and the message dropped (the devices learn it at their next
poll). paho keeps the connection in its own thread and reconnects with backoff.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterable, Mapping
from urllib import parse

import paho.mqtt.client as mqtt

from otaguard.server.services.campaign_notice import Notice

log = logging.getLogger(__name__)

PREFIX = "otaguard/v1"
REASONS = frozenset({"start", "advance", "halt", "pause", "resume", "cancel"})
#: Spread for messages that start work (a wave's devices do not all call at once).
DEFAULT_SPREAD_S = 60
#: Reasons that stop work: every device in flight checks in at once.
IMMEDIATE = frozenset({"halt", "pause", "cancel"})


def device_topic(device_id: str) -> str:
    return f"{PREFIX}/devices/{device_id}"


def hardware_topic(hardware_id: str) -> str:
    return f"{PREFIX}/hardware/{hardware_id}"


def campaign_topic(campaign_id: str) -> str:
    return f"{PREFIX}/campaigns/{campaign_id}"


def message(reason: str, campaign: str, spread_s: int | None = None) -> dict[str, object]:
    """The contract's payload; halt/pause/cancel always with spread 0."""
    if reason not in REASONS:
        raise ValueError(f"unknown push reason {reason!r}")
    if reason in IMMEDIATE:
        spread_s = 0
    elif spread_s is None:
        spread_s = DEFAULT_SPREAD_S
    return {"v": 1, "reason": reason, "campaign": campaign, "spread_s": int(spread_s)}


def topics_for_device(
    device_id: str, hardware_ids: Iterable[str], campaign: str | None
) -> list[str]:
    """What a device is told to subscribe to (its check-in answer's ``push.topics``)."""
    topics = [device_topic(device_id)]
    topics += [hardware_topic(h) for h in sorted(set(hardware_ids))]
    if campaign is not None:
        topics.append(campaign_topic(campaign))
    return topics


def broker_address(url: str) -> tuple[str, int]:
    """``mqtt://[user[:password]@]host[:port]`` -> (host, port)."""
    split = parse.urlsplit(url)
    if split.scheme not in ("mqtt", "tcp") or not split.hostname:
        raise ValueError(f"not an mqtt:// URL: {public_url(url)!r}")
    return split.hostname, split.port or 1883


def public_url(url: str) -> str:
    """The broker's URL without its user and password: what devices are told, and logs show."""
    split = parse.urlsplit(url)
    host = split.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = split.port
    except ValueError:
        port = None
    netloc = host if port is None else f"{host}:{port}"
    return parse.urlunsplit((split.scheme, netloc, split.path, "", ""))


def login(url: str, password: str | None) -> tuple[str, str | None] | None:
    """The server's broker login: the URL's user, the password given (else the URL's)."""
    split = parse.urlsplit(url)
    if not split.username:
        return None
    secret = password if password is not None else split.password
    return parse.unquote(split.username), None if secret is None else parse.unquote(secret)


class Pusher:
    """One process's MQTT publisher. ``publish`` never raises; a broker down is logged."""

    def __init__(self, url: str, *, client_id: str = "", password: str | None = None) -> None:
        self.url = public_url(url)  # what the logs show: never the password
        host, port = broker_address(url)  # a malformed URL is a usage error at start
        self._connected = threading.Event()
        self._client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,  # type: ignore[attr-defined]
            client_id=client_id,
            clean_session=True,
        )
        self._client.reconnect_delay_set(1, 30)
        credentials = login(url, password)
        if credentials is not None:
            self._client.username_pw_set(*credentials)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self.published = 0
        self.dropped = 0
        try:
            self._client.connect_async(host, port, keepalive=30)
            self._client.loop_start()
        except (OSError, ValueError) as exc:  # pragma: no cover - connect_async defers I/O
            log.warning("push: broker %s: %s", self.url, exc)

    def _on_connect(self, _c: object, _u: object, _f: object, rc: object, _p: object) -> None:
        if getattr(rc, "is_failure", False):
            log.warning("push: broker %s refused the session: %s", self.url, rc)
            return
        self._connected.set()

    def _on_disconnect(self, *_args: object) -> None:
        self._connected.clear()

    def wait_connected(self, timeout: float) -> bool:
        """For start-up and tests: True once the broker accepted the session."""
        return self._connected.wait(timeout)

    def publish(self, topics: Iterable[str], payload: Mapping[str, object]) -> int:
        """Publish ``payload`` on each topic (QoS 1); the number handed to the broker."""
        try:
            data = json.dumps(dict(payload), sort_keys=True).encode()
            topics = list(topics)
        except (TypeError, ValueError) as exc:
            log.error("push: payload not JSON: %s", exc)
            return 0
        if not self._connected.is_set():
            self.dropped += len(topics)
            log.warning(
                "push: broker %s not connected; %d message(s) dropped", self.url, len(topics)
            )
            return 0
        sent = 0
        for topic in topics:
            try:
                info = self._client.publish(topic, data, qos=1)
            except Exception as exc:  # never into the caller (the commit is done)
                log.warning("push: %s: %s", topic, exc)
                continue
            if info.rc == mqtt.MQTT_ERR_SUCCESS:
                sent += 1
            else:
                log.warning("push: %s: %s", topic, mqtt.error_string(info.rc))
        self.published += sent
        self.dropped += len(topics) - sent
        return sent

    def notify(self, notice: Notice) -> None:
        """``ServerContext.notify``: a committed campaign change, on the contract's topics.

        ``complete`` wakes nobody (nothing for a device to do); the others go out
        with the notice's topics and payload (halt/pause/cancel: spread 0).
        """
        if notice.reason in REASONS:
            self.publish(notice.topics(), notice.payload())

    def close(self) -> None:
        try:
            self._client.disconnect()
            self._client.loop_stop()
        except Exception as exc:  # shutting down
            log.debug("push: close: %s", exc)


__all__ = [
    "Pusher",
    "broker_address",
    "campaign_topic",
    "device_topic",
    "hardware_topic",
    "login",
    "message",
    "public_url",
    "topics_for_device",
]
