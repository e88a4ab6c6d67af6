"""The real Mosquitto at 127.0.0.1:1883 for push tests: started when down, else the test FAILS."""

from __future__ import annotations

import queue
import socket
import subprocess
import threading
import time
import uuid
from pathlib import Path

import paho.mqtt.client as mqtt

BROKER = "mqtt://127.0.0.1:1883"
HOST, PORT = "127.0.0.1", 1883


def _up() -> bool:
    try:
        with socket.create_connection((HOST, PORT), timeout=1):
            return True
    except OSError:
        return False


def ensure_mosquitto() -> str:
    """The broker's URL; starts ``mosquitto -d`` if nothing listens (never skips)."""
    if _up():
        return BROKER
    subprocess.run(["mosquitto", "-d", "-c", "/etc/mosquitto/mosquitto.conf"], check=True)
    for _ in range(100):
        if _up():
            return BROKER
        time.sleep(0.1)
    raise RuntimeError("Mosquitto did not come up on 127.0.0.1:1883")


class Listener:
    """A plain MQTT subscriber collecting (topic, payload) pairs."""

    def __init__(self, *topics: str, port: int = PORT, login: tuple[str, str] | None = None):
        self.messages: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self._client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,  # type: ignore[attr-defined]
            client_id=f"test-{uuid.uuid4().hex[:12]}",
        )
        if login is not None:
            self._client.username_pw_set(*login)
        self._client.on_message = lambda _c, _u, m: self.messages.put((m.topic, m.payload))
        subscribed = threading.Event()
        self._client.on_subscribe = lambda *_a: subscribed.set()
        self._client.connect(HOST, port)
        result, _mid = self._client.subscribe([(t, 1) for t in topics])
        assert result == mqtt.MQTT_ERR_SUCCESS
        self._client.loop_start()
        assert subscribed.wait(20), "the broker did not acknowledge the subscription"

    def get(self, timeout: float = 20.0) -> tuple[str, bytes]:
        return self.messages.get(timeout=timeout)

    def publish_raw(self, topic: str, payload: bytes) -> None:
        self._client.publish(topic, payload, qos=1).wait_for_publish(10)

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


class PrivateBroker:
    """A Mosquitto of the test's own on a free port, with logins and an ACL: anonymous
    clients (devices) may only read ``otaguard/v1/#``, the ``otaguard-server`` user writes."""

    USER, PASSWORD = "otaguard-server", "s3cret-push"

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        with socket.socket() as probe:
            probe.bind((HOST, 0))
            self.port = probe.getsockname()[1]
        passwd, acl, conf = directory / "passwd", directory / "acl", directory / "mosquitto.conf"
        passwd.touch(mode=0o600)
        subprocess.run(
            ["mosquitto_passwd", "-b", str(passwd), self.USER, self.PASSWORD],
            check=True,
            capture_output=True,
        )
        acl.write_text(
            f"topic read otaguard/v1/#\n\nuser {self.USER}\ntopic readwrite otaguard/v1/#\n"
        )
        conf.write_text(
            f"listener {self.port} {HOST}\nallow_anonymous true\npassword_file {passwd}\n"
            f"acl_file {acl}\npersistence false\nuser root\n"
        )
        self.proc = subprocess.Popen(
            ["mosquitto", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        for _ in range(100):
            try:
                with socket.create_connection((HOST, self.port), timeout=1):
                    return
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"the test's Mosquitto did not come up on port {self.port}")

    def url(self, user: str | None = None) -> str:
        return f"mqtt://{user + '@' if user else ''}{HOST}:{self.port}"

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
