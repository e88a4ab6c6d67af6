"""``otaguard tuf-client`` against a real python-tuf repository over real HTTP.

Every attack must end with exit status exactly 1 and leave the trusted state
(metadata directory, target directory) as it was before: each refusal test
compares the metadata directory byte for byte (``client.trusted()``). Where the
workflow legitimately accepted an earlier role in the same run (a new timestamp
before a refused snapshot), the test names exactly what changed.
"""

from __future__ import annotations

import datetime
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tuf.api.metadata import Root, Snapshot, Targets, Timestamp

from otaguard.cli.main import run


def test_init_refresh_download(repo, client) -> None:
    repo.add_target("fw/app.bin", b"firmware v1")
    repo.publish()
    assert client.refresh() == 0
    assert client.json_files() == ["root.json", "snapshot.json", "targets.json", "timestamp.json"]
    served = repo.meta_dir
    assert (client.metadata_dir / "timestamp.json").read_bytes() == (
        served / "timestamp.json"
    ).read_bytes()
    assert (client.metadata_dir / "targets.json").read_bytes() == (
        served / "2.targets.json"
    ).read_bytes()
    assert client.download("fw/app.bin") == 0
    assert client.downloaded() == {"fw%2Fapp.bin": b"firmware v1"}
    assert list(client.metadata_dir.iterdir()) == list(client.metadata_dir.glob("*.json"))


def test_first_refresh_requests(repo, client) -> None:
    repo.requests.clear()
    assert client.refresh() == 0
    assert repo.requests == [
        "/metadata/2.root.json",
        "/metadata/timestamp.json",
        "/metadata/1.snapshot.json",
        "/metadata/1.targets.json",
    ]
    repo.requests.clear()
    assert client.refresh() == 0  # nothing changed: two requests
    assert repo.requests == ["/metadata/2.root.json", "/metadata/timestamp.json"]


def test_artifact_cache(repo, client) -> None:
    repo.add_target("a.bin", b"A")
    repo.publish()
    assert client.download("a.bin") == 0
    repo.requests.clear()
    assert client.download("a.bin") == 0
    assert not any(r.startswith("/targets/") for r in repo.requests)


def test_unknown_target_fails(repo, client, capsys) -> None:
    assert client.refresh() == 0
    before = client.trusted()
    capsys.readouterr()
    assert client.download("missing.bin") == 1
    err = capsys.readouterr().err
    assert err.endswith("failed: target 'missing.bin' is not in the repository\n"), err
    assert client.trusted() == before


def test_multiple_targets_stop_at_first_failure(repo, client) -> None:
    repo.add_target("a.bin", b"A")
    repo.add_target("c.bin", b"C")
    repo.publish()
    assert client.refresh() == 0
    before = client.trusted()
    assert client.download("a.bin", "missing", "c.bin") == 1
    assert client.downloaded() == {"a.bin": b"A"}
    assert client.trusted() == before


def test_usage_errors_exit_1(client, repo) -> None:
    md = str(client.metadata_dir)
    before = client.trusted()
    assert run(["tuf-client"]) == 1
    assert run(["tuf-client", "--metadata-dir", md, "refresh"]) == 1  # no --metadata-url
    assert run(["tuf-client", "--metadata-dir", md, "--bogus", "refresh"]) == 1
    assert run(["tuf-client", "--metadata-dir", md, "frobnicate"]) == 1
    assert run(["tuf-client", "--metadata-dir", md, "init"]) == 1
    url = repo.metadata_url
    assert run(["tuf-client", "--metadata-dir", md, "--metadata-url", url, "download"]) == 1
    assert run(["tuf-client", "--metadata-url", url, "refresh"]) == 1  # no --metadata-dir
    assert run(["tuf-client", "--help"]) == 0
    assert client.trusted() == before


