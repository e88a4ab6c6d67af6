"""``otaguard repo`` as a careless user drives it: failed inits, typos, hand edits, --json."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from helpers import CliResult, assert_one_line
from repo.helpers_repository import Keys

Cli = Callable[..., CliResult]


def _entries(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir())


@pytest.mark.parametrize(
    "bad",
    [
        ["--snapshot-key", "GARBAGE"],  # an online key file that holds no key
        ["--timestamp-key", "MISSING"],
        ["--targets-threshold", "2"],  # one generated key cannot meet 2
    ],
)
def test_failed_init_leaves_nothing_and_warns_of_nothing(
    cli: Cli, tmp_path: Path, bad: list[str]
) -> None:
    """Before, these printed 'move your offline keys' and left a half-made repository."""
    (tmp_path / "garbage.pem").write_bytes(b"not a key")
    bad = [
        {"GARBAGE": str(tmp_path / "garbage.pem"), "MISSING": str(tmp_path / "missing.pem")}.get(
            a, a
        )
        for a in bad
    ]
    parent = tmp_path / "parent"
    parent.mkdir()
    result = cli("repo", "init", parent / "repo", *bad)
    assert result.code == 2, result.err
    assert_one_line(result.err)
    assert "warning" not in result.err and "move them" not in result.err
    assert result.out == ""
    assert _entries(parent) == []
    ok = cli("repo", "init", parent / "repo")
    assert ok.code == 0 and "move them off this machine" in ok.err
    assert (parent / "repo" / "offline-keys" / "root.pem").is_file()


@pytest.mark.parametrize(
    "item", ["bogus=5", "eu=30", "root=0", "root=3661", "root=²", "root=9" * 50]
)
def test_init_expires_refuses_unknown_roles_and_bad_days(
    cli: Cli, tmp_path: Path, item: str
) -> None:
    result = cli("repo", "init", tmp_path / "repo", "--expires", item)
    assert result.code == 2, result.err
    assert_one_line(result.err)
    assert not (tmp_path / "repo").exists()


def test_init_refuses_a_non_empty_directory(cli: Cli, tmp_path: Path) -> None:
    (tmp_path / "repo").mkdir()
    (tmp_path / "repo" / "notes.txt").write_text("mine")
    result = cli("repo", "init", tmp_path / "repo")
    assert result.code == 2 and "not empty" in result.err
    assert _entries(tmp_path / "repo") == ["notes.txt"]


@pytest.fixture
def repo_dir(cli: Cli, tmp_path: Path) -> Path:
    assert cli("repo", "init", tmp_path / "repo").code == 0
    return tmp_path / "repo"


BAD_CONFIGS = {
    "online_keys a list": {"online_keys": ["online-keys/snapshot.pem"]},
    "online key a number": {"online_keys": {"snapshot": 5, "timestamp": "x"}},
    "online key for another role": {"online_keys": {"director": "x.pem"}},
    "expires a list": {"expires": [1, 2]},
    "expiry true": {"expires": {"root": True}},
    "expiry a string": {"expires": {"timestamp": "1"}},
    "expiry out of range": {"expires": {"snapshot": 0}},
    "expiry for a bad role name": {"expires": {"../x": 3}},
    "unknown field": {"expire": {"root": 3}},
    "not an object": ["expires"],
}


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_hand_edited_config_is_a_clear_error(cli: Cli, repo_dir: Path, case: str) -> None:
    """Before: AttributeError (exit 3) halfway through publish for ``online_keys`` as a list."""
    config = repo_dir / "config.json"
    good = json.loads(config.read_bytes())
    bad = BAD_CONFIGS[case]
    config.write_text(json.dumps({**good, **bad} if isinstance(bad, dict) else bad))
    before = _entries(repo_dir / "metadata")
    for command in ("publish", "status"):
        result = cli("repo", command, repo_dir)
        assert result.code == 2, (command, result.err)
        assert_one_line(result.err)
        assert "config.json" in result.err and "internal error" not in result.err
    assert _entries(repo_dir / "metadata") == before


def test_config_nested_too_deep_or_not_json(cli: Cli, repo_dir: Path) -> None:
    config = repo_dir / "config.json"
    for text in ("[" * 30_000 + "]" * 30_000, "{not json", "\xff\xfe"):
        config.write_bytes(text.encode("latin-1"))
        result = cli("repo", "publish", repo_dir)
        assert result.code == 2, result.err
        assert "is not JSON" in result.err
        assert_one_line(result.err)


def test_status_and_publish_json(cli: Cli, repo_dir: Path, tmp_path: Path) -> None:
    keys = Keys(tmp_path / "keys")
    delegate = ["--name", "eu", "--path", "eu/*", "--key", keys.pub("eu")]
    assert cli("repo", "delegate", repo_dir, *delegate).code == 0
    status = cli("repo", "status", repo_dir, "--json")
    assert status.code == 0
    doc = status.json
    assert doc["published"] == {"root": 1, "targets": 1, "snapshot": 1, "timestamp": 1}
    assert doc["ready"] is False
    by_role = {entry["role"]: entry for entry in doc["staged"]}
    assert by_role["eu"] == {
        "role": "eu",
        "version": 1,
        "signatures": 0,
        "threshold": 1,
        "ready": False,
        "needs": ["1 more of eu's keys"],
        "already_published": False,
    }
    assert by_role["targets"]["version"] == 2
    signing = ["--key", str(repo_dir / "offline-keys" / "targets.pem"), "--key", keys.priv("eu")]
    assert cli("repo", "sign", repo_dir, *signing).code == 0
    published = cli("repo", "publish", repo_dir, "--json")
    assert published.code == 0, published.err
    assert published.json == {
        "published": ["eu", "targets"],
        "snapshot_version": 2,
        "timestamp_version": 2,
        "dropped": [],
    }
    assert cli("repo", "status", repo_dir, "--json").json["staged"] == []
    renewed = cli("repo", "publish", repo_dir, "--json").json
    assert renewed["published"] == [] and renewed["timestamp_version"] == 3


def test_delegate_expires(cli: Cli, repo_dir: Path, tmp_path: Path) -> None:
    """A delegated role's expiry is set where the role is made (init only knows the four)."""
    from tuf.api.metadata import Metadata

    keys = Keys(tmp_path / "keys")
    base = ["repo", "delegate", repo_dir, "--key", keys.pub("eu")]
    assert cli(*base, "--name", "eu", "--path", "eu/*", "--expires", "0").code == 2
    assert cli(*base, "--name", "eu", "--path", "eu/*", "--expires", "30").code == 0
    assert json.loads((repo_dir / "config.json").read_bytes())["expires"]["eu"] == 30
    staged = Metadata.from_bytes((repo_dir / "staged" / "eu.json").read_bytes()).signed
    targets = Metadata.from_bytes((repo_dir / "staged" / "targets.json").read_bytes()).signed
    assert round((targets.expires - staged.expires).total_seconds() / 86400) == 90 - 30
