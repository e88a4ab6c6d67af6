"""The release's own declaration of what it may replace (``repo add-target --compatible-with``):
recorded in the signed targets metadata, read back failing closed."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tuf.api.metadata import TargetFile

from helpers import CliResult, assert_one_line
from otaguard.errors import MalformedError, UsageError
from otaguard.repo import compat
from repo.helpers_repository import Keys, image_file

Cli = Callable[..., CliResult]


def _target(custom: object) -> TargetFile:
    return TargetFile(1, {"sha256": "00" * 32}, "hw/2.0.0.img", {"custom": custom})


def test_declared_versions_allow_exactly_those() -> None:
    target = _target({"version": "2.0.0", compat.FIELD: ["1.0.0", "1.1.0"]})
    assert compat.declared(target) == frozenset({"1.0.0", "1.1.0"})
    assert compat.refusal(target, "1.1.0") is None
    assert compat.refusal(target, "0.9.0") == "hw/2.0.0.img may replace 1.0.0, 1.1.0, not 0.9.0"
    assert compat.refusal(target, None) == "hw/2.0.0.img may replace 1.0.0, 1.1.0, not no image"


def test_no_declaration_refuses_nothing() -> None:
    for custom in ({"version": "2.0.0"}, None, "text"):
        assert compat.declared(_target(custom)) is None
        assert compat.refusal(_target(custom), "0.0.1") is None


@pytest.mark.parametrize(
    "value",
    [[], "1.0.0", [1], ["1.0.0", None], ["../x"], [""], ["v" * 65], ["1.0.0"] * 257, {}],
)
def test_a_malformed_declaration_is_refused_never_ignored(value: object) -> None:
    with pytest.raises(MalformedError, match="compatible_with is not a list of versions"):
        compat.refusal(_target({compat.FIELD: value}), "1.0.0")


@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=70),
                    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(), c, max_size=4),
                    max_leaves=12))  # fmt: skip
def test_any_json_value_is_a_declaration_or_malformed(value: Any) -> None:
    target = _target({compat.FIELD: value})
    try:
        allowed = compat.declared(target)
    except MalformedError:
        return
    assert allowed is not None and allowed == set(value)
    for version in value:
        assert compat.refusal(target, version) is None


def test_check_versions_sorts_dedups_and_refuses_bad_input() -> None:
    assert compat.check_versions(["1.1.0", "1.0.0", "1.1.0"]) == ["1.0.0", "1.1.0"]
    assert compat.check_versions([]) == []
    with pytest.raises(UsageError, match="not a version"):
        compat.check_versions(["1.0 .0"])
    with pytest.raises(UsageError, match="at most 256"):
        compat.check_versions([f"1.0.{i}" for i in range(257)])


def test_add_target_records_the_declaration_in_signed_targets(cli: Cli, tmp_path: Path) -> None:
    keys = Keys(tmp_path / "keys")
    repo = tmp_path / "repo"
    assert cli("repo", "init", repo).code == 0
    image = image_file(tmp_path / "fw-2.img", keys.make("release"), version="2.0.0")
    added = cli("repo", "add-target", repo, image, "--name", "hw/2.0.0.img",
                "--trusted-key", keys.pub("release"),
                "--compatible-with", "1.1.0", "--compatible-with", "1.0.0")  # fmt: skip
    assert added.code == 0, added.err
    assert added.out.rstrip().endswith("replaces 1.0.0,1.1.0")
    staged = json.loads((repo / "staged" / "targets.json").read_text())
    custom = staged["signed"]["targets"]["hw/2.0.0.img"]["custom"]
    assert custom["compatible_with"] == ["1.0.0", "1.1.0"]
    assert custom["version"] == "2.0.0"  # the rest still from the verified image


def test_add_target_refuses_a_bad_version_in_one_line_and_stages_nothing(
    cli: Cli, tmp_path: Path
) -> None:
    keys = Keys(tmp_path / "keys")
    repo = tmp_path / "repo"
    assert cli("repo", "init", repo).code == 0
    image = image_file(tmp_path / "fw-2.img", keys.make("release"))
    refused = cli("repo", "add-target", repo, image, "--trusted-key", keys.pub("release"),
                  "--compatible-with", "1.0.0;rm")  # fmt: skip
    assert refused.code == 2
    assert_one_line(refused.err)
    assert "--compatible-with" in refused.err
    assert not (repo / "staged" / "targets.json").exists()
    assert not list((repo / "targets").rglob("*.img"))
