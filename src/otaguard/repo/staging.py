"""Staging changes in an image repository directory, each under the repository's lock.

Why a module: which role a target goes in, what a signature run signs, how a
delegation or a rotation is staged are the repository's decisions; ``otaguard repo``
parses and prints, and the fleet server or a release script stages by the same rules.
Every function takes the directory's lock (``repository.locked``) for its whole run,
so two release managers working at once never lose each other's change.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from tuf.api.metadata import TargetFile

from otaguard.crypto.loader import load_public_key_file
from otaguard.errors import UsageError
from otaguard.repo.bootstrap import closing, load_keys, load_signers
from otaguard.repo.layout import check_target_path
from otaguard.repo.repository import ImageRepository, SignatureStatus, locked
from otaguard.repo.signing import RepoSigner

Path = str | os.PathLike[str]


@dataclass(frozen=True)
class StagedTarget:
    name: str
    role: str
    info: TargetFile

    def describe(self) -> str:
        custom = self.info.custom
        replaces = custom.get("compatible_with")
        return (
            f"staged {self.name} in {self.role}: {self.info.length} bytes, sha256 "
            f"{self.info.hashes['sha256']}, version {custom['version']}, "
            f"hardware {','.join(custom['hardware_ids'])}"
            + (f", replaces {','.join(replaces)}" if replaces else "")
        )


def stage_target(
    directory: Path,
    image: str,
    *,
    name: str | None = None,
    role: str | None = None,
    trusted_keys: Sequence[str] = (),
    threshold: int = 1,
    max_size: int | None = None,
    compatible_with: Sequence[str] = (),
) -> StagedTarget:
    """Verify ``image`` (with ``trusted_keys`` if given) and stage it as target ``name``.

    ``name`` defaults to the file's name; ``role``, if given, must be one the clients
    look in for that name (else they would never find it). ``compatible_with``: the
    installed versions it may replace (:mod:`otaguard.repo.compat`).
    """
    from otaguard.repo.target_info import MAX_IMAGE_SIZE, store_target

    target = check_target_path(name or os.path.basename(image))
    keys = [load_public_key_file(p) for p in trusted_keys]
    if threshold > len(keys) > 0:
        raise UsageError(f"--threshold {threshold} is more than the {len(keys)} trusted keys")
    with locked(directory):
        repository = ImageRepository(directory)
        chain = repository.route(target)
        if role is not None and role not in chain:
            raise UsageError(f"{target} cannot go in {role}: clients look for it in {chain[-1]}")
        info = store_target(
            image,
            target,
            repository.layout.targets,
            keys,
            threshold=threshold,
            max_size=max_size or MAX_IMAGE_SIZE,
            compatible_with=compatible_with,
        )
        placed = repository.add_targets([info], role=role)
    return StagedTarget(target, next(iter(placed)), info)


def stage_removal(directory: Path, name: str) -> tuple[str, str]:
    """Stage the removal of target ``name``; (the target path, the role it leaves)."""
    target = check_target_path(name)
    with locked(directory):
        return target, ImageRepository(directory).remove_target(target)


def sign_staged(
    directory: Path,
    signers: Sequence[RepoSigner],
    roles: Sequence[str] = (),
    *,
    signed: Callable[[SignatureStatus], None] = lambda status: None,
) -> list[SignatureStatus]:
    """Sign staged ``roles`` (default: every staged role these keys may sign).

    ``signed`` is told of each role as soon as it is signed (a later failure does not
    hide the signatures already made).

    Each role is signed with the given keys it lists (with all of them if it lists none,
    so that a wrong key is reported by the role's status rather than skipped silently).
    """
    with locked(directory):
        repository = ImageRepository(directory)
        targets = list(roles) or repository.signable_roles(signers)
        if not targets:
            raise UsageError("nothing staged that these keys may sign")
        done = []
        for role in targets:
            mine = [s for s in signers if s.keyid in repository.allowed_keyids(role)]
            done.append(repository.sign(role, mine or signers))
            signed(done[-1])
        return done


def stage_delegation(
    directory: Path,
    keys: Sequence[str],
    threshold: int,
    *,
    name: str | None = None,
    paths: Sequence[str] = (),
    hashed_bins: int | None = None,
    delegator: str = "targets",
    terminating: bool = False,
    expiry_days: int | None = None,
) -> list[str]:
    """Stage a delegation by ``name`` and ``paths``, or to ``hashed_bins``; the new roles."""
    public = [a.key for a in load_keys(keys)]
    with locked(directory):
        repository = ImageRepository(directory)
        if hashed_bins is not None:
            if name or paths:
                raise UsageError("--hashed-bins takes no --name or --path")
            return repository.delegate_bins(
                hashed_bins, public, threshold, delegator=delegator, expiry_days=expiry_days
            )
        if not name or not paths:
            raise UsageError("give --name and --path (or --hashed-bins)")
        repository.delegate(
            name,
            public,
            threshold,
            paths,
            delegator=delegator,
            terminating=terminating,
            expiry_days=expiry_days,
        )
        return [name]


def stage_rotation(
    directory: Path,
    role: str,
    *,
    add: Sequence[str] = (),
    remove: Sequence[str] = (),
    threshold: int | None = None,
    keys: Sequence[str] = (),
    passphrase: bytes | None = None,
) -> tuple[str, SignatureStatus | None]:
    """Stage ``role``'s new keys or threshold in its delegator, signed with ``keys`` if any.

    Returns the delegator staged and, if signed, its signature status.
    """
    if not (add or remove or threshold):
        raise UsageError("nothing to change: give --add-key, --remove-key or --threshold")
    public = [a.key for a in load_keys(add)]
    signers = load_signers(keys, passphrase)
    with closing(signers), locked(directory):
        repository = ImageRepository(directory)
        delegator = repository.rotate(role, add=public, remove=remove, threshold=threshold)
        status = repository.sign(delegator, signers) if signers else None
    return delegator, status
