"""``otaguard fleet campaign``: the whole operator path over real HTTP, and its exit codes."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from helpers import CliResult
from server.helpers_campaigns import POLICY, V2, Fleet, make_fleet
from server.helpers_devices import HW
from server.helpers_server import LiveServer

Cli = Callable[..., CliResult]


@pytest.fixture
def fleet(live: LiveServer, db_url: str, tmp_path: Path) -> Iterator[Fleet]:
    made = make_fleet(live.url, live.admin_token, db_url, live.config.online_keys_dir, tmp_path, 4)
    yield made
    made.db.dispose()
    made.admin.close()


def _as(live: LiveServer, tmp_path: Path, role: str, name: str) -> tuple[str, ...]:
    token_file = tmp_path / f"{name}.token"
    made = live.admin().post("/api/v1/tokens", json={"role": role, "name": name}).json()
    token_file.write_text(made["token"])
    return ("fleet", "--server", live.url, "--token-file", str(token_file), "campaign")


def test_campaign_path_and_exit_codes(
    live: LiveServer, fleet: Fleet, cli: Cli, tmp_path: Path
) -> None:
    rm = _as(live, tmp_path, "release-manager", "rita")
    ops = _as(live, tmp_path, "operator", "otto")
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY)
    made = cli(*rm, "create", V2, "--name", "v2", "--hardware-id", HW, "--tag", "m=x",
               "--compatible", f"{HW}=1.0.0", "--policy", policy, "--json")  # fmt: skip
    assert made.code == 0, made.err
    campaign = json.loads(made.out)
    assert (campaign["status"], campaign["population"]) == ("draft", 4)
    assert campaign["selector"]["tags"] == {"m": "x"}
    # 2 devices in wave 0 cannot show a failure rate below 0.5 (5 are needed): said at once
    (warning,) = campaign["warnings"]
    assert "wave 0 holds 2 devices" in warning and "at least 5 devices" in warning
    cid = campaign["id"]
    # a release manager may not approve (refused, exit 1), an operator may
    refused = cli(*rm, "approve", cid)
    assert refused.code == 1 and "forbidden" in refused.err
    assert cli(*ops, "approve", cid).code == 0
    started = cli(*ops, "start", cid, "--json")
    assert started.code == 0 and json.loads(started.out)["status"] == "running"
    assert cli(*ops, "pause", cid).code == 0
    assert cli(*ops, "resume", cid).code == 0
    halted = cli(*ops, "halt", cid, "--reason", "field reports", "--json")
    assert halted.code == 0, halted.err
    assert "field reports" in json.loads(halted.out)["end_reason"]
    conflict = cli(*ops, "resume", cid)  # a halt is final: a state conflict, exit 2
    assert conflict.code == 2 and "campaign-state" in conflict.err
    assert "Traceback" not in conflict.err
    shown = cli(*ops, "status", cid)
    assert shown.code == 0 and "halted" in shown.out
    assert "warning: wave 0 holds 2 devices" in shown.out
    listed = cli(*ops, "list", "--json")
    assert [c["id"] for c in json.loads(listed.out)] == [cid]


def test_create_refuses_bad_input_with_one_line(
    live: LiveServer, fleet: Fleet, cli: Cli, tmp_path: Path
) -> None:
    rm = _as(live, tmp_path, "release-manager", "rita")
    bad = tmp_path / "bad.toml"
    bad.write_text("[halt]\nfailure_threshold = 7\n")
    cases = [
        (("--compatible", f"{HW}=1.0.0", "--policy", bad), 2, "failure_threshold"),
        (("--compatible", "no-equals-sign"), 2, "ECU=VERSION"),
        (("--compatible", f"{HW}=1.0.0", "--policy", tmp_path / "missing.toml"), 2, "missing"),
        (("--compatible", f"{HW}=1.0.0", "--region", "mars"), 1, "matches no enrolled device"),
    ]
    for extra, code, said in cases:
        result = cli(*rm, "create", V2, "--name", "v2", "--hardware-id", HW, *extra)
        assert result.code == code, (extra, result.err)
        assert said in result.err and "Traceback" not in result.err
        assert len(result.err.strip().splitlines()) == 1, result.err
