"""The state machine (pure) and its persisted state (schema-checked): properties and refusals."""

from __future__ import annotations

import json
import uuid
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from otaguard.agent import machine as m
from otaguard.agent.config import AgentConfig, Backoff, Failure, config_from_json
from otaguard.agent.state import (
    Installed,
    Phase,
    Plan,
    PlannedTarget,
    Result,
    State,
    from_json,
    parse,
)
from otaguard.errors import StorageError

AT = "2026-12-03T12:00:00Z"
HEX = st.text("0123456789abcdef", min_size=64, max_size=64)
NAME = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,20}", fullmatch=True)

targets = st.builds(
    PlannedTarget,
    component=NAME,
    path=st.text(max_size=40),
    length=st.integers(1, 1 << 40),
    hashes=st.dictionaries(st.sampled_from(["sha256", "sha512"]), HEX, min_size=1),
    kind=st.sampled_from([None, "full", "delta"]),
    image_id=st.none() | HEX,
)
plans = st.builds(
    Plan,
    etag=st.text(min_size=1, max_size=40),
    nonce=st.text("0123456789abcdef", min_size=32, max_size=32),
    director=st.binary(max_size=200),
    director_version=st.integers(0, 1 << 40),
    metadata_url=st.text(max_size=60),
    targets_url=st.text(max_size=60),
    targets=st.lists(targets, min_size=1, max_size=3).map(tuple),
)


@st.composite
def states(draw: Any) -> State:
    phase = draw(st.sampled_from(list(Phase)))
    plan = None if phase is Phase.IDLE else draw(plans)
    if phase is Phase.REPORT:
        plan = draw(st.none() | plans)
    return State(
        salt=draw(st.text("0123456789abcdef", min_size=32, max_size=32)),
        phase=phase,
        seq=draw(st.integers(0, 1 << 40)),
        enrolled=draw(st.booleans()),
        poll_interval=draw(st.none() | st.integers(1, 86400)),
        etag=draw(st.none() | st.text(max_size=40)),
        director_version=draw(st.integers(0, 1 << 40)),
        reported_local=draw(st.none() | HEX),
        reported_server=draw(st.none() | st.text(max_size=40)),
        installed=draw(
            st.dictionaries(NAME, st.builds(Installed, st.text(max_size=20), HEX), max_size=2)
        ),
        attempts=draw(
            st.dictionaries(st.sampled_from([f.value for f in Failure]), st.integers(0, 99))
        ),
        plan=plan,
        result=draw(st.none() | st.sampled_from(list(Result))),
    )


@settings(max_examples=200, deadline=None)
@given(states())
def test_state_round_trips(state: State) -> None:
    assert parse(state.to_bytes()) == state


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=10,
)


@settings(max_examples=200, deadline=None)
@given(states(), st.data())
def test_a_damaged_state_is_refused_cleanly_never_misread(state: State, data: Any) -> None:
    document = state.to_json()
    key = data.draw(st.sampled_from(sorted(document)))
    document[key] = data.draw(json_values)
    try:
        loaded = from_json(document)
    except StorageError:
        return
    assert loaded.to_json()[key] == document[key]  # accepted only if it is a valid value


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_garbage_state_file_is_a_storage_error(data: bytes) -> None:
    with pytest.raises(StorageError):
        parse(data)


def _plan() -> Plan:
    target = PlannedTarget("main", "fw/2.img", 100, {"sha256": "ab" * 32})
    return Plan("etag-1", "0" * 32, b"director", 4, "http://m/", "http://t/", (target,))


def _full_update() -> State:
    state = State(salt="1" * 32)
    plan = _plan()
    state = m.step(state, m.Planned(AT, plan, 60))
    done = replace(plan.targets[0], kind="full", image_id="cd" * 32)
    state = m.step(state, m.Downloaded(AT, (done,)))
    state = m.step(state, m.Installed_(AT, "b"))
    state = m.step(state, m.Booted(AT))
    state = m.step(state, m.Confirmed(AT, {"main": Installed("fw/2.img", "ef" * 32)}))
    return state


