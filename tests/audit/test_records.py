"""Records built from entries: the software id, a vehicle's history, an update's story;
and a local log carried into another (each entry provably the ceremony's)."""

from __future__ import annotations

import csv
import datetime as dt
import io
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers_audit import ORIGIN, T0, audit_signer
from otaguard.audit import Actor, AuditEvent, encode_entry, parse_entry, sign_checkpoint
from otaguard.audit.checkpoint import Checkpoint
from otaguard.audit.merkle import CompactRange, leaf_hash
from otaguard.audit.note import b64encode
from otaguard.audit.records import (
    Proven,
    campaign_line,
    release_story,
    software_id,
    vehicle_csv,
    vehicle_history,
)
from otaguard.audit.submission import (
    carried_details,
    check_extends,
    verify_carried,
    verify_submission,
)
from otaguard.errors import (
    AuditConsistencyError,
    AuditEntryError,
    AuditError,
    AuditSignatureError,
    AuditTreeError,
)

OPS = Actor("operator", "ops", "operator")
CAR = Actor("device", "VIN1")
V1, V2 = "acme/1.0.0.img", "acme/2.0.0.img"


def ecu(serial: str, target: str | None, sha: str | None, counter: int = 0) -> dict[str, Any]:
    return {
        "serial": serial,
        "hardware_id": "acme",
        "target": target,
        "version": None,
        "security_counter": counter,
        "sha256": sha,
        "slot": "a",
        "boot": "confirmed",
    }


def test_software_id_names_a_configuration() -> None:
    a = [ecu("main", V1, "aa" * 32), ecu("gw", V1, "bb" * 32)]
    assert software_id(a) == software_id(list(reversed(a)))  # the order ECUs come in: no matter
    assert software_id(a) != software_id([ecu("main", V1, "cc" * 32), ecu("gw", V1, "bb" * 32)])
    assert software_id(a) != software_id(a[:1])
    moved = [{**a[0], "slot": "b", "boot": "trial"}, a[1]]  # the same images: the same id
    assert software_id(moved) == software_id(a)
    assert software_id(a).startswith("swid1-")


def _proven(items: list[tuple[Actor, str, str, dict[str, Any]]]) -> list[Proven]:
    out = []
    for index, (actor, action, subject, details) in enumerate(items):
        event = AuditEvent(T0 + dt.timedelta(seconds=index), actor, action, subject, details)
        raw = encode_entry(index, event)
        out.append(Proven(parse_entry(raw), raw, ("cGF0aA==",)))
    return out


def _state(*ecus: dict[str, Any]) -> dict[str, Any]:
    return {"ecus": list(ecus), "software_id": software_id(ecus)}


def test_a_vehicle_history_links_each_change_to_the_decision_behind_it() -> None:
    items = _proven(
        [
            (CAR, "device.enroll", "VIN1", {"group": "eu"}),
            (CAR, "device.state", "VIN1", _state(ecu("main", V1, "aa" * 32, 1))),
            (
                OPS,
                "device.assign",
                "VIN1",
                {"deployment": 7, "target": V2, "ecus": ["main"], "approvals": ["alice", "bob"]},
            ),
            (CAR, "device.install", "VIN1", {"target": V2, "result": "ok", "ecu": "main"}),
            (CAR, "device.state", "VIN1", _state(ecu("main", V2, "bb" * 32, 2))),
            (CAR, "device.state", "VIN1", _state(ecu("main", V2, "bb" * 32, 2))),
        ]
    )
    history = vehicle_history("VIN1", items)
    assert history["software_id"] == software_id([ecu("main", V2, "bb" * 32, 2)])
    first, second, third = history["software"]
    assert first["changes"][0]["deployment"] is None  # the factory's: no decision recorded
    change = second["changes"][0]
    assert (change["target"], change["security_counter"]) == (V2, 2)
    assert change["previous"]["target"] == V1
    assert (change["deployment"], change["decided_by"]) == (7, "operator:ops (operator)")
    assert change["approvals"] == ["alice", "bob"]
    assert third["changes"] == []  # reported again, nothing changed
    assert [e["action"] for e in history["events"]] == [
        "device.enroll",
        "device.assign",
        "device.install",
    ]
    rows = list(csv.reader(io.StringIO(vehicle_csv(history, _cp()).split("\n", 1)[1])))
    header, *body = rows
    assert header[0] == "index" and "inclusion_path" in header
    assert [r[0] for r in body] == ["0", "1", "2", "3", "4"]
    assert body[4][header.index("decided_by")] == "operator:ops (operator)"
    with pytest.raises(ValueError, match="about"):
        vehicle_history("VIN2", items)


