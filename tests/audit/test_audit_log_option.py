"""``--audit-log``: an offline ceremony (signing, PKI, repository, delta) leaves the same
evidence as the server; a command whose evidence could not be recorded does not run."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from helpers import CliResult
from otaguard.audit.entry import AuditEntry, parse_entry
from otaguard.audit.tiles import DirectoryReader, entries_path, parse_bundle, tile_width
from otaguard.audit.verify import verify_log
from otaguard.crypto.keys import load_public_key

Cli = Callable[..., CliResult]


@pytest.fixture
def ceremony(cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A local audit log, named in the environment as a ceremony would set it once."""
    assert (
        cli(
            "key",
            "generate",
            "--algorithm",
            "ed25519",
            "--out",
            tmp_path / "audit.pem",
            "--public-out",
            tmp_path / "audit.pub",
        ).code
        == 0
    )
    log = tmp_path / "log"
    assert (
        cli(
            "audit",
            "init",
            "--log",
            log,
            "--origin",
            "ceremony.test/1",
            "--key",
            tmp_path / "audit.pem",
        ).code
        == 0
    )
    monkeypatch.setenv("OTAGUARD_AUDIT_LOG", str(log))
    monkeypatch.setenv("OTAGUARD_AUDIT_KEY", str(tmp_path / "audit.pem"))
    monkeypatch.setenv("OTAGUARD_AUDIT_ACTOR", "alice")
    monkeypatch.chdir(tmp_path)
    return log


