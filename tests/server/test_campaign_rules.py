"""The campaign rules the server applies per device, as pure functions: selector,
compatibility, and which report moves a device's stage."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from otaguard.rollout.counters import FailureClass, Stage
from otaguard.server.services.campaign_select import EcuVersion, GroupInfo, Selector
from otaguard.server.services.campaign_select import incompatible_ecus as refused
from otaguard.server.services.campaign_telemetry import RETRY, moves, target_of

HW = "acme-ecu-v2"
EU = GroupInfo(HW, "eu", {"model": "x1", "trim": "s"})


def test_selector_needs_every_condition_given() -> None:
    assert Selector(hardware_id=HW).matches("VIN1", EU)
    assert Selector(hardware_id=HW, region="eu", tags={"model": "x1"}).matches("VIN1", EU)
    assert not Selector(hardware_id=HW, region="us").matches("VIN1", EU)
    assert not Selector(tags={"model": "x2"}).matches("VIN1", EU)
    assert not Selector(tags={"color": "red"}).matches("VIN1", EU)  # a tag it lacks
    assert Selector(devices=("VIN1",)).matches("VIN1", EU)
    assert not Selector(devices=("VIN1",)).matches("VIN2", EU)
    assert not Selector(hardware_id=HW).matches("VIN1", None)  # unknown group: no
    assert Selector.from_dict(Selector(HW, "eu", {"a": "b"}, ("V",)).to_dict()) == Selector(
        HW, "eu", {"a": "b"}, ("V",)
    )


def test_only_declared_versions_are_compatible() -> None:
    main = EcuVersion("main", HW, "1.0.0")
    assert refused({HW: ["1.0.0"]}, [main], [HW]) == []
    assert refused({"main": ["1.0.0"]}, [main], [HW]) == []  # by serial
    assert refused({HW: ["1.1.0"]}, [main], [HW]) == ["main=1.0.0"]
    assert refused({HW: ["1.0.0"]}, [EcuVersion("main", HW, None)], [HW]) == ["main=?"]
    # an updated ECU for which nothing is declared is refused (unknown is not compatible)
    assert refused({"other": ["1"]}, [main], [HW]) == [
        "main=1.0.0 (no compatible version declared)"
    ]
    # an ECU the release does not update must also run a declared version when named
    brake = EcuVersion("brake", "brake-v1", "3.0")
    assert refused({HW: ["1.0.0"], "brake-v1": ["3.1"]}, [main, brake], [HW]) == ["brake=3.0"]
    assert refused({HW: ["1.0.0"]}, [main, brake], [HW]) == []  # not named: not checked


def test_reports_map_to_stages_per_the_contract() -> None:
    def ev(kind: str, failure: str | None = None) -> dict[str, object]:
        return {"kind": kind, "failure": failure}

    assert target_of(ev("download-started"), False) == (Stage.DOWNLOADING, None)
    assert target_of(ev("downloaded"), False) is None
    assert target_of(ev("boot-trial"), False) == (Stage.INSTALLED, None)
    assert target_of(ev("confirmed"), False) == (Stage.CONFIRMED, None)
    assert target_of(ev("reverted"), False) == (Stage.FAILED, FailureClass.BOOT)
    assert target_of(ev("reverted"), True) == (Stage.REVERTED, None)
    assert target_of(ev("download-failed", "transient"), False) == RETRY
    assert target_of(ev("install-failed", "transient"), False) == RETRY
    assert target_of(ev("install-failed", "deterministic"), False) == (
        Stage.FAILED,
        FailureClass.INSTALL,
    )
    assert target_of(ev("refused"), False) == (Stage.FAILED, FailureClass.VERIFICATION)
    assert target_of(ev("abandoned"), False) == (Stage.ABANDONED, None)
    assert target_of(ev("incompatible"), False) == (Stage.FAILED, FailureClass.INCOMPATIBLE)


FINAL = (Stage.CONFIRMED, Stage.FAILED, Stage.ABANDONED, Stage.REVERTED)


@given(st.sampled_from(list(Stage)), st.sampled_from(list(Stage)))
def test_stages_never_go_back_and_final_ones_never_move(current: Stage, target: Stage) -> None:
    moved = moves(current, target)
    if current in FINAL or current is target:
        assert not moved
    order = [Stage.OFFERED, Stage.DOWNLOADING, Stage.INSTALLED]
    if current in order and target in order:
        assert moved == (order.index(target) > order.index(current))
    if current is Stage.SILENT:  # a late report moves a silent device out, never to offered
        assert moved == (target not in (Stage.OFFERED, Stage.SILENT))
