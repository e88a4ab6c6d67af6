"""Boot-control record: strict parser (property tests), two copies, torn and fuzzed writes."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from otaguard.device.bootctl import (
    MAX_PRIORITY,
    MAX_TRIES,
    RECORD_SIZE,
    SEQ_MOD,
    BootControl,
    BootRecord,
    SlotState,
    newest,
    parse_record,
)
from otaguard.device.faults import FaultPlan, OpClock, PowerLoss, TearFill
from otaguard.device.flash import Flash
from otaguard.device.geometry import PRESETS, Layout
from otaguard.errors import MalformedError

slot_states = st.builds(
    SlotState,
    priority=st.integers(0, MAX_PRIORITY),
    tries=st.integers(0, MAX_TRIES),
    successful=st.booleans(),
    unbootable=st.booleans(),
)
records = st.builds(BootRecord, seq=st.integers(0, SEQ_MOD - 1), a=slot_states, b=slot_states)


@given(records)
def test_round_trip(record: BootRecord) -> None:
    raw = record.encode()
    assert len(raw) == RECORD_SIZE
    assert parse_record(raw) == record
    assert parse_record(raw + b"\xff" * 8) == record  # padding after the record is ignored


@given(st.binary(max_size=64))
def test_parser_accepts_only_records_or_raises_malformed(raw: bytes) -> None:
    try:
        record = parse_record(raw)
    except MalformedError:
        return
    assert record.encode() == raw[:RECORD_SIZE]  # canonical: one encoding per record


@given(records, st.integers(0, RECORD_SIZE - 1), st.integers(1, 255))
def test_any_single_byte_change_is_detected(record: BootRecord, pos: int, delta: int) -> None:
    raw = bytearray(record.encode())
    raw[pos] = (raw[pos] + delta) % 256
    with pytest.raises(MalformedError):
        parse_record(bytes(raw))


@given(records, st.integers(0, RECORD_SIZE - 1))
def test_every_truncation_is_detected(record: BootRecord, cut: int) -> None:
    with pytest.raises(MalformedError):
        parse_record(record.encode()[:cut])


@given(st.integers(0, SEQ_MOD - 1), slot_states)
def test_newest_is_the_successor_even_across_wraparound(seq: int, state: SlotState) -> None:
    older = BootRecord(seq, a=state)
    newer = BootRecord((seq + 1) % SEQ_MOD, b=state)
    assert newest((older, newer)) == 1
    assert newest((newer, older)) == 0
    assert newest((None, older)) == 1 and newest((older, None)) == 0
    assert newest((None, None)) is None


def _control(geometry_name: str = "nor-4k", plan: FaultPlan | None = None) -> BootControl:
    g = PRESETS[geometry_name]
    layout = Layout(g.with_slot_size(g.sector_size), ("main",))
    return BootControl(Flash.blank(g, layout.size, OpClock(plan or FaultPlan())), layout)


def test_writes_alternate_between_copies() -> None:
    control = _control()
    assert control.load() is None
    for seq in range(1, 6):
        stored = control.write(BootRecord(0, a=SlotState(seq, 1, unbootable=False)))
        assert stored.seq == seq and control.load() == stored
        assert sum(c is not None for c in control.copies()) == (1 if seq == 1 else 2)
    assert control.flash.clock.count == 10  # erase + program per write


@pytest.mark.parametrize("geometry", sorted(PRESETS))
@pytest.mark.parametrize("fill", list(TearFill))
def test_torn_write_falls_back_to_the_previous_record(geometry: str, fill: TearFill) -> None:
    for op in (0, 1):  # the erase, then the program, of the third write
        for seed in range(5):
            control = _control(geometry)
            first = control.write(BootRecord(0, a=SlotState(15, 3, unbootable=False)))
            second = control.write(BootRecord(0, b=SlotState(15, 2, unbootable=False)))
            control.flash.clock = OpClock(FaultPlan(tear_at=op, fill=fill, seed=seed))
            attempt = BootRecord(second.seq + 1, a=SlotState(9, 1, True, False))
            with pytest.raises(PowerLoss):
                control.write(attempt)
            loaded = control.load()
            # The old record, or -- when the tear only cut the padding after a
            # complete record -- the new one; never anything else.
            assert loaded == second or (op == 1 and loaded == attempt), (op, seed)
            control.flash.clock = OpClock()
            third = control.write(BootRecord(0))
            assert control.load() == third and third.seq == loaded.seq + 1
            assert first.seq == 1


@settings(max_examples=300)
@given(
    records,
    st.lists(st.tuples(st.booleans(), st.integers(0, RECORD_SIZE - 1), st.integers(0, 255))),
)
def test_fuzzed_copies_never_yield_a_record_that_was_not_written(
    record: BootRecord, damage: list[tuple[bool, int, int]]
) -> None:
    control = _control()
    older = control.write(record)
    newer = control.write(BootRecord(0, a=record.b, b=record.a))
    flash = control.flash
    buffer = bytearray(flash.snapshot())
    for second_copy, pos, value in damage:
        buffer[(flash.geometry.sector_size if second_copy else 0) + pos] = value
    flash.restore(bytes(buffer))
    loaded = control.load()
    assert loaded in (older, newer, None)
    if loaded is None:
        assert all(c is None for c in control.copies())
    damaged = {copy for copy, _pos, _value in damage}
    if len(damaged) < 2:  # at most one copy damaged: the other one still counts
        assert loaded is not None


def test_slot_state_rules() -> None:
    assert not SlotState().bootable
    assert SlotState(1, 1, unbootable=False).is_trial
    assert SlotState(1, 0, successful=True, unbootable=False).bootable
    assert not SlotState(1, 0, unbootable=False).bootable  # a trial out of tries
    with pytest.raises(ValueError):
        SlotState(16)
    with pytest.raises(MalformedError):
        SlotState.decode(bytes([1, 1, 4, 0]))
