"""Push over the real Mosquitto: the server's Pusher, the agent's subscriber, a broker down."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers_mqtt import BROKER, Listener, PrivateBroker, ensure_mosquitto
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


@pytest.fixture
def private_broker(tmp_path: Path) -> Iterator[PrivateBroker]:
    broker = PrivateBroker(tmp_path / "mosquitto")
    yield broker
    broker.stop()


def test_the_server_logs_in_and_only_it_may_publish(private_broker: PrivateBroker) -> None:
    """With the broker's ACL, devices (anonymous) read and the server alone writes: nobody
    else can wake the fleet. The password comes from the environment, never the URL."""
    topic = _topic()
    listener = Listener(topic, port=private_broker.port)  # a device: anonymous, read-only
    url = private_broker.url(PrivateBroker.USER)
    pusher = push.Pusher(url, password=PrivateBroker.PASSWORD)
    try:
        listener.publish_raw(topic, b'{"v": 1, "reason": "halt"}')  # refused by the ACL
        assert pusher.wait_connected(20)
        assert pusher.publish([topic], push.message("start", "camp-1")) == 1
        got_topic, payload = listener.get()
        assert got_topic == topic and json.loads(payload)["campaign"] == "camp-1"
        assert listener.messages.empty()  # the anonymous message never arrived
    finally:
        pusher.close()
        listener.close()


def test_a_wrong_password_is_refused_and_never_raises(private_broker: PrivateBroker) -> None:
    pusher = push.Pusher(private_broker.url(PrivateBroker.USER), password="wrong")
    try:
        assert not pusher.wait_connected(3)
        assert pusher.publish([_topic()], push.message("halt", "c")) == 0
        assert pusher.dropped == 1
    finally:
        pusher.close()


def test_devices_and_logs_never_see_the_servers_login(tmp_path: Path) -> None:
    url = "mqtt://otaguard-server:pa%3Ass@broker.example:8883"
    assert push.public_url(url) == "mqtt://broker.example:8883"
    assert push.public_url("mqtt://u@[::1]:1883") == "mqtt://[::1]:1883"
    assert push.login(url, None) == ("otaguard-server", "pa:ss")
    assert push.login(url, "from-env") == ("otaguard-server", "from-env")
    assert push.login("mqtt://broker.example", "x") is None
    config = ServerConfig.create(tmp_path, mqtt_url="mqtt://u@h:1", mqtt_password="pw")
    assert "pw" not in repr(config)
    assert ServerConfig.from_env(config.to_env()).mqtt_password == "pw"
    with pytest.raises(UsageError) as refused:
        ServerConfig.create(tmp_path, mqtt_url="http://u:topsecret@h:1")
    assert "topsecret" not in str(refused.value)


def test_a_server_with_a_broker_login_pushes_and_tells_devices_no_secret(
    private_broker: PrivateBroker, tmp_path: Path
) -> None:
    """The whole server: it logs in with the password from its config (the environment
    for ``server run``), publishes a campaign's start, and its check-in answers name the
    broker without the login."""
    from server.helpers_campaigns import POLICY, V2, make_fleet, token
    from server.helpers_devices import HW
    from server.helpers_server import start_live

    live = start_live(
        tmp_path / "srv",
        f"sqlite+pysqlite:///{tmp_path / 'db.sqlite'}",
        mqtt_url=private_broker.url(PrivateBroker.USER),
        mqtt_password=PrivateBroker.PASSWORD,
    )
    try:
        fleet = make_fleet(
            live.url, live.admin_token, live.config.database_url,
            live.config.online_keys_dir, tmp_path, 2,
        )  # fmt: skip
        body = fleet.check_in(fleet.devices[0]).json()
        assert body["push"]["broker"] == private_broker.url()  # no user, no password
        listener = Listener(push.hardware_topic(HW), port=private_broker.port)
        rm = token(fleet.admin, "release-manager", "rita")
        ops = token(fleet.admin, "operator", "otto")
        made = rm.create_campaign(
            name="v2", targets=[V2], selector={"hardware_id": HW},
            compatible={HW: ["1.0.0"]}, policy=POLICY,
        )  # fmt: skip
        ops.campaign_action(made["id"], "approve")
        ops.campaign_action(made["id"], "start")
        topic, payload = listener.get()
        assert topic == push.hardware_topic(HW)
        assert json.loads(payload)["reason"] == "start"
        listener.close()
        for client in (rm, ops, fleet.admin):
            client.close()
        fleet.db.dispose()
    finally:
        live.stop()
