"""``otaguard fleet``: the operator's whole path over real HTTP, and its exit codes."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from helpers import CliResult
from server.helpers_devices import HW, Device, DeviceCa
from server.helpers_release import OfflineRepo
from server.helpers_server import LiveServer, loopback_socket

Cli = Callable[..., CliResult]


def _fleet(live: LiveServer, token_file: Path | str) -> tuple[str, ...]:
    return ("fleet", "--server", live.url, "--token-file", str(token_file))


def test_operator_path(live: LiveServer, cli: Cli, tmp_path: Path) -> None:
    admin = _fleet(live, live.config.admin_token_file)
    made = cli(*admin, "token", "create", "--role", "operator", "--name", "ops", "--json")
    assert made.code == 0, made.err
    ops_file = tmp_path / "ops.token"
    ops_file.write_text(json.loads(made.out)["token"])
    ops = _fleet(live, ops_file)
    ca = DeviceCa.make()
    (tmp_path / "ca.pem").write_text(ca.ca_pem)
    enrolled = cli(
        *ops,
        "enroll",
        "--ca",
        tmp_path / "ca.pem",
        "--hardware-id",
        HW,
        "--region",
        "eu",
        "--tag",
        "model=x1",
    )
    assert enrolled.code == 0, enrolled.err
    assert f"{HW}-eu" in enrolled.out
    repo = OfflineRepo.init(tmp_path, live.config.online_keys_dir)
    repo.add("acme-ecu-v2/1.0.0.img", b"one " * 1000)
    repo.sign()
    # an operator may not publish releases: refused, exit 1
    refused = cli(*ops, "release", "publish", "--repo", repo.dir)
    assert refused.code == 1, refused.err
    published = cli(*admin, "release", "publish", "--repo", repo.dir, "--json")
    assert published.code == 0, published.err
    assert json.loads(published.out)["targets"] == ["acme-ecu-v2/1.0.0.img"]
    again = cli(*admin, "release", "publish", "--repo", repo.dir, "--json")
    assert again.code == 0 and json.loads(again.out)["images_uploaded"] == 0
    device = Device(live.url, ca.issue("VIN0001"))
    assert device.enroll().status_code == 201
    deployed = cli(*ops, "deploy", "acme-ecu-v2/1.0.0.img", "--group", f"{HW}-eu", "--json")
    assert deployed.code == 0, deployed.err
    assert json.loads(deployed.out)["assignments"][0]["device_id"] == "VIN0001"
    listed = cli(*ops, "devices")
    assert listed.code == 0 and "VIN0001" in listed.out
    shown = cli(*ops, "device", "VIN0001", "--json")
    assert json.loads(shown.out)["ecus"][0]["assigned"] == "acme-ecu-v2/1.0.0.img"
    assert cli(*ops, "device", "VIN0001").code == 0
    revoked = cli(*ops, "device", "revoke", "VIN0001", "--json")
    assert revoked.code == 0 and json.loads(revoked.out)["revoked_at"]
    assert device.post_state().status_code == 403


def test_exit_codes(live: LiveServer, cli: Cli, tmp_path: Path) -> None:
    bad = tmp_path / "bad.token"
    bad.write_text("not-a-token")
    assert cli(*_fleet(live, bad), "devices").code == 1  # 401
    auditor = tmp_path / "auditor.token"
    auditor.write_text(live.token("auditor"))
    assert (
        cli(*_fleet(live, auditor), "token", "create", "--role", "admin", "--name", "x").code == 1
    )
    assert cli(*_fleet(live, auditor), "devices", "--json").code == 0
    assert cli(*_fleet(live, tmp_path / "missing.token"), "devices").code == 2
    assert cli(*_fleet(live, auditor), "deploy", "x").code == 2  # neither --device nor --group
    sock = loopback_socket()  # bound, never listening: connection refused
    port = sock.getsockname()[1]
    down = ("fleet", "--server", f"http://127.0.0.1:{port}", "--token-file", str(auditor))
    result = cli(*down, "devices")
    sock.close()
    assert result.code == 2
    assert "cannot reach the server" in result.err


@pytest.mark.parametrize(
    "args", [("devices",), ("device", "VIN"), ("release", "publish", "--repo", ".")]
)
def test_every_subcommand_has_json(live: LiveServer, cli: Cli, args: tuple[str, ...]) -> None:
    assert "--json" in cli(*_fleet(live, live.config.admin_token_file), *args, "--help").out
