"""Flash rules, deterministic fault injection, torn operations, OTP counters."""

from __future__ import annotations

import mmap
from pathlib import Path

import pytest

from otaguard.device.faults import FaultPlan, OpClock, PowerLoss, TearFill
from otaguard.device.flash import Flash, FlashReader, FlashUsageError
from otaguard.device.fuses import MonotonicCounters, Otp, ThermometerCounters
from otaguard.device.geometry import PRESETS, Geometry, Layout, preset
from otaguard.errors import UsageError


def _flash(geometry: Geometry, plan: FaultPlan | None = None) -> Flash:
    return Flash.blank(geometry, 4 * geometry.sector_size, OpClock(plan or FaultPlan()))


@pytest.mark.parametrize("erased", [0xFF, 0x00])
def test_program_only_erased_aligned_cells(erased: int) -> None:
    g = Geometry("t", 1024, 8, erased=erased, program_size=256, slot_size=1024)
    flash = _flash(g)
    assert flash.read(0, 16) == bytes([erased]) * 16
    flash.program(8, b"A" * 8)
    assert flash.read(8, 8) == b"A" * 8
    with pytest.raises(FlashUsageError, match="not erased"):
        flash.program(8, b"B" * 8)
    with pytest.raises(FlashUsageError, match="aligned"):
        flash.program(4, b"B" * 8)
    with pytest.raises(FlashUsageError, match="aligned"):
        flash.program(16, b"B" * 5)
    with pytest.raises(FlashUsageError, match="limit"):
        flash.program(0, b"B" * 512)
    with pytest.raises(FlashUsageError, match="straddles"):
        flash.program(1024 - 8, b"B" * 16)
    with pytest.raises(FlashUsageError, match="outside"):
        flash.program(4096, b"B" * 8)
    flash.erase_sector(0)
    flash.program(8, b"B" * 8)
    assert flash.clock.count == 3  # two programs and one erase; reads and refusals are free


def test_power_cut_before_op_n_and_counting() -> None:
    g = PRESETS["tiny-512"]
    for n in range(4):
        flash = _flash(g, FaultPlan(cut_before=n))
        done = 0
        with pytest.raises(PowerLoss) as cut:
            for sector in range(4):
                flash.erase_sector(sector)
                done += 1
        assert cut.value.op == n and not cut.value.torn and done == n


@pytest.mark.parametrize("fill", list(TearFill))
def test_torn_program_and_erase(fill: TearFill) -> None:
    g = Geometry("t", 1024, 1, program_size=1024, slot_size=1024)
    flash = _flash(g, FaultPlan(tear_at=0, fill=fill, seed=3))
    with pytest.raises(PowerLoss) as torn:
        flash.program(0, b"\x11" * 1024)
    assert torn.value.torn and torn.value.op == 0
    data = flash.read(0, 1024)
    prefix = len(data) - len(data.lstrip(b"\x11"))
    assert prefix < 1024
    if fill is TearFill.OLD:
        assert data[prefix:] == b"\xff" * (1024 - prefix)
    # An erase torn half-way: a prefix erased, the rest old or noise.
    flash = _flash(g)
    flash.program(0, b"\x22" * 1024)
    flash.clock = OpClock(FaultPlan(tear_at=0, fill=fill, seed=5))
    with pytest.raises(PowerLoss):
        flash.erase_sector(0)
    data = flash.read(0, 1024)
    erased = len(data) - len(data.lstrip(b"\xff"))
    assert erased < 1024
    if fill is TearFill.OLD:
        assert data[erased:] == b"\x22" * (1024 - erased)


def test_tears_are_deterministic() -> None:
    g = PRESETS["nor-4k"]
    out = []
    for _ in range(2):
        flash = _flash(g, FaultPlan(tear_at=1, seed=9))
        flash.erase_sector(0)
        with pytest.raises(PowerLoss):
            flash.program(0, b"\x00" * 256)
        out.append(flash.snapshot())
    assert out[0] == out[1]


def test_mmap_backed_flash_is_the_file(tmp_path: Path) -> None:
    g = PRESETS["nor-4k"]
    file = tmp_path / "flash.bin"
    file.write_bytes(b"\xff" * g.sector_size * 2)
    with file.open("r+b") as handle, mmap.mmap(handle.fileno(), 0) as buffer:
        Flash(g, buffer, OpClock()).program(0, b"hello!")
    assert file.read_bytes()[:6] == b"hello!"


def test_flash_reader_is_a_bounded_file() -> None:
    flash = _flash(PRESETS["nor-4k"])
    flash.program(0, bytes(range(64)))
    reader = FlashReader(flash, 16, 32)
    assert reader.read(4) == bytes(range(16, 20))
    reader.seek(-2, 2)
    assert reader.read(10) == bytes([46, 47])
    assert reader.read(1) == b""


def test_geometry_validation_and_presets() -> None:
    assert len(PRESETS) >= 8
    with pytest.raises(UsageError):
        Geometry("x", 4096, 4)
    with pytest.raises(UsageError):
        Geometry("x", 4096, 8, erased=0x55)
    with pytest.raises(UsageError):
        Geometry("x", 4096, 8, slot_size=5000)
    with pytest.raises(UsageError, match="unknown geometry"):
        preset("nope")
    layout = Layout(PRESETS["nor-4k"].with_slot_size(8192), ("main", "radio"))
    regions = [layout.slot(s, c) for s in "ab" for c in ("main", "radio")]
    assert regions[0].offset == 2 * 4096 and layout.size == regions[-1].end


def test_thermometer_fuses_only_go_up_within_budget() -> None:
    fuses = ThermometerCounters.fresh(("main",), 8)
    fuses.advance_to("main", 3)
    fuses.advance_to("main", 1)  # never down
    assert fuses.value("main") == 3 and fuses.capacity("main") == 8
    with pytest.raises(ValueError, match="cannot reach"):
        fuses.advance_to("main", 9)
    fuses.clock = OpClock(FaultPlan(cut_before=2))
    with pytest.raises(PowerLoss):
        fuses.advance_to("main", 8)
    assert fuses.value("main") == 5  # one burn per operation: two landed
    again = ThermometerCounters.from_json(fuses.to_json())
    assert again.value("main") == 5


def test_torn_fuse_burn_lands_or_not_but_never_lowers() -> None:
    seen = set()
    for seed in range(20):
        fuses = ThermometerCounters.fresh(("main",), 8)
        fuses.clock = OpClock(FaultPlan(tear_at=0, seed=seed))
        with pytest.raises(PowerLoss):
            fuses.advance_to("main", 3)
        seen.add(fuses.value("main"))
    assert seen == {0, 1}


def test_rpmb_counter_backend() -> None:
    rpmb = MonotonicCounters.fresh(("main",))
    rpmb.advance_to("main", 70)
    assert rpmb.clock.count == 1 and rpmb.value("main") == 70
    rpmb.advance_to("main", 5)
    assert rpmb.value("main") == 70
    otp = Otp((b"\x01" * 32,), rpmb)
    assert Otp.from_json(otp.to_json()).counters.value("main") == 70


def test_otp_anchor_rules() -> None:
    counters = ThermometerCounters.fresh(("main",), 4)
    with pytest.raises(UsageError):
        Otp((), counters)
    with pytest.raises(UsageError):
        Otp((b"short",), counters)
    with pytest.raises(UsageError):
        Otp.from_json({"anchors": ["zz"], "counters": counters.to_json()})