@pytest.mark.parametrize("command", ["init", "refresh", "download"])
def test_subcommand_help_is_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    """``tuf-client init --help`` used to fail: --metadata-dir was required before the help."""
    assert run(["tuf-client", command, "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"Usage: otaguard tuf-client {command} ")


def test_a_bug_is_exit_3_with_a_traceback_only_under_debug(
    client, repo, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """An unexpected exception is not a verdict on the repository: exit 3, not 1."""
    from otaguard.repo.client import TufClient

    def broken(self: TufClient) -> None:
        raise KeyError("a bug")

    monkeypatch.setattr(TufClient, "refresh", broken)
    args = ["--metadata-dir", str(client.metadata_dir), "--metadata-url", repo.metadata_url]
    capsys.readouterr()
    assert run(["tuf-client", *args, "refresh"]) == 3
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "internal error" in err and "KeyError" in err
    assert "Traceback" not in err
    assert run(["tuf-client", "--debug", *args, "refresh"]) == 3
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "in broken" in err
    assert err.endswith("KeyError: 'a bug'\n")


def test_console_script_exit_codes(client, repo, tmp_path: Path) -> None:
    exe = Path(sys.executable).with_name("otaguard")
    md = str(client.metadata_dir)
    ok = subprocess.run(
        [
            str(exe),
            "tuf-client",
            "--metadata-dir",
            md,
            "--metadata-url",
            repo.metadata_url,
            "refresh",
        ],
        check=False,
        capture_output=True,
    )
    assert ok.returncode == 0, ok.stderr
    bad = subprocess.run([str(exe), "tuf-client", "--nope"], check=False, capture_output=True)
    assert bad.returncode == 1
    assert b"Traceback" not in bad.stderr


def test_init_refuses_garbage_root(tmp_path: Path, repo) -> None:
    bad = tmp_path / "bad.json"
    bad.write_bytes(b'{"signed": {}}')
    md = tmp_path / "md"
    assert run(["tuf-client", "--metadata-dir", str(md), "init", str(bad)]) == 1
    assert not (md / "root.json").exists()
    good = tmp_path / "good.json"
    good.write_bytes(repo.initial_root)
    assert run(["tuf-client", "--metadata-dir", str(md), "init", str(good)]) == 0
    assert run(["tuf-client", "--metadata-dir", str(md), "init", str(bad)]) == 1
    assert (md / "root.json").read_bytes() == repo.initial_root
    missing = str(tmp_path / "missing.json")
    assert run(["tuf-client", "--metadata-dir", str(md), "init", missing]) == 1
    assert (md / "root.json").read_bytes() == repo.initial_root


def test_init_refuses_unsigned_root(tmp_path: Path, repo) -> None:
    repo.md[Root.type].signed.version = 1
    unsigned = tmp_path / "unsigned.json"
    unsigned.write_bytes(repo.sign(Root.type, signers=[]))
    assert run(["tuf-client", "--metadata-dir", str(tmp_path), "init", str(unsigned)]) == 1
    assert not (tmp_path / "root.json").exists()


# -- rollback and freeze ------------------------------------------------------------------------


def test_timestamp_rollback(repo, client) -> None:
    old = (repo.meta_dir / "timestamp.json").read_bytes()
    repo.publish()
    assert client.refresh() == 0
    (repo.meta_dir / "timestamp.json").write_bytes(old)
    before = client.trusted()
    assert client.refresh() == 1
    assert client.version(Timestamp.type) == 2
    assert client.trusted() == before


def test_snapshot_rollback(repo, client) -> None:
    repo.publish()
    assert client.refresh() == 0
    assert client.version(Snapshot.type) == 2
    # a new timestamp that points at an older snapshot version
    repo.md[Snapshot.type].signed.version = 1
    repo.md[Timestamp.type].signed.version += 1
    repo.md[Timestamp.type].signed.snapshot_meta.version = 1
    repo.md[Timestamp.type].signed.snapshot_meta.hashes = None
    repo.md[Timestamp.type].signed.snapshot_meta.length = None
    repo.write_role(Timestamp.type)
    before = client.trusted()
    assert client.refresh() == 1
    assert client.version(Snapshot.type) == 2
    assert client.trusted() == before


def test_targets_rollback_in_snapshot(repo, client) -> None:
    repo.publish()
    assert client.refresh() == 0
    repo.md[Snapshot.type].signed.meta["targets.json"].version = 1
    repo.publish([])
    before = client.trusted()
    assert client.refresh() == 1
    assert client.version(Targets.type) == 2
    # the new timestamp verified and was kept; the snapshot that rolls targets back was not
    new_timestamp = (repo.meta_dir / "timestamp.json").read_bytes()
    assert client.trusted() == {**before, "timestamp.json": new_timestamp}


def test_freeze_expired_timestamp(repo, client) -> None:
    assert client.refresh() == 0
    repo.md[Timestamp.type].signed.expires = datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC)
    repo.md[Timestamp.type].signed.version += 1
    repo.write_role(Timestamp.type)
    before = client.trusted()
    assert client.refresh() == 1
    assert client.version(Timestamp.type) == 1
    assert client.trusted() == before


def test_freeze_expired_snapshot(repo, client) -> None:
    repo.md[Snapshot.type].signed.expires = datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC)
    repo.publish([])
    before = client.trusted()
    assert client.refresh() == 1
    new_timestamp = (repo.meta_dir / "timestamp.json").read_bytes()
    assert client.trusted() == {**before, "timestamp.json": new_timestamp}
    before = client.trusted()
    assert client.download("anything") == 1
    assert client.trusted() == before


def test_mix_and_match_targets(repo, client) -> None:
    """targets v2 signed and served under the name snapshot says is v3: refused."""
    repo.add_target("a.bin", b"A")
    repo.publish()  # targets v2
    v2 = (repo.meta_dir / "2.targets.json").read_bytes()
    repo.add_target("b.bin", b"B")
    repo.publish()  # targets v3
    (repo.meta_dir / "3.targets.json").write_bytes(v2)
    before = client.trusted()
    assert client.refresh() == 1
    assert not (client.metadata_dir / "targets.json").exists()
    accepted = {"timestamp.json": "timestamp.json", "snapshot.json": "3.snapshot.json"}
    assert client.trusted() == {
        **before,
        **{mine: (repo.meta_dir / served).read_bytes() for mine, served in accepted.items()},
    }


def test_snapshot_hash_mismatch(repo, client) -> None:
    """A mirror serving other (validly signed) snapshot bytes than timestamp hashes."""
    repo.md[Snapshot.type].signed.expires += datetime.timedelta(seconds=1)
    repo.write_role(Snapshot.type)  # same version, different bytes
    before = client.trusted()
    assert client.refresh() == 1
    new_timestamp = (repo.meta_dir / "timestamp.json").read_bytes()
    assert client.trusted() == {**before, "timestamp.json": new_timestamp}


# -- endless data and slow retrieval -------------------------------------------------------------


def test_endless_timestamp(repo, client, hostile) -> None:
    repo.overrides["/metadata/timestamp.json"] = hostile["endless"]
    before = client.trusted()
    start = time.monotonic()
    assert client.refresh() == 1
    assert time.monotonic() - start < 20
    assert not (client.metadata_dir / "timestamp.json").exists()
    assert client.trusted() == before


def test_endless_target(repo, client, hostile) -> None:
    info = repo.add_target("big.bin", b"x" * 1000)
    repo.publish()
    repo.overrides[f"/targets/{info.hashes['sha256']}.big.bin"] = hostile["endless"]
    assert client.refresh() == 0
    before = client.trusted()
    assert client.download("big.bin") == 1
    assert client.downloaded() == {}
    assert client.trusted() == before


def test_decompression_bomb_timestamp(repo, client) -> None:
    """A few hundred bytes sent as ``Content-Encoding: gzip, gzip``: refused, never decoded."""
    import gzip

    bomb = gzip.compress(gzip.compress(bytes(16 << 20)))

    def handler(request) -> None:
        request.send_response(200)
        request.send_header("Content-Length", str(len(bomb)))
        request.send_header("Content-Encoding", "gzip, gzip")
        request.end_headers()
        request.wfile.write(bomb)

    repo.overrides["/metadata/timestamp.json"] = handler
    before = client.trusted()
    assert client.refresh() == 1
    assert client.trusted() == before


def test_slow_headers_timestamp(repo, client) -> None:
    """A mirror trickling its status line: the session fails at its deadline, trust unchanged."""
    from otaguard.repo.client import TufClient
    from otaguard.repo.fetcher import FetcherConfig, HttpxFetcher, SlowRetrievalError

    def handler(request) -> None:
        try:
            for byte in b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}":
                request.wfile.write(bytes([byte]))
                request.wfile.flush()
                time.sleep(0.1)
        except OSError:
            pass

    repo.overrides["/metadata/timestamp.json"] = handler
    before = client.trusted()
    config = FetcherConfig(grace_seconds=0.5, min_speed=1_000_000)
    with HttpxFetcher(config) as fetcher, pytest.raises(SlowRetrievalError):
        TufClient(client.metadata_dir, repo.metadata_url, fetcher).refresh()
    assert client.trusted() == before


