"""``otaguard fleet audit``: the export verified offline and through Debian's nginx, proofs
checked on the auditor's side, a vehicle's and a release's records (every record proven),
a ceremony's local log submitted; a server that edits its database is caught."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from audit.conftest import nginx  # noqa: F401  (the fixture: Debian's nginx on a directory)
from helpers import CliResult
from helpers_audit import sigstore_inclusion
from otaguard.audit.checkpoint import Checkpoint, sign_checkpoint
from otaguard.audit.note import b64decode_strict
from otaguard.crypto.keys import KeyType, generate_private_key, load_private_key, public_key_pem
from otaguard.crypto.signer import KeySigner
from otaguard.server.client import FleetClient
from otaguard.server.models import AuditEntryRow
from server.helpers_audit_log import entries, of
from server.helpers_devices import HW, Device, DeviceCa, ecu_state
from server.helpers_release import OfflineRepo
from server.helpers_server import LiveServer

Cli = Callable[..., CliResult]
V1, V2 = "acme-ecu-v2/1.0.0.img", "acme-ecu-v2/2.0.0.img"


def _event(kind: str, target: str) -> dict[str, object]:
    return {
        "id": str(uuid.uuid4()),
        "time": dt.datetime.now(dt.UTC).isoformat(),
        "kind": kind,
        "ecu": "main",
        "target": target,
        "result": "ok",
    }


@pytest.fixture
def story(live: LiveServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    """A release in two versions, a vehicle updated from one to the other."""
    fleet = FleetClient(live.url, live.admin_token)
    repo = OfflineRepo.init(tmp_path, live.config.online_keys_dir)
    repo.add(V1, b"one " * 1000)
    repo.sign()
    repo.upload(fleet)
    ca = DeviceCa.make()
    fleet.create_group(name="eu", ca_pem=ca.ca_pem, hardware_id=HW, region="eu", tags={})
    car = Device(live.url, ca.issue("VIN0001"))
    assert car.enroll().status_code == 201
    v1 = ecu_state(target=V1, version="1.0.0", security_counter=1, sha256="11" * 32)
    assert car.post_state([v1]).status_code == 200
    repo.add(V2, b"two " * 1000, version="2.0.0", counter=2, replaces=["1.0.0"])
    repo.sign("targets0")
    repo.upload(fleet)
    deployment = fleet.deploy(V2, devices=[car.id])["id"]
    events = [_event("installed", V2), _event("confirmed", V2)]
    assert car.request("POST", "/api/v1/device/events", {"events": events}).status_code == 200
    v2 = ecu_state(target=V2, version="2.0.0", security_counter=2, sha256="22" * 32)
    assert car.post_state([v2]).status_code == 200
    fleet.close()
    token = tmp_path / "auditor.token"
    token.write_text(live.token("auditor", "aud"))
    capsys.readouterr()  # what the offline repository commands printed
    return {"deployment": deployment, "token": token, "key": live.config.audit_public_file}


def _fleet(live: LiveServer, token: Path) -> tuple[str, ...]:
    return ("fleet", "--server", live.url, "--token-file", str(token))


def _ok(result: CliResult) -> CliResult:
    assert result.code == 0, result.err
    return result


def test_vehicle_history_json_and_csv(live: LiveServer, cli: Cli, story: dict[str, Any]) -> None:
    base = (*_fleet(live, story["token"]), "audit", "vehicle", "VIN0001")
    key = ("--trusted-key", str(story["key"]))
    history = json.loads(_ok(cli(*base, *key, "--format", "json")).out)
    assert history["vehicle"] == "VIN0001"
    before, after = history["software"]
    (update,) = after["changes"]
    assert (update["target"], update["version"], update["security_counter"]) == (V2, "2.0.0", 2)
    assert update["previous"]["target"] == V1
    assert update["deployment"] == story["deployment"]
    assert update["decided_by"] == "operator:admin (admin)"
    assert history["software_id"] == after["software_id"] != before["software_id"]
    assert after["software_id"] == after["software_id_recorded"]
    root = b64decode_strict(history["checkpoint"]["root_hash"])
    size = history["checkpoint"]["tree_size"]
    for record in [*history["software"], *history["events"]]:
        path = [b64decode_strict(h) for h in record["inclusion_path"]]
        sigstore_inclusion(record["entry"].encode(), record["index"], size, path, root)
    assert {e["action"] for e in history["events"]} == {
        "device.enroll",
        "device.assign",
        "device.install",
        "device.boot",
    }
    text = _ok(cli(*base, *key, "--format", "csv")).out
    comment, body = text.split("\n", 1)
    assert f"checkpoint of {size} entries" in comment
    rows = list(csv.DictReader(io.StringIO(body)))
    changes = [r for r in rows if r["action"] == "device.state"]
    assert [r["target"] for r in changes] == [V1, V2]
    assert changes[1]["deployment"] == str(story["deployment"])
    assert all(r["inclusion_path"] for r in rows)
    assert _ok(cli(*base, *key)).out.count("VIN0001") >= 1  # the table


def test_a_server_that_edits_a_vehicles_record_is_caught(
    live: LiveServer, cli: Cli, story: dict[str, Any]
) -> None:
    found = of(entries(live), "device.state")[-1]
    with live.app_state.server.db.writing() as session:
        row = session.get(AuditEntryRow, found.index)
        row.data = row.data.replace(b'"2.0.0"', b'"9.9.9"')
    result = cli(
        *_fleet(live, story["token"]),
        "audit",
        "vehicle",
        "VIN0001",
        "--trusted-key",
        str(story["key"]),
        "--format",
        "json",
    )
    assert result.code == 1
    assert f"entry {found.index}" in result.err


def test_release_record(live: LiveServer, cli: Cli, story: dict[str, Any]) -> None:
    result = _ok(
        cli(
            *_fleet(live, story["token"]),
            "audit",
            "release",
            V2,
            "--trusted-key",
            str(story["key"]),
            "--json",
        )
    )
    record = json.loads(result.out)
    (upload,) = record["uploads"]
    assert upload["details"]["version"] == "2.0.0"
    assert record["compatibility"] == {"hardware_ids": [HW], "compatible_with": ["1.0.0"]}
    assert record["signed_by"][0]["threshold"] == 1
    assert [d["details"]["deployment"] for d in record["deployments"]] == [story["deployment"]]
    assert record["devices_assigned"] == 1
    assert record["outcomes"] == {"install": {"ok": 1}, "boot": {"ok": 1}}
    assert record["outcome_devices"] == {"install": {"ok": 1}, "boot": {"ok": 1}}
    text = _ok(
        cli(
            *_fleet(live, story["token"]),
            "audit",
            "release",
            V2,
            "--trusted-key",
            str(story["key"]),
        )
    ).out
    assert "deployment" in text and "outcomes (devices)" in text
    assert f"compatibility: hardware ids ['{HW}'], replaces 1.0.0" in text


def test_proofs_are_checked_against_the_audit_key(
    live: LiveServer, cli: Cli, story: dict[str, Any], tmp_path: Path
) -> None:
    base = (*_fleet(live, story["token"]), "audit", "prove", "--trusted-key", str(story["key"]))
    proof = json.loads(_ok(cli(*base, "--index", "3", "--json")).out)
    assert proof["verified"] and json.loads(proof["entry"])["index"] == 3
    assert _ok(cli(*base, "--old-size", "5")).out.startswith("verified")
    held = tmp_path / "held.checkpoint"
    held.write_text(live.client(live.admin_token).get("/api/v1/audit/checkpoint").text)
    assert _ok(cli(*base, "--checkpoint", held)).code == 0
    # a checkpoint of another history, signed with the server's own key: a fork
    signer = KeySigner(load_private_key((live.config.online_keys_dir / "audit.pem").read_bytes()))
    origin = proof["origin"]
    held.write_bytes(sign_checkpoint(Checkpoint(origin, 4, b"\x07" * 32), signer))
    forked = cli(*base, "--checkpoint", held)
    assert forked.code == 1 and "fork" in forked.err
    other = tmp_path / "other.pub"
    other.write_bytes(public_key_pem(generate_private_key(KeyType.ED25519).public_key()))
    wrong = cli(
        *_fleet(live, story["token"]), "audit", "prove", "--trusted-key", other, "--index", "1"
    )
    assert wrong.code == 1
    assert cli(*base, "--index", "1", "--old-size", "2").code == 2


def test_export_verifies_offline_and_through_nginx(
    live: LiveServer,
    cli: Cli,
    story: dict[str, Any],
    tmp_path: Path,
    nginx: tuple[Path, str],  # noqa: F811
) -> None:
    out = tmp_path / "export"
    made = json.loads(
        _ok(
            cli(
                *_fleet(live, story["token"]),
                "audit",
                "export",
                "--out",
                out,
                "--trusted-key",
                str(story["key"]),
                "--json",
            )
        ).out
    )
    assert made["checkpoint_verified"] and made["tree_size"] == len(entries(live))
    verify = ("audit", "verify", "--trusted-key", str(story["key"]))
    assert _ok(cli(*verify, "--log", out, "--json")).json["tree_size"] == made["tree_size"]
    root, url = nginx
    shutil.copytree(out, root, dirs_exist_ok=True)
    assert _ok(cli(*verify, "--log", url)).out.startswith("audit log")
    # and the server itself, read as a tlog-tiles URL
    api = f"{live.url}/api/v1/audit"
    assert _ok(cli(*verify, "--log", api, "--token-file", story["token"])).code == 0
    assert cli(*verify, "--log", api).code == 2  # no token: 401, an I/O error
    again = cli(*_fleet(live, story["token"]), "audit", "export", "--out", out)
    assert again.code == 2  # not an empty directory


def test_a_ceremonys_log_is_submitted(
    live: LiveServer, cli: Cli, story: dict[str, Any], tmp_path: Path
) -> None:
    log = tmp_path / "ceremony"
    _ok(
        cli(
            "key",
            "generate",
            "--algorithm",
            "ed25519",
            "--out",
            tmp_path / "c.pem",
            "--public-out",
            tmp_path / "c.pub",
        )
    )
    _ok(
        cli(
            "audit",
            "init",
            "--log",
            log,
            "--origin",
            "ceremony.test/q4",
            "--key",
            tmp_path / "c.pem",
        )
    )
    audit = (
        "--audit-log",
        str(log),
        "--audit-key",
        str(tmp_path / "c.pem"),
        "--audit-actor",
        "alice",
    )
    _ok(cli("key", "generate", "--algorithm", "ed25519", "--out", tmp_path / "r.pem", *audit))
    (tmp_path / "fw.bin").write_bytes(b"f" * 2000)
    sign = (
        "sign",
        "--key",
        tmp_path / "r.pem",
        "--version",
        "3.0.0",
        "--security-counter",
        "3",
        "--hardware-id",
        HW,
    )
    _ok(cli(*sign, tmp_path / "fw.bin", tmp_path / "fw.img", *audit))
    manager = tmp_path / "rm.token"
    manager.write_text(live.token("release-manager", "rm"))
    submit = (*_fleet(live, manager), "audit", "submit", "--log", log, "--key", tmp_path / "c.pub")
    done = json.loads(_ok(cli(*submit, "--json")).out)
    assert (done["origin"], done["recorded"], done["already"]) == ("ceremony.test/q4", 2, 0)
    assert json.loads(_ok(cli(*submit, "--json")).out)["recorded"] == 0
    _ok(cli(*sign, tmp_path / "fw.bin", tmp_path / "fw2.img", *audit))
    again = json.loads(_ok(cli(*submit, "--json")).out)
    assert (again["recorded"], again["already"]) == (1, 2)
    carried = of(entries(live), "audit.submit")
    assert [json.loads(e.event.details["entry"])["action"] for e in carried] == [
        "key.generate",
        "image.sign",
        "image.sign",
    ]
    assert carried[1].event.subject == str(tmp_path / "fw.img")
    assert carried[1].event.actor.id == "rm"
    auditor = (
        *_fleet(live, story["token"]),
        "audit",
        "submit",
        "--log",
        log,
        "--key",
        tmp_path / "c.pub",
    )
    assert cli(*auditor).code == 1  # auditors read; they do not submit (403)
    other = tmp_path / "o.pub"
    _ok(
        cli(
            "key",
            "generate",
            "--algorithm",
            "ed25519",
            "--out",
            tmp_path / "o.pem",
            "--public-out",
            other,
        )
    )
    assert cli(*_fleet(live, manager), "audit", "submit", "--log", log, "--key", other).code == 1


@pytest.mark.parametrize(
    "args", [("export", "--out", "x"), ("prove",), ("vehicle", "V"), ("release", "T"), ("submit",)]
)
def test_every_audit_subcommand_has_json(live: LiveServer, cli: Cli, args: tuple[str, ...]) -> None:
    help_text = cli(*_fleet(live, live.config.admin_token_file), "audit", *args, "--help").out
    assert "--json" in help_text
