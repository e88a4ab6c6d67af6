"""``otaguard.repo.bootstrap`` as the fleet server will call it: no CLI anywhere in these tests.

The server's story: online keys generated into a directory of its own, a repository
whose root and targets keys are offline (only their public keys given), targets
metadata signed offline by release managers and uploaded, publish signing snapshot and
timestamp over it, and clients reading the result over real HTTP.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from tuf.api.metadata import Metadata, TargetFile

from otaguard.errors import MalformedError, RejectedError, UsageError
from otaguard.repo.bootstrap import (
    RoleKeys,
    generate_key,
    generate_online_keys,
    init_repository,
    online_key_location,
    publish,
    stage_signed,
)
from otaguard.repo.repository import ImageRepository, SignaturesMissingError
from otaguard.repo.signing import load_repo_signer
from repo.helpers_repository import Keys, OurClient, Served


def test_generate_key_never_replaces_a_file(tmp_path: Path) -> None:
    path = generate_key(tmp_path / "deep" / "k.pem")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    first = path.read_bytes()
    assert first.startswith(b"-----BEGIN PRIVATE KEY-----")
    with pytest.raises(UsageError, match="already exists"):
        generate_key(path)
    assert path.read_bytes() == first
    (tmp_path / "online" / "timestamp.pem").parent.mkdir()
    (tmp_path / "online" / "timestamp.pem").write_bytes(b"precious")
    with pytest.raises(UsageError, match="already exists"):
        generate_online_keys(tmp_path / "online")
    assert sorted(p.name for p in (tmp_path / "online").iterdir()) == ["timestamp.pem"]
    keys = generate_online_keys(tmp_path / "fresh")
    assert sorted(keys) == ["snapshot", "timestamp"]
    assert keys["snapshot"].read_bytes() != keys["timestamp"].read_bytes()


def test_online_key_location_rule(tmp_path: Path) -> None:
    uri = "pkcs11:token=t;object=o"
    assert online_key_location(tmp_path, uri) == uri
    assert online_key_location(tmp_path, "/etc/otaguard/ts.pem") == "/etc/otaguard/ts.pem"
    assert online_key_location(tmp_path, "online-keys/ts.pem") == str(
        tmp_path / "online-keys/ts.pem"
    )


def _offline_signed(keys: Keys, md: Metadata, *names: str) -> bytes:  # type: ignore[type-arg]
    """What a release manager's offline machine returns: the metadata with their signatures."""
    md.signatures.clear()
    for name in names:
        md.sign(load_repo_signer(keys.priv(name)), append=True)
    return md.to_bytes()


def test_server_story_offline_keys_online_roles(tmp_path: Path) -> None:
    keys = Keys(tmp_path / "keys")
    online = generate_online_keys(tmp_path / "server" / "online-keys")
    repo_dir = tmp_path / "srv" / "repo"
    result = init_repository(
        repo_dir,
        root=RoleKeys.load([keys.pub("root-a"), keys.pub("root-b")], threshold=2),
        targets=RoleKeys.load([keys.pub("rm1"), keys.pub("rm2"), keys.pub("rm3")], threshold=2),
        online={role: str(path) for role, path in online.items()},
    )
    assert result.published is None and result.generated_offline_keys == ()
    assert {s.role: s.ok for s in result.staged} == {"root": False, "targets": False}
    assert not (repo_dir / "offline-keys").exists() and not (repo_dir / "online-keys").exists()
    config = json.loads((repo_dir / "config.json").read_bytes())
    assert config["online_keys"] == {role: str(path) for role, path in online.items()}
    assert not any((repo_dir / "metadata").iterdir())

    # version 1 signed offline: root by 2 of 2, targets by 2 of 3, uploaded to the server
    repository = ImageRepository(repo_dir)
    root_v1 = _offline_signed(keys, repository.staged("root", fresh=True), "root-a", "root-b")  # type: ignore[arg-type]
    targets_v1 = repository.staged("targets", fresh=True)
    assert stage_signed(repo_dir, "root", root_v1).ok
    assert not stage_signed(repo_dir, "targets", _offline_signed(keys, targets_v1, "rm1")).ok  # type: ignore[arg-type]
    with pytest.raises(SignaturesMissingError):
        publish(repo_dir)  # one of two targets signatures: nothing goes live
    assert not any((repo_dir / "metadata").iterdir())
    # the second release manager uploads their own signature: the two are combined
    status = stage_signed(repo_dir, "targets", _offline_signed(keys, targets_v1, "rm3"))  # type: ignore[arg-type]
    assert status.ok and status.signed == 2
    first = publish(repo_dir)
    assert (first.published, first.snapshot_version, first.timestamp_version) == (
        ["root", "targets"],
        1,
        1,
    )

    # a release: targets v2 with an image, signed offline, uploaded; publish re-signs online roles
    targets_v2 = ImageRepository(repo_dir).editable("targets")
    targets_v2.signed.targets["fw/1.0.img"] = TargetFile.from_data("fw/1.0.img", b"fw", ["sha256"])
    assert stage_signed(repo_dir, "targets", _offline_signed(keys, targets_v2, "rm2", "rm3")).ok
    second = publish(repo_dir)
    assert (second.published, second.snapshot_version, second.timestamp_version) == (
        ["targets"],
        2,
        2,
    )
    assert publish(repo_dir).timestamp_version == 3  # the daily renewal, nothing staged

    served = Served(repo_dir)
    try:
        client = OurClient(served, tmp_path / "vehicle")
        client.refresh()
        assert client.version("targets") == 2 and client.version("timestamp") == 3
    finally:
        served.close()


