"""The audit record: canonical JSON, one spelling per event, strict parsing."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers_audit import T0, event
from otaguard.audit.entry import (
    ACTIONS,
    ACTOR_KINDS,
    MAX_ENTRY_SIZE,
    Actor,
    AuditEvent,
    encode_entry,
    format_time,
    parse_entry,
)
from otaguard.errors import AuditEntryError

GOOD = encode_entry(7, event(7))


def test_round_trip_and_canonical_form() -> None:
    parsed = parse_entry(GOOD)
    assert parsed.index == 7
    assert parsed.event == event(7)
    assert encode_entry(7, parsed.event) == GOOD
    value = json.loads(GOOD)
    assert list(value) == sorted(value)
    assert b" " not in GOOD.replace(b"1.7.0", b"")
    assert value["time"] == "2026-12-03T10:00:07Z"


def test_time_is_utc_with_microseconds_only_when_present() -> None:
    assert format_time(T0) == "2026-12-03T10:00:00Z"
    assert format_time(T0.replace(microsecond=5)) == "2026-12-03T10:00:00.000005Z"
    plus_two = dt.timezone(dt.timedelta(hours=2))
    assert format_time(dt.datetime(2026, 12, 3, 12, 0, tzinfo=plus_two)) == "2026-12-03T10:00:00Z"
    with pytest.raises(ValueError, match="time zone"):
        format_time(dt.datetime(2026, 12, 3))


def _mutate(**changes: object) -> bytes:
    value = json.loads(GOOD)
    for key, new in changes.items():
        if new is None:
            del value[key]
        else:
            value[key] = new
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (GOOD.replace(b":", b": ", 1), "canonical"),  # whitespace
        (
            json.dumps(dict(reversed(json.loads(GOOD).items())), separators=(",", ":")).encode(),
            "canonical",
        ),  # key order
        (GOOD[:-1] + b',"v":1}', "canonical"),  # duplicate key
        (_mutate(extra=1), "exactly the fields"),
        (_mutate(subject=None), "exactly the fields"),
        (_mutate(v=2), "version"),
        (_mutate(v=True), "version"),
        (_mutate(index=-1), "non-negative"),
        (_mutate(index=True), "non-negative"),
        (_mutate(index="7"), "non-negative"),
        (_mutate(action="image.sgn"), "unknown action"),
        (_mutate(action="sign"), "dotted"),
        (_mutate(action=["image.sign"]), "dotted"),
        (_mutate(actor={"kind": ["user"], "id": "x"}), "actor kind"),
        (_mutate(actor={"kind": "user", "id": "x", "role": {"r": 1}}), "actor id and role"),
        (_mutate(actor={"kind": "martian", "id": "x"}), "actor kind"),
        (_mutate(actor={"kind": "user"}), "actor"),
        (_mutate(actor={"kind": "user", "id": "x", "mood": "y"}), "actor"),
        (_mutate(actor={"kind": "user", "id": 5}), "actor id"),
        (_mutate(actor="alice"), "actor must be"),
        (_mutate(subject=""), "subject"),
        (_mutate(subject="x" * 1025), "subject"),
        (_mutate(details=[]), "details"),
        (_mutate(time="2026-12-03T10:00:00+00:00"), "RFC 3339"),
        (_mutate(time="2026-12-03T10:00:00.000000Z"), "zero fraction"),
        (_mutate(time="2026-02-30T10:00:00Z"), "valid date"),
        (_mutate(time="2026-12-03 10:00:00Z"), "RFC 3339"),
        (GOOD.replace(b'"security_counter":7', b'"security_counter":7.0'), "not an integer"),
        (GOOD.replace(b'"security_counter":7', b'"security_counter":NaN'), "not an integer"),
        (GOOD.replace(b'"gateway"', b'"gate\\ud800"'), "Unicode"),
        (GOOD.replace(b'"gateway"', b'"gate\\u0077ay"'), "canonical"),
        (b"\xff" + GOOD, "UTF-8"),
        (b"[1]", "exactly the fields"),
        (b"{" * 5000, "JSON"),
        (b"x" * (MAX_ENTRY_SIZE + 1), "exceeds"),
    ],
)
def test_malformed_entries_are_refused(data: bytes, why: str) -> None:
    with pytest.raises(AuditEntryError, match=why):
        parse_entry(data)


@pytest.mark.parametrize(
    "bad",
    [
        AuditEvent(T0, Actor("user", "a"), "no.such", "s"),
        AuditEvent(T0, Actor("user", "a"), "image.sign", "s", {"rate": 0.5}),
        AuditEvent(T0, Actor("user", "a"), "image.sign", "s", {"n": 1 << 70}),
        AuditEvent(T0, Actor("user", "a"), "image.sign", "s", {"x": "y" * MAX_ENTRY_SIZE}),
        AuditEvent(T0, Actor("user", ""), "image.sign", "s"),
        AuditEvent(T0, Actor("user", "a"), "image.sign", "s", {"deep": [[[[[[[[[[1]]]]]]]]]]}),
        AuditEvent(T0, Actor("user", "a"), "image.sign", "s", {"t": b"bytes"}),
    ],
)
def test_events_that_cannot_be_recorded_are_refused_at_encoding(bad: AuditEvent) -> None:
    with pytest.raises(AuditEntryError):
        encode_entry(0, bad)


_TEXT = st.text(min_size=1, max_size=40).filter(
    lambda s: not any(0xD800 <= ord(c) < 0xE000 for c in s)
)
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | _TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_TEXT, inner, max_size=4),
    max_leaves=12,
)
_EVENTS = st.builds(
    AuditEvent,
    st.datetimes(
        min_value=dt.datetime(1970, 1, 1),
        max_value=dt.datetime(9999, 1, 1),
        timezones=st.just(dt.UTC),
    ),
    st.builds(Actor, st.sampled_from(sorted(ACTOR_KINDS)), _TEXT, st.none() | _TEXT),
    st.sampled_from(sorted(ACTIONS)),
    _TEXT,
    st.dictionaries(_TEXT, _JSON, max_size=5),
)


@given(st.integers(0, 2**63 - 1), _EVENTS)
@settings(max_examples=300, deadline=None)
def test_every_encodable_event_round_trips(index: int, ev: AuditEvent) -> None:
    data = encode_entry(index, ev)
    parsed = parse_entry(data)
    assert parsed.index == index
    assert encode_entry(index, parsed.event) == data


@given(st.binary(max_size=400))
@settings(max_examples=500, deadline=None)
def test_arbitrary_bytes_parse_or_are_refused_cleanly(data: bytes) -> None:
    try:
        parsed = parse_entry(data)
    except AuditEntryError:
        return
    assert encode_entry(parsed.index, parsed.event) == data


@given(st.integers(0, len(GOOD) - 1), st.integers(1, 255))
@settings(max_examples=300, deadline=None)
def test_any_changed_byte_is_refused_or_another_canonical_entry(pos: int, delta: int) -> None:
    data = bytearray(GOOD)
    data[pos] = (data[pos] + delta) % 256
    try:
        parsed = parse_entry(bytes(data))
    except AuditEntryError:
        return
    assert encode_entry(parsed.index, parsed.event) == bytes(data) != GOOD