def test_endless_root(repo, client, hostile) -> None:
    repo.overrides["/metadata/2.root.json"] = hostile["endless"]
    before = client.trusted()
    assert client.refresh() == 1
    assert client.trusted() == before


# -- targets -------------------------------------------------------------------------------------


def test_substituted_target(repo, client) -> None:
    info = repo.add_target("fw.bin", b"genuine")
    repo.publish()
    (repo.targets_dir / f"{info.hashes['sha256']}.fw.bin").write_bytes(b"evil!!!")
    assert client.refresh() == 0
    before = client.trusted()
    assert client.download("fw.bin") == 1
    assert client.downloaded() == {}
    assert client.trusted() == before


def test_tampered_local_target_is_replaced(repo, client) -> None:
    repo.add_target("fw.bin", b"genuine")
    repo.publish()
    assert client.download("fw.bin") == 0
    (client.target_dir / "fw.bin").write_bytes(b"tampered")
    assert client.download("fw.bin") == 0
    assert client.downloaded() == {"fw.bin": b"genuine"}


# -- key rotation --------------------------------------------------------------------------------


def test_root_rotation(repo, client) -> None:
    assert client.refresh() == 0
    repo.rotate_root(Root.type)
    repo.rotate_root(Timestamp.type)
    repo.publish()
    assert client.refresh() == 0
    assert client.version(Root.type) == 3
    assert (client.metadata_dir / "root.json").read_bytes() == repo.root_bytes(3)