def test_stage_signed_refusals(tmp_path: Path) -> None:
    keys = Keys(tmp_path / "keys")
    repo_dir = tmp_path / "repo"
    init_repository(
        repo_dir,
        root=RoleKeys.load([keys.priv("root")]),
        targets=RoleKeys.load([keys.priv("rm")]),
    )
    repository = ImageRepository(repo_dir)
    published = repository.published("targets", fresh=True)
    with pytest.raises(UsageError, match="not newer"):
        stage_signed(repo_dir, "targets", _offline_signed(keys, published, "rm"))  # type: ignore[arg-type]
    with pytest.raises(MalformedError, match="not targets"):
        stage_signed(repo_dir, "targets", (repo_dir / "metadata" / "1.root.json").read_bytes())
    with pytest.raises(MalformedError):
        stage_signed(repo_dir, "targets", b"{not json")
    with pytest.raises(UsageError, match="no role delegates"):
        stage_signed(
            repo_dir, "nobody", _offline_signed(keys, repository.editable("targets"), "rm")
        )
    other = repository.editable("targets")  # v2, empty: somebody else's upload
    pending = repository.editable("targets")
    pending.signed.targets["a"] = TargetFile.from_data("a", b"a", ["sha256"])
    repository.stage("targets", pending)
    before = (repo_dir / "staged" / "targets.json").read_bytes()
    with pytest.raises(UsageError, match="other pending work"):
        stage_signed(repo_dir, "targets", _offline_signed(keys, other, "rm"))
    assert (repo_dir / "staged" / "targets.json").read_bytes() == before
    for signer in ("intruder", "root"):  # not a key of targets at all, or another role's
        with pytest.raises(RejectedError, match="1 signature"):
            stage_signed(repo_dir, "targets", _offline_signed(keys, pending, "rm", signer))
    forged = json.loads(_offline_signed(keys, pending, "rm"))
    forged["signatures"][0]["sig"] = "00" * 64
    with pytest.raises(RejectedError, match="forged"):
        stage_signed(repo_dir, "targets", json.dumps(forged).encode())
    assert (repo_dir / "staged" / "targets.json").read_bytes() == before
    assert stage_signed(repo_dir, "targets", _offline_signed(keys, pending, "rm")).ok
    assert publish(repo_dir).published == ["targets"]


def _leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir())


def test_init_is_all_or_nothing(tmp_path: Path) -> None:
    """Every failure leaves nothing: no directory, no generated key, no temporary directory."""
    keys = Keys(tmp_path / "keys")
    parent = tmp_path / "parent"
    parent.mkdir()
    target = parent / "repo"
    failures = [
        ({"online": {"timestamp": str(tmp_path / "missing.pem")}}, Exception, "missing"),
        ({"targets": RoleKeys(threshold=2)}, UsageError, "threshold 2"),
        ({"expiry_days": {"bogus": 5}}, UsageError, "bogus"),
        ({"expiry_days": {"root": 0}}, UsageError, "1-3660"),
        ({"online": {"director": keys.priv("d")}}, UsageError, "director"),
    ]
    for kwargs, error, message in failures:
        with pytest.raises(error, match=message):
            init_repository(target, **kwargs)  # type: ignore[arg-type]
        assert _leftovers(parent) == [], kwargs
    # an empty directory is accepted (and replaced by the repository); a non-empty one is not
    target.mkdir()
    (target / "x").write_bytes(b"")
    with pytest.raises(UsageError, match="not empty"):
        init_repository(target)
    (target / "x").unlink()
    assert _leftovers(parent) == ["repo"] and _leftovers(target) == []
    result = init_repository(target)
    assert result.published is not None
    assert [p.name for p in result.generated_offline_keys] == ["root.pem", "targets.pem"]
    assert all(p.parent == target / "offline-keys" for p in result.generated_offline_keys)
    with pytest.raises(UsageError, match="already holds a repository"):
        init_repository(target)
    other = parent / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(UsageError, match="not empty"):
        init_repository(other)
    assert _leftovers(other) == ["notes.txt"]
    assert _leftovers(parent) == ["other", "repo"]


def test_relative_online_keys_follow_the_repository(tmp_path: Path) -> None:
    """Generated online keys are recorded relative to the repository: it can be moved."""
    init_repository(tmp_path / "a")
    config = json.loads((tmp_path / "a" / "config.json").read_bytes())
    assert config["online_keys"] == {
        "snapshot": "online-keys/snapshot.pem",
        "timestamp": "online-keys/timestamp.pem",
    }
    os.rename(tmp_path / "a", tmp_path / "b")
    assert publish(tmp_path / "b").timestamp_version == 2


def test_public_online_keys_leave_version_1_staged(tmp_path: Path) -> None:
    """Release managers name a fleet server's online keys by their public halves
    (docs/server.md): the repository is made, version 1 waits for the server to publish."""
    keys = Keys(tmp_path / "keys")
    result = init_repository(
        tmp_path / "repo",
        online={"snapshot": keys.pub("snap"), "timestamp": keys.pub("ts")},
    )
    assert result.published is None
    assert {s.role for s in result.staged} == {"root", "targets"}
    assert all(s.ok for s in result.staged)  # generated offline keys signed them