def test_an_update_walks_every_phase_and_queues_its_events() -> None:
    state = _full_update()
    assert state.phase is Phase.REPORT and state.result is Result.UPDATED
    kinds = [r.kind for r in state.outbox]
    assert kinds == ["download-started", "downloaded", "installed", "boot-trial", "confirmed"]
    ids = [r.id for r in state.outbox]
    assert len(set(ids)) == len(ids) and all(uuid.UUID(i).version == 4 for i in ids)
    assert state.director_version == 4 and state.installed["main"].target == "fw/2.img"
    state = m.step(state, m.EventsSent(AT, frozenset(ids[:2])))
    assert [r.kind for r in state.outbox] == kinds[2:]
    state = m.step(state, m.Reported(AT))
    assert state.phase is Phase.IDLE and state.plan is None
    assert parse(state.to_bytes()) == state


def test_a_refusal_drops_the_plan_and_remembers_the_answer() -> None:
    state = m.step(State(salt="1" * 32), m.Planned(AT, _plan(), None))
    state = m.step(state, m.Failed(AT, Failure.NETWORK, "reset"))
    assert state.attempts == {"network": 1} and state.phase is Phase.DOWNLOAD
    state = m.step(state, m.Refused(AT, "repository", "hash mismatch"))
    assert (state.phase, state.plan, state.etag) == (Phase.REPORT, None, "etag-1")
    refused = state.outbox[-1]
    assert (refused.kind, refused.check, refused.failure) == (
        "refused",
        "repository",
        "deterministic",
    )


def test_giving_up_a_download_keeps_nothing_but_the_chunks() -> None:
    state = m.step(State(salt="1" * 32), m.Planned(AT, _plan(), None))
    state = m.step(state, m.GaveUp(AT, Failure.SLOW, "too slow"))
    assert (state.phase, state.plan, state.etag, state.result) == (
        Phase.IDLE,
        None,
        None,
        Result.FAILED,
    )
    assert state.outbox[-1].kind == "download-failed" and state.outbox[-1].failure == "transient"


def test_a_restart_sends_a_download_back_through_a_check_in() -> None:
    state = m.step(State(salt="1" * 32), m.Planned(AT, _plan(), None))
    assert m.step(state, m.Restarted(AT)).phase is Phase.IDLE
    installing = replace(state, phase=Phase.INSTALL)
    assert m.step(installing, m.Restarted(AT)) == installing


@pytest.mark.parametrize(
    ("phase", "inp"),
    [
        (Phase.IDLE, m.Downloaded(AT, ())),
        (Phase.IDLE, m.Confirmed(AT, {})),
        (Phase.IDLE, m.Reported(AT)),
        (Phase.DOWNLOAD, m.Installed_(AT, "a")),
        (Phase.REPORT, m.Planned(AT, _plan(), None)),
        (Phase.TRIAL, m.Refused(AT, "x", "y")),
    ],
)
def test_impossible_transitions_are_bugs(phase: Phase, inp: m.Input) -> None:
    state = State(salt="1" * 32, phase=phase, plan=None if phase is Phase.IDLE else _plan())
    with pytest.raises(m.InvalidTransition):
        m.step(state, inp)


def test_the_outbox_is_capped_oldest_first() -> None:
    state = State(salt="1" * 32)
    for _ in range(5):
        state = m.step(state, m.Planned(AT, _plan(), None), max_outbox=3)
        state = m.step(state, m.GaveUp(AT, Failure.NETWORK, "down"), max_outbox=3)
    assert len(state.outbox) == 3 and state.seq == 10


def test_backoff_is_capped_exponential_with_jitter() -> None:
    import random

    policy = Backoff(base=1.0, factor=2.0, cap=10.0, jitter=0.5)
    rng = random.Random(1)
    delays = [policy.delay(n, rng) for n in range(1, 8)]
    ceilings = [1, 2, 4, 8, 10, 10, 10]
    assert all(c / 2 <= d <= c for d, c in zip(delays, ceilings, strict=True))
    assert Backoff(jitter=0.0).delay(0, rng) == 0.0


def test_config_from_json_refuses_unknown_settings() -> None:
    config = config_from_json({"chunk_size": 1024, "backoff": {"slow": {"attempts": 1}}})
    assert config.chunk_size == 1024 and config.backoff_for(Failure.SLOW).attempts == 1
    assert config.backoff_for(Failure.NETWORK) == AgentConfig().backoff_for(Failure.NETWORK)
    for bad in (  # type: ignore[var-annotated]
        {"chunk_sise": 1},
        {"chunk_size": "big"},
        {"chunk_size": 1.5},
        {"backoff": {"refused": {}}},
        {"backoff": {"slow": {"tries": 1}}},
        [],
        {"chunk_size": 0},
    ):
        with pytest.raises(ValueError):
            config_from_json(json.loads(json.dumps(bad)))