def _cp() -> dict[str, Any]:
    return {"tree_size": 6, "root_hash": "x", "origin": ORIGIN}


def test_a_release_story_counts_outcomes_and_finds_its_ceremony() -> None:
    signed = AuditEvent(T0, Actor("user", "alice"), "image.sign", "fw.img", {"sha256": "aa" * 32})
    carried = encode_entry(0, signed).decode()
    items = _proven(
        [
            (
                OPS,
                "release.upload",
                V2,
                {
                    "target": V2,
                    "sha256": "aa" * 32,
                    "hardware_ids": ["acme"],
                    "compatible_with": ["1.0"],
                    "signed_by": {"keys": ["k1"], "threshold": 1},
                },
            ),
            (
                OPS,
                "release.refuse",
                "repository",
                {"check": "unsigned", "targets": {"items": [V2]}},
            ),
            (
                OPS,
                "release.refuse",
                "repository",
                {"check": "unsigned", "targets": {"items": [V1]}},
            ),
            (OPS, "audit.submit", "fw.img", {"entry": carried}),
            (OPS, "deployment.create", V2, {"target": V2, "deployment": 7}),
            (OPS, "device.assign", "VIN1", {"target": V2}),
            (OPS, "device.assign", "VIN2", {"target": V2}),
            (CAR, "device.install", "VIN1", {"target": V2, "result": "ok"}),
            (CAR, "device.boot", "VIN1", {"target": V2, "result": "ok"}),
            (CAR, "device.boot", "VIN1", {"target": V2, "result": "ok"}),  # booted again
            (CAR, "device.install", "VIN2", {"target": V2, "result": "failed"}),
            (CAR, "device.revert", "VIN2", {"target": V2, "result": "ok"}),
            (CAR, "device.install", "VIN3", {"target": V1, "result": "ok"}),
            (
                Actor("system", "evaluator"),
                "killswitch.decision",
                "c1",
                {"target": V2, "halt": True, "reason": "wave 0: failure rate above 0.15"},
            ),
            (OPS, "campaign.halt", "c1", {"target": V2}),
            (OPS, "campaign.create", "c2", {"target": V2, "compatible": {"acme": ["1.0"]}}),
        ]
    )
    story = release_story(V2, items)
    assert [u["index"] for u in story["uploads"]] == [0]
    assert story["compatibility"] == {"hardware_ids": ["acme"], "compatible_with": ["1.0"]}
    assert [r["index"] for r in story["refusals"]] == [1]
    assert story["offline_signatures"][0]["ceremony_action"] == "image.sign"
    assert story["devices_assigned"] == 2
    assert story["outcomes"] == {
        "install": {"ok": 1, "failed": 1},
        "boot": {"ok": 2},
        "revert": {"ok": 1},
    }
    assert story["outcome_devices"] == {  # each device once: VIN1 booted twice
        "install": {"ok": 1, "failed": 1},
        "boot": {"ok": 1},
        "revert": {"ok": 1},
    }
    assert [h["action"] for h in story["halts"]] == ["campaign.halt"]
    assert len(story["campaign"]) == 3
    decision, halt, created = (campaign_line(c) for c in story["campaign"])
    assert decision.startswith("killswitch.decision (entry 13, ")
    assert decision.endswith("by system:evaluator: wave 0: failure rate above 0.15")
    assert halt.endswith(") by operator:ops (operator)")  # no reason given: none shown
    assert "compatible {'acme': ['1.0']}, waves None" in created