def logged(log: Path) -> list[AuditEntry]:
    """Every entry, after the whole log verified with its key."""
    read = DirectoryReader(log)
    key = load_public_key((log.parent / "audit.pub").read_bytes())
    size = verify_log(read, [key]).checkpoint.size
    raw: list[bytes] = []
    for bundle in range(-(-size // 256)):
        raw += parse_bundle(read(entries_path(bundle, tile_width(size, 0, bundle))))
    return [parse_entry(r) for r in raw]


def sha256(path: Path | str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def ok(result: CliResult) -> CliResult:
    assert result.code == 0, result.err
    return result


def test_a_signing_ceremony_is_recorded(cli: Cli, ceremony: Path, tmp_path: Path) -> None:
    ok(
        cli(
            "key",
            "generate",
            "--algorithm",
            "ed25519",
            "--out",
            "rel.pem",
            "--public-out",
            "rel.pub",
            "--audit-role",
            "release-manager",
        )
    )
    for name, data in (("a.bin", b"a" * 4000), ("b.bin", b"b" * 4100)):
        Path(name).write_bytes(data)
    common = ["--key", "rel.pem", "--hardware-id", "hw"]
    ok(cli("sign", *common, "--version", "1.0.0", "--security-counter", "1", "a.bin", "a.img"))
    ok(cli("sign", *common, "--version", "1.1.0", "--security-counter", "2", "b.bin", "b.img"))
    ok(
        cli(
            "sign",
            "--format",
            "mcuboot",
            "--key",
            "rel.pem",
            "--version",
            "1.2.3",
            "--pad-header",
            "a.bin",
            "a.mcuboot",
        )
    )
    ok(cli("delta", "create", "--key", "rel.pem", "a.img", "b.img", "ab.delta"))
    found = logged(ceremony)
    assert [e.event.action for e in found] == [
        "key.generate",
        "image.sign",
        "image.sign",
        "image.sign",
        "delta.sign",
    ]
    generated, first, _, mcuboot, delta = found
    public = load_public_key(Path("rel.pub").read_bytes())
    from otaguard.crypto.keys import key_id

    assert generated.event.subject == key_id(public)
    assert (generated.event.actor.id, generated.event.actor.role) == ("alice", "release-manager")
    assert first.event.subject == "a.img"
    assert first.event.details["sha256"] == sha256("a.img")
    assert first.event.details["keys"] == [key_id(public)]
    assert (first.event.details["version"], first.event.details["hardware_ids"]) == (
        "1.0.0",
        ["hw"],
    )
    assert mcuboot.event.details["format"] == "mcuboot"
    assert mcuboot.event.details["sha256"] == sha256("a.mcuboot")
    assert delta.event.details["new_sha256"] == sha256("b.img")
    assert delta.event.details["sha256"] == sha256("ab.delta")


def test_a_pki_ceremony_is_recorded(cli: Cli, ceremony: Path) -> None:
    ok(cli("pki", "init-root", "--out-dir", "root", "--subject", "CN=Acme Root"))
    ok(cli("pki", "issue-intermediate", "--ca", "root", "--out-dir", "ica", "--region", "eu"))
    ok(cli("pki", "issue-signer", "--ca", "ica", "--out-dir", "signer", "--name", "rel-q4"))
    ok(cli("pki", "init-root", "--out-dir", "devroot", "--subject", "CN=Devices"))
    ok(
        cli(
            "pki",
            "issue-intermediate",
            "--ca",
            "devroot",
            "--out-dir",
            "devca",
            "--purpose",
            "device-identity",
        )
    )
    ok(cli("pki", "issue-device", "--ca", "devca", "--out-dir", "car", "--device-id", "VIN1"))
    issued = json.loads(
        ok(
            cli("pki", "issue-signer", "--ca", "ica", "--out-dir", "s2", "--name", "x", "--json")
        ).out
    )
    ok(cli("pki", "revoke", "--ca", "ica", "--reason", "key-compromise", "--", issued["serial"]))
    ok(cli("pki", "crl", "--ca", "ica", "--out", "ica.crl"))
    ok(cli("pki", "init-root", "--out-dir", "root2", "--subject", "CN=Acme Root 2"))
    ok(cli("pki", "cross-sign", "--ca", "root", "--new-root", "root2", "--out", "cross.pem"))
    ok(
        cli(
            "pki",
            "rotation-message",
            "--ca",
            "root",
            "--new-root",
            "root2",
            "--epoch",
            "2",
            "--out",
            "rotation.bin",
        )
    )
    found = logged(ceremony)
    assert [e.event.action for e in found] == [
        "cert.issue",
        "cert.issue",
        "cert.issue",
        "cert.issue",
        "cert.issue",
        "cert.issue",
        "cert.issue",
        "cert.revoke",
        "crl.issue",
        "cert.issue",
        "cert.issue",
        "anchor.rotate",
    ]
    kinds = [e.event.details.get("kind") for e in found if e.event.action == "cert.issue"]
    assert kinds == [
        "root",
        "intermediate",
        "signer",
        "root",
        "intermediate",
        "device",
        "signer",
        "root",
        "cross-certificate",
    ]
    device = found[5]
    assert device.event.subject == "CN=VIN1"
    revoked = found[7]
    assert revoked.event.subject == issued["serial"].upper()
    assert revoked.event.details["reason"] == "key-compromise"
    assert found[8].event.details["sha256"] == sha256("ica.crl")
    assert found[11].event.details["epoch"] == 2


def test_a_repository_ceremony_is_recorded(cli: Cli, ceremony: Path) -> None:
    for name in ("root", "targets", "online"):
        ok(
            cli(
                "key",
                "generate",
                "--algorithm",
                "ed25519",
                "--out",
                f"{name}.pem",
                "--public-out",
                f"{name}.pub",
            )
        )
    ok(
        cli(
            "repo",
            "init",
            "repo",
            "--root-key",
            "root.pem",
            "--targets-key",
            "targets.pub",
            "--snapshot-key",
            "online.pem",
            "--timestamp-key",
            "online.pem",
        )
    )
    Path("fw.bin").write_bytes(b"x" * 3000)
    ok(
        cli(
            "sign",
            "--key",
            "targets.pem",
            "--version",
            "1.0.0",
            "--security-counter",
            "1",
            "--hardware-id",
            "hw",
            "fw.bin",
            "fw.img",
        )
    )
    ok(
        cli(
            "repo",
            "add-target",
            "repo",
            "fw.img",
            "--name",
            "hw/fw.img",
            "--trusted-key",
            "targets.pub",
        )
    )
    ok(cli("repo", "sign", "repo", "--key", "root.pem", "--key", "targets.pem"))
    ok(cli("repo", "publish", "repo"))
    found = logged(ceremony)
    signed, published = [e for e in found if e.event.action == "repo.sign"]
    assert signed.event.details["staged"]["targets"]["version"] == 1
    assert len(signed.event.details["keys"]) == 2
    assert published.event.details["published"]["timestamp"] == 1


def test_no_evidence_no_command(cli: Cli, ceremony: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The log is checked before the command runs: nothing is written when it cannot record."""
    ok(cli("key", "generate", "--algorithm", "ed25519", "--out", "k.pem"))
    Path("a.bin").write_bytes(b"a" * 1000)
    sign = [
        "sign",
        "--key",
        "k.pem",
        "--version",
        "1.0.0",
        "--security-counter",
        "1",
        "--hardware-id",
        "hw",
        "a.bin",
    ]
    monkeypatch.delenv("OTAGUARD_AUDIT_KEY")
    assert cli(*sign, "one.img").code == 2  # --audit-log without its key
    assert not Path("one.img").exists()
    monkeypatch.setenv("OTAGUARD_AUDIT_KEY", "k.pem")  # not the log's key
    assert cli(*sign, "two.img").code == 1
    assert not Path("two.img").exists()
    monkeypatch.setenv("OTAGUARD_AUDIT_KEY", "audit.pem")
    monkeypatch.setenv("OTAGUARD_AUDIT_LOG", "nowhere")
    assert cli(*sign, "three.img").code == 2  # no log there (audit init first)
    assert not Path("three.img").exists()
    monkeypatch.setenv("OTAGUARD_AUDIT_LOG", str(ceremony))
    leaf_tile = ceremony / "tile" / "0" / "000.p" / "1"
    data = bytearray(leaf_tile.read_bytes())
    data[0] ^= 1
    leaf_tile.write_bytes(bytes(data))  # the log was tampered with
    result = cli(*sign, "four.img")
    assert result.code == 1 and "do not match" in result.err
    assert not Path("four.img").exists()


def test_without_an_audit_log_nothing_changes(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OTAGUARD_AUDIT_LOG", raising=False)
    monkeypatch.delenv("OTAGUARD_AUDIT_KEY", raising=False)
    ok(cli("key", "generate", "--algorithm", "ed25519", "--out", tmp_path / "k.pem"))
    assert "--audit-log" in cli("sign", "--help").out
