"""The agent and the real Mosquitto: a pushed halt wakes an agent, which checks in at once."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

from helpers_fleet import Fleet
from helpers_mqtt import ensure_mosquitto
from otaguard.agent.config import AgentConfig
from otaguard.agent.state import Result
from otaguard.server import push

from .conftest import CONFIG, Car, Releases


def test_a_pushed_halt_wakes_the_agent_which_checks_in(
    car: Car, fleet: Fleet, releases: Releases
) -> None:
    broker = ensure_mosquitto()
    topic = push.device_topic(car.device_id)
    fleet.push = {"broker": broker, "topics": [topic]}
    config = AgentConfig(**{**CONFIG.__dict__, "push_spread_s": 0.0, "push_min_gap_s": 0.0})
    pusher = push.Pusher(broker)
    failures: list[Mapping[str, object]] = []
    try:
        with car.agent(config=config, observer=_Failures(failures)) as agent:
            assert agent.run_cycle() is Result.UP_TO_DATE
            subscriber = agent._subscriber
            assert subscriber is not None and subscriber.topics == {topic}
            assert subscriber.subscribed.wait(20) and pusher.wait_connected(20)
            fleet.offer(car.device_id, releases.v2_name, "camp-1")
            before, rung = len(fleet.requests), agent.wake.rings
            for _ in range(20):  # a burst: one wake, one check-in
                pusher.publish([topic], push.message("start", "camp-1", spread_s=0))
            assert agent.wait(600) is True  # pushed long before the poll interval
            # the whole burst is in before the cycle: a message that arrives during a download
            # rightly makes the agent check in again (it may be a halt)
            assert _until(lambda: agent.wake.rings >= rung + 20)
            assert agent.run_cycle() is Result.UPDATED
            checkins = [r for r in fleet.requests[before:] if "/update" in r[1]]
            # the cycle's check-in and the trial's; a transient failure on a loaded machine
            # (a slow repository fetch) retries with a check-in of its own, never more
            assert 2 <= len(checkins) <= 2 + len(failures), (checkins, failures)
    finally:
        pusher.close()


def _until(check: Callable[[], bool], seconds: float = 30.0) -> bool:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


class _Failures:
    """The agent's observer: keeps its transient failures (each retried with a new check-in)."""

    def __init__(self, into: list[Mapping[str, object]]) -> None:
        self.into = into

    def log(self, event: str, fields: Mapping[str, object]) -> None:
        if event == "failed":
            self.into.append(dict(fields))

    def progress(self, target: str, done: int, total: int) -> None:
        pass


def test_without_a_broker_in_the_answer_the_agent_only_polls(car: Car, fleet: Fleet) -> None:
    slept: list[float] = []
    with car.agent(sleep=slept.append) as agent:
        agent.run_forever(interval=123.0, cycles=2)
        assert agent._subscriber is None
    assert slept == [123.0, 123.0]