# -- a local log carried into another ---------------------------------------------------


def _local(n: int, signer_index: int = 0) -> tuple[bytes, list[bytes]]:
    raw = [
        encode_entry(i, AuditEvent(T0, Actor("user", "alice"), "image.sign", f"fw-{i}.img", {}))
        for i in range(n)
    ]
    tree, _ = CompactRange.empty().append(leaf_hash(r) for r in raw)
    note = sign_checkpoint(Checkpoint(ORIGIN, n, tree.root()), audit_signer(signer_index))
    return note, raw


def test_a_submission_carries_each_entry_with_its_proof() -> None:
    note, raw = _local(5)
    key = audit_signer().public_key
    checked = verify_submission(note, key, raw)
    for item in checked.entries:
        details = carried_details(checked, item)
        assert verify_carried(details, [key]).index == item.entry.index
        forged = {**details, "entry": details["entry"].replace("alice", "mallory")}
        with pytest.raises(AuditError):
            verify_carried(forged, [key])
        with pytest.raises(AuditSignatureError):
            verify_carried(details, [audit_signer(1).public_key])


def test_a_submission_that_is_not_its_checkpoints_log_is_refused() -> None:
    note, raw = _local(4)
    key = audit_signer().public_key
    with pytest.raises(AuditTreeError, match="3 entries submitted"):
        verify_submission(note, key, raw[:3])
    with pytest.raises(AuditTreeError, match="signed root"):
        verify_submission(note, key, [*raw[:3], raw[3].replace(b"fw-3", b"fw-9")])
    with pytest.raises(AuditEntryError, match="position 3"):
        verify_submission(note, key, [*raw[:3], raw[2]])
    with pytest.raises(AuditSignatureError):
        verify_submission(note, audit_signer(1).public_key, raw)


def test_a_resubmitted_log_must_extend_what_was_submitted() -> None:
    note, raw = _local(3)
    key = audit_signer().public_key
    before = verify_submission(note, key, raw)
    grown_note, grown = _local(6)
    check_extends(verify_submission(grown_note, key, grown), 3, before.checkpoint.root)
    forked_raw = [raw[0].replace(b"fw-0", b"fw-X"), *grown[1:]]
    tree, _ = CompactRange.empty().append(leaf_hash(r) for r in forked_raw)
    forked = sign_checkpoint(Checkpoint(ORIGIN, 6, tree.root()), audit_signer())
    with pytest.raises(AuditConsistencyError, match="fork"):
        check_extends(verify_submission(forked, key, forked_raw), 3, before.checkpoint.root)
    with pytest.raises(AuditConsistencyError, match="deleted"):
        check_extends(before, 4, before.checkpoint.root)


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["checkpoint", "entry", "index", "inclusion_path", "origin"]),
        st.one_of(
            st.text(max_size=80),
            st.integers(),
            st.lists(st.text(max_size=60), max_size=4),
            st.none(),
        ),
    )
)
def test_carried_details_from_anywhere_are_refused_cleanly(details: dict[str, Any]) -> None:
    with pytest.raises(AuditError):
        verify_carried(details, [audit_signer().public_key])


def test_carried_details_survive_a_round_trip_through_an_entry() -> None:
    note, raw = _local(2)
    checked = verify_submission(note, audit_signer().public_key, raw)
    details = carried_details(checked, checked.entries[1])
    outer = encode_entry(9, AuditEvent(T0, OPS, "audit.submit", "fw-1.img", details))
    assert verify_carried(parse_entry(outer).event.details, [audit_signer().public_key])
    assert details["inclusion_path"] == [b64encode(h) for h in checked.entries[1].path]
