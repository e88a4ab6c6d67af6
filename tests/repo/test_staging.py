"""``otaguard.repo.staging`` called as a library (the fleet server's way): no CLI here."""

from __future__ import annotations

from pathlib import Path

import pytest

from otaguard.errors import RejectedError, UsageError
from otaguard.repo.bootstrap import RoleKeys, init_repository, load_signers
from otaguard.repo.repository import ImageRepository, SignatureStatus
from otaguard.repo.staging import (
    sign_staged,
    stage_delegation,
    stage_removal,
    stage_rotation,
    stage_target,
)
from repo.helpers_repository import Keys, image_file


@pytest.fixture
def repo(tmp_path: Path) -> tuple[Path, Keys]:
    keys = Keys(tmp_path / "keys")
    directory = tmp_path / "repo"
    init_repository(
        directory,
        root=RoleKeys.load([keys.priv("root")], threshold=1),
        targets=RoleKeys.load([keys.priv("targets")], threshold=1),
    )
    return directory, keys


def test_a_target_is_verified_then_staged_and_signed(repo: tuple[Path, Keys]) -> None:
    directory, keys = repo
    image = image_file(directory.parent / "fw-1.5.img", keys.make("release"), version="1.5.0")
    staged = stage_target(directory, str(image), trusted_keys=[keys.pub("release")])
    assert (staged.name, staged.role) == ("fw-1.5.img", "targets")
    assert staged.info.custom["version"] == "1.5.0"
    assert staged.describe().startswith("staged fw-1.5.img in targets:")
    seen: list[SignatureStatus] = []
    statuses = sign_staged(directory, load_signers([keys.priv("targets")]), signed=seen.append)
    assert [s.role for s in statuses] == ["targets"] and statuses[0].ok and seen == statuses
    assert stage_removal(directory, "fw-1.5.img") == ("fw-1.5.img", "targets")


def test_stage_target_refusals(repo: tuple[Path, Keys]) -> None:
    directory, keys = repo
    image = image_file(directory.parent / "fw.img", keys.make("release"))
    with pytest.raises(UsageError, match="more than the 1 trusted keys"):
        stage_target(directory, str(image), trusted_keys=[keys.pub("release")], threshold=2)
    with pytest.raises(RejectedError):  # signed by another key than the one trusted
        stage_target(directory, str(image), trusted_keys=[keys.pub("other")])
    with pytest.raises(UsageError, match="cannot go in"):
        stage_target(directory, str(image), role="no-such-role")
    assert ImageRepository(directory).staged_statuses() == []  # nothing staged by a refusal


def test_signing_with_keys_no_staged_role_takes_is_refused(repo: tuple[Path, Keys]) -> None:
    directory, keys = repo
    with pytest.raises(UsageError, match="nothing staged"):
        sign_staged(directory, load_signers([keys.priv("stranger")]))


def test_delegation_needs_one_way_of_naming_the_roles(repo: tuple[Path, Keys]) -> None:
    directory, keys = repo
    with pytest.raises(UsageError, match="takes no --name"):
        stage_delegation(directory, [keys.pub("eu")], 1, name="eu", hashed_bins=4)
    with pytest.raises(UsageError, match="give --name and --path"):
        stage_delegation(directory, [keys.pub("eu")], 1, name="eu")
    assert stage_delegation(directory, [keys.pub("eu")], 1, name="eu", paths=["eu/*"]) == ["eu"]
    bins = stage_delegation(directory, [keys.pub("bins")], 1, hashed_bins=4, delegator="eu")
    assert len(bins) == 4


def test_rotation_stages_the_delegator_and_signs_it_when_keys_are_given(
    repo: tuple[Path, Keys],
) -> None:
    directory, keys = repo
    with pytest.raises(UsageError, match="nothing to change"):
        stage_rotation(directory, "targets")
    delegator, status = stage_rotation(
        directory, "targets", add=[keys.pub("targets-2")], keys=[keys.priv("root")]
    )
    assert delegator == "root" and status is not None and status.role == "root"
