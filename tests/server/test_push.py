"""Push over the real Mosquitto: the server's Pusher, the agent's subscriber, a broker down."""

from __future__ import annotations

import json
import uuid

import pytest

from helpers_mqtt import BROKER, Listener, ensure_mosquitto
from otaguard.agent.push import Subscriber, Wake
from otaguard.errors import UsageError
from otaguard.server import push
from otaguard.server.config import ServerConfig


@pytest.fixture(scope="module")
def broker() -> str:
    return ensure_mosquitto()


def _topic() -> str:
    return push.device_topic(f"T{uuid.uuid4().hex[:12]}")


def test_pusher_publishes_the_contract_payload(broker: str) -> None:
    topic = _topic()
    listener = Listener(topic)
    pusher = push.Pusher(broker)
    try:
        assert pusher.wait_connected(20)
        assert pusher.publish([topic], push.message("halt", "camp-1", spread_s=300)) == 1
        got_topic, payload = listener.get()
    finally:
        pusher.close()
        listener.close()
    assert got_topic == topic
    assert json.loads(payload) == {"v": 1, "reason": "halt", "campaign": "camp-1", "spread_s": 0}


def test_messages() -> None:
    assert push.message("start", "c")["spread_s"] == push.DEFAULT_SPREAD_S
    assert push.message("advance", "c", 10)["spread_s"] == 10
    assert all(push.message(r, "c", 99)["spread_s"] == 0 for r in ("halt", "pause", "cancel"))
    with pytest.raises(ValueError, match="reason"):
        push.message("explode", "c")
    assert push.topics_for_device("V1", ["hw-b", "hw-a", "hw-a"], "c9") == [
        "otaguard/v1/devices/V1",
        "otaguard/v1/hardware/hw-a",
        "otaguard/v1/hardware/hw-b",
        "otaguard/v1/campaigns/c9",
    ]


def test_a_broker_down_never_raises_into_the_caller() -> None:
    pusher = push.Pusher("mqtt://127.0.0.1:9")  # nothing listens there
    try:
        assert pusher.publish(["otaguard/v1/devices/x"], push.message("halt", "c")) == 0
        assert pusher.publish(["a", "b"], {"not": object()}) == 0  # not JSON: logged, dropped
        assert pusher.dropped == 1
    finally:
        pusher.close()


def test_server_config_takes_only_mqtt_urls(tmp_path) -> None:
    config = ServerConfig.create(tmp_path, mqtt_url=BROKER)
    assert config.to_env()["OTAGUARD_MQTT"] == BROKER
    assert ServerConfig.from_env(config.to_env()).mqtt_url == BROKER
    with pytest.raises(UsageError, match="mqtt"):
        ServerConfig.create(tmp_path, mqtt_url="http://127.0.0.1:1883")


def test_the_agent_subscriber_wakes_on_any_message_and_follows_topics(broker: str) -> None:
    wake = Wake()
    first, second = _topic(), _topic()
    subscriber = Subscriber(wake, f"test-{uuid.uuid4().hex[:8]}", default_spread=45.0)
    pusher = push.Pusher(broker)
    sender = Listener(first)  # publishes raw garbage too
    try:
        subscriber.follow(broker, (first,))
        assert subscriber.subscribed.wait(20) and pusher.wait_connected(20)
        pusher.publish([first], push.message("start", "c", spread_s=5))
        assert wake.wait(20) == 5.0
        wake.take()
        sender.publish_raw(first, b"\xff not json")
        assert wake.wait(20) == 45.0  # garbage: a plain "check in now", default spread
        wake.take()
        subscriber.follow(broker, (second,))  # the next answer names other topics
        assert subscriber.subscribed.wait(20)
        pusher.publish([second], push.message("halt", "c"))
        assert wake.wait(20) == 0.0
        wake.take()
        subscriber.follow(None, ())  # push switched off: disconnects
        assert not subscriber.connected.is_set()
    finally:
        subscriber.close()
        pusher.close()
        sender.close()