def test_root_rotation_without_old_threshold(repo, client) -> None:
    repo.rotate_root(Root.type, sign_with_old=False)
    before = client.trusted()
    assert client.refresh() == 1
    assert client.version(Root.type) == 1
    assert client.trusted() == before


def test_fast_forward_recovery(repo, client) -> None:
    """Timestamp key compromised and version pushed high; rotation lets the client recover."""
    repo.md[Timestamp.type].signed.version = 999
    repo.publish([])
    assert client.refresh() == 0
    assert client.version(Timestamp.type) == 1000
    repo.rotate_root(Timestamp.type)
    repo.md[Timestamp.type].signed.version = 1
    repo.publish([], bump=False)
    assert client.refresh() == 0
    assert client.version(Timestamp.type) == 1


def test_timestamp_signed_by_revoked_key(repo, client) -> None:
    old = repo.signers[Timestamp.type]
    repo.rotate_root(Timestamp.type)
    repo.signers[Timestamp.type] = old
    repo.publish()
    before = client.trusted()
    assert client.refresh() == 1
    # root v2 verified and was kept (the rotation is genuine); the timestamp was not
    assert client.trusted() == {**before, "root.json": repo.root_bytes(2)}


# -- delegations ---------------------------------------------------------------------------------


def test_delegated_target(repo, client) -> None:
    repo.delegate(Targets.type, "region/eu", ["eu/*"])
    repo.add_target("eu/fw.bin", b"EU", role="region/eu")
    repo.publish(["region/eu", Targets.type])
    assert client.download("eu/fw.bin") == 0
    assert "region%2Feu.json" in client.json_files()


def test_diamond_delegation_reverified(repo, client) -> None:
    """A role cached via one delegator is verified again via another (must not inherit trust)."""
    repo.delegate(Targets.type, "parent-a", ["team-a/*"])
    repo.delegate(Targets.type, "parent-b", ["team-b/*"])
    repo.delegate("parent-a", "release", ["team-a/*"])
    key_b = repo.delegate("parent-b", "release", ["team-b/*"])
    repo.signers["release"].remove(key_b)  # release is signed by parent-a's key only
    repo.add_target("team-a/x", b"trusted A", role="release")
    repo.add_target("team-b/x", b"malicious B", role="release")
    repo.publish(["release", "parent-a", "parent-b", Targets.type])
    assert client.download("team-a/x", "team-b/x") == 1
    assert client.downloaded() == {"team-a%2Fx": b"trusted A"}
    before = client.trusted()
    assert client.download("team-b/x") == 1
    assert client.trusted() == before


def test_delegation_not_in_snapshot(repo, client) -> None:
    repo.delegate(Targets.type, "ghost", ["*"])
    repo.write_role("ghost")
    repo.publish([Targets.type])
    assert client.refresh() == 0
    before = client.trusted()
    assert client.download("x") == 1
    assert client.trusted() == before


def test_delegation_cycle_terminates(repo, client) -> None:
    repo.delegate(Targets.type, "a", ["*"])
    repo.delegate("a", "b", ["*"])
    repo.delegate("b", "a", ["*"])
    repo.publish(["a", "b", Targets.type])
    assert client.download("x") == 1


@pytest.mark.parametrize("quoted", ["../escape", "a?b#c", "/abs"])
def test_unusual_role_names_stay_inside_metadata_dir(repo, client, quoted: str) -> None:
    repo.delegate(Targets.type, quoted, ["*"])
    repo.add_target("t", b"T", role=quoted)
    repo.publish([quoted, Targets.type])
    assert client.download("t") == 0
    assert all(p.parent == client.metadata_dir for p in client.metadata_dir.rglob("*.json"))
