"""``otaguard audit``: exit codes (0 ok, 1 refused with the entry named, 2 usage/I-O),
JSON output, a ceremony's local log, and an export served by nginx."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from helpers import CliResult
from helpers_audit import ORIGIN, audit_signer, entries, export
from otaguard.audit import VerifierKey, leaf_hash, verify_inclusion
from otaguard.audit.merkle import verify_consistency
from otaguard.audit.note import b64decode_strict
from otaguard.audit.tiles import CHECKPOINT, encode_bundle, entries_path, parse_bundle, tile_path
from otaguard.crypto.keys import public_key_pem

Cli = Callable[..., CliResult]
KEY = audit_signer()
RAW = entries(300)


@pytest.fixture
def pub(tmp_path: Path) -> Path:
    path = tmp_path / "audit.pub"
    path.write_bytes(public_key_pem(KEY.public_key))
    return path


def _edit(directory: Path, index: int) -> None:
    path = directory / entries_path(index // 256, 256 if index < 256 else 44)
    bundle = parse_bundle(path.read_bytes())
    bundle[index % 256] = bundle[index % 256].replace(b"gateway", b"gatewaz")
    path.write_bytes(encode_bundle(bundle))


def test_verify_exit_codes_and_json(cli: Cli, tmp_path: Path, pub: Path) -> None:
    log = tmp_path / "log"
    export(log, RAW)
    ok = cli("audit", "verify", "--log", log, "--trusted-key", pub)
    assert ok.code == 0 and "300 entries verified" in ok.out
    vkey = VerifierKey.for_public_key(ORIGIN, KEY.public_key).encode()
    ok = cli("audit", "verify", "--log", log, "--trusted-key", vkey, "--json")
    assert ok.code == 0 and json.loads(ok.out)["tree_size"] == 300
    _edit(log, 17)
    bad = cli("audit", "verify", "--log", log, "--trusted-key", pub, "--json")
    assert bad.code == 1
    assert json.loads(bad.out) == {
        "ok": False,
        "check": "audit-tree",
        "index": 17,
        "error": json.loads(bad.out)["error"],
    }
    assert "rejected (audit-tree): entry 17" in bad.err
    other = tmp_path / "other.pub"
    other.write_bytes(public_key_pem(audit_signer(1).public_key))
    assert cli("audit", "verify", "--log", log, "--trusted-key", other).code == 1


def test_verify_against_an_older_checkpoint(cli: Cli, tmp_path: Path, pub: Path) -> None:
    export(tmp_path / "old", RAW[:100])
    held = tmp_path / "held.checkpoint"
    held.write_bytes((tmp_path / "old" / CHECKPOINT).read_bytes())
    export(tmp_path / "log", RAW)
    ok = cli(
        "audit", "verify", "--log", tmp_path / "log", "--trusted-key", pub, "--checkpoint", held
    )
    assert ok.code == 0 and "extends the older checkpoint of 100" in ok.out
    export(tmp_path / "short", RAW[:50])
    short = cli(
        "audit", "verify", "--log", tmp_path / "short", "--trusted-key", pub, "--checkpoint", held
    )
    assert short.code == 1 and "audit-truncated" in short.err


@pytest.mark.parametrize(
    "args",
    [
        ["audit", "verify", "--log", "{tmp}/nowhere", "--trusted-key", "{pub}"],
        ["audit", "verify", "--log", "{tmp}", "--trusted-key", "{tmp}/none.pub"],
        ["audit", "verify", "--log", "{tmp}", "--trusted-key", "not+a+key"],
        ["audit", "verify", "--log", "{tmp}"],
        ["audit", "prove", "--log", "{tmp}", "--index", "1", "--old-size", "1"],
        ["audit", "vkey", "{pub}"],
        [
            "audit",
            "append",
            "--log",
            "{tmp}",
            "--key",
            "{pub}",
            "--action",
            "x",
            "--subject",
            "s",
            "--actor",
            "a",
        ],
    ],
)
def test_usage_errors_exit_2(cli: Cli, tmp_path: Path, pub: Path, args: list[str]) -> None:
    result = cli(*[a.format(tmp=tmp_path, pub=pub) for a in args])
    assert result.code == 2, result.err


def test_prove_inclusion_and_consistency(cli: Cli, tmp_path: Path, pub: Path) -> None:
    log = tmp_path / "log"
    checkpoint = export(log, RAW)
    result = cli("audit", "prove", "--log", log, "--index", "123", "--trusted-key", pub, "--json")
    assert result.code == 0
    body = json.loads(result.out)
    assert body["checkpoint_verified"] is True and body["entry"].encode() == RAW[123]
    path = [b64decode_strict(h) for h in body["inclusion_path"]]
    verify_inclusion(leaf_hash(RAW[123]), 123, 300, path, checkpoint.root)
    result = cli("audit", "prove", "--log", log, "--old-size", "77", "--json")
    body = json.loads(result.out)
    assert result.code == 0 and body["checkpoint_verified"] is False
    verify_consistency(
        77,
        300,
        [b64decode_strict(h) for h in body["consistency_path"]],
        b64decode_strict(body["root_hash_1"]),
        checkpoint.root,
    )
    assert cli("audit", "prove", "--log", log, "--index", "300").code == 2
    _edit(log, 123)
    assert cli("audit", "prove", "--log", log, "--index", "123").code == 1


def test_ceremony_log_through_the_cli(cli: Cli, tmp_path: Path) -> None:
    key = tmp_path / "audit.key"
    pub = tmp_path / "ceremony.pub"
    assert (
        cli("key", "generate", "--algorithm", "ed25519", "--out", key, "--public-out", pub).code
        == 0
    )
    log = tmp_path / "ceremony"
    created = cli(
        "audit", "init", "--log", log, "--origin", "ceremony.example/2026-12", "--key", key
    )
    assert created.code == 0
    vkey = created.out.split("verifier key: ")[1].strip()
    assert cli("audit", "vkey", "--name", "ceremony.example/2026-12", key).out.strip() == vkey
    assert cli("audit", "vkey", "--name", "ceremony.example/2026-12", pub).out.strip() == vkey
    for i in range(3):
        appended = cli(
            "audit", "append", "--log", log, "--key", key, "--action", "image.sign",
            "--subject", f"fw-{i}.img", "--actor", "alice", "--role", "release-manager",
            "--details", json.dumps({"version": f"1.0.{i}"}), "--time", "2026-12-03T10:00:00Z",
        )  # fmt: skip
        assert appended.code == 0 and f"entry {i} appended" in appended.out
    assert cli("audit", "verify", "--log", log, "--trusted-key", vkey).code == 0
    for bad in (
        ["--action", "image.sgn"],
        ["--details", '{"rate": 0.5}'],
        ["--details", "[1]"],
        ["--time", "2026-12-03T10:00:00"],
    ):
        base = {"--action": "image.sign", "--details": "{}", "--time": "2026-12-03T10:00:00Z"}
        base[bad[0]] = bad[1]
        args = [x for pair in base.items() for x in pair]
        result = cli(
            "audit", "append", "--log", log, "--key", key, "--subject", "s", "--actor", "a", *args
        )
        assert result.code == 2, bad


def test_export_served_by_nginx_verifies_from_the_url(
    cli: Cli, nginx: tuple[Path, str], pub: Path
) -> None:
    root, url = nginx
    export(root / "log", RAW)
    ok = cli("audit", "verify", "--log", f"{url}/log/", "--trusted-key", pub, "--json")
    assert ok.code == 0, ok.err
    assert json.loads(ok.out)["tree_size"] == 300
    proof = cli("audit", "prove", "--log", f"{url}/log", "--index", "299", "--trusted-key", pub)
    assert proof.code == 0
    _edit(root / "log", 260)
    bad = cli("audit", "verify", "--log", f"{url}/log", "--trusted-key", pub, "--json")
    assert bad.code == 1 and json.loads(bad.out)["index"] == 260
    (root / "log" / entries_path(1, 44)).unlink()  # 404 from the mirror: entries are gone
    gone = cli("audit", "verify", "--log", f"{url}/log", "--trusted-key", pub, "--json")
    assert gone.code == 1 and json.loads(gone.out)["check"] == "audit-truncated"
    (root / "log" / tile_path(0, 0)).write_bytes(b"\0" * 100_000)  # a hostile mirror's tile
    big = cli("audit", "verify", "--log", f"{url}/log", "--trusted-key", pub)
    assert big.code == 1 and "audit-tree" in big.err
    missing = cli("audit", "verify", "--log", f"{url}/nothing", "--trusted-key", pub)
    assert missing.code == 1 and "audit-checkpoint" in missing.err


def test_unreachable_url_is_an_io_error(cli: Cli, pub: Path) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = cli("audit", "verify", "--log", f"http://127.0.0.1:{port}/log", "--trusted-key", pub)
    assert result.code == 2
