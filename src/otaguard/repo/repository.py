"""The image repository: TUF metadata for signed firmware, on python-tuf's metadata API.

Workflow (see ``docs/repo.md``):

* :meth:`ImageRepository.create` -- root, targets, snapshot and timestamp, each
  with its own keys and threshold; consistent snapshots on.
* every change to root, targets or a delegated role is first *staged*
  (``staged/<role>.json``, the next version, no signatures);
* :meth:`ImageRepository.sign` adds signatures, one release manager at a time;
* :meth:`ImageRepository.publish` moves staged roles into ``metadata/`` only if
  *every* staged role meets its threshold (root: old and new root's), then
  re-signs snapshot and timestamp with the online keys. A role that lacks
  signatures never reaches ``metadata/``, and nothing is published half.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from securesystemslib.signer import Key, Signer
from tuf.api.metadata import (
    DelegatedRole,
    Delegations,
    Metadata,
    MetaFile,
    Root,
    Snapshot,
    SuccinctRoles,
    TargetFile,
    Targets,
    Timestamp,
)
from tuf.api.serialization.json import CanonicalJSONSerializer

from otaguard.errors import MalformedError, RejectedError, StorageError, UsageError
from otaguard.repo.config import (
    DEFAULT_EXPIRY_DAYS,
    RepoConfig,
    check_expiry_days,
    load_config,
    save_config,
)
from otaguard.repo.layout import (
    CLIENT_CAPS,
    DEFAULT_CLIENT_CAP,
    ONLINE_ROLES,
    TOP_ROLES,
    Layout,
    check_path_pattern,
    check_role_name,
    check_target_path,
    to_bytes,
)

#: Caps on what one repository may hold (hostile or mistaken input).
MAX_KEYS_PER_ROLE = 64
MAX_DELEGATIONS_PER_ROLE = 1024
MAX_PATHS_PER_DELEGATION = 64
MAX_DELEGATION_DEPTH = 8
MAX_BIN_BITS = 14
DEFAULT_BIN_PREFIX = "bins"


class SignaturesMissingError(RejectedError):
    """A staged role does not (yet) meet its signature threshold."""

    check = "threshold"


@dataclass
class SignatureStatus:
    """How far a staged role is from its threshold."""

    role: str
    version: int
    signed: int
    threshold: int
    #: For root: what each of the two roots (previous, new) still needs.
    detail: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.detail

    def describe(self) -> str:
        state = "ready" if self.ok else "needs " + "; ".join(self.detail)
        return f"{self.role} v{self.version}: {self.signed} valid signature(s), {state}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "role": self.role,
            "version": self.version,
            "signatures": self.signed,
            "threshold": self.threshold,
            "ready": self.ok,
            "needs": list(self.detail),
        }


@dataclass
class PublishResult:
    published: list[str]
    snapshot_version: int
    timestamp_version: int
    #: staged roles an interrupted publish had already published, removed from staged/
    leftovers: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "published": list(self.published),
            "snapshot_version": self.snapshot_version,
            "timestamp_version": self.timestamp_version,
            "dropped": list(self.leftovers),
        }


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC).replace(microsecond=0)


def _canonical(md: Metadata[Any]) -> bytes:
    return CanonicalJSONSerializer().serialize(md.signed)


def _check_threshold(threshold: int, keys: int, what: str) -> None:
    if keys > MAX_KEYS_PER_ROLE:
        raise UsageError(f"{what}: at most {MAX_KEYS_PER_ROLE} keys")
    if not 1 <= threshold <= keys:
        raise UsageError(f"{what}: threshold {threshold} needs between 1 and {keys} (its keys)")


class ImageRepository:
    """One repository directory (see :mod:`otaguard.repo.layout`)."""

    def __init__(self, base: str | os.PathLike[str], *, now: datetime.datetime | None = None):
        self.layout = Layout(base)
        self.layout.require()
        self.config = load_config(self.layout.config_file)
        self._now = now
        self._cache: dict[Path, Metadata[Any]] = {}

    @property
    def now(self) -> datetime.datetime:
        return self._now or utcnow()

    # -- creation ----------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        base: str | os.PathLike[str],
        *,
        root_keys: Sequence[Key],
        root_threshold: int,
        targets_keys: Sequence[Key],
        targets_threshold: int,
        snapshot_key: Key,
        timestamp_key: Key,
        online_key_specs: dict[str, str],
        expiry_days: dict[str, int] | None = None,
        now: datetime.datetime | None = None,
    ) -> ImageRepository:
        """Write config.json and stage root v1 and targets v1 (unsigned)."""
        layout = Layout(base)
        if layout.config_file.exists() or (
            layout.metadata.is_dir() and any(layout.metadata.iterdir())
        ):
            raise UsageError(f"{layout.base} already holds a repository")
        _check_threshold(root_threshold, len(root_keys), "root")
        _check_threshold(targets_threshold, len(targets_keys), "targets")
        layout.make_dirs()
        expires = {**DEFAULT_EXPIRY_DAYS, **(expiry_days or {})}
        save_config(layout.config_file, RepoConfig(expires, dict(online_key_specs)))
        repo = cls(base, now=now)
        root = Root(expires=repo.expiry(Root.type), consistent_snapshot=True)
        for role, keys, threshold in (
            (Root.type, root_keys, root_threshold),
            (Targets.type, targets_keys, targets_threshold),
            (Snapshot.type, [snapshot_key], 1),
            (Timestamp.type, [timestamp_key], 1),
        ):
            for key in keys:
                root.add_key(key, role)
            if len(root.roles[role].keyids) != len(keys):
                raise UsageError(f"the same key was given twice for {role}")
            root.roles[role].threshold = threshold
        repo.stage(Root.type, Metadata(root))
        repo.stage(Targets.type, Metadata(Targets(expires=repo.expiry(Targets.type))))
        return repo

    # -- reading -----------------------------------------------------------------------

    def expiry(self, role: str) -> datetime.datetime:
        return self.now + datetime.timedelta(days=self.config.expiry_days(role))

    def _expire_after(self, role: str, days: int | None) -> None:
        """Use ``days`` for ``role`` from now on (kept in memory; :meth:`_save_config` writes)."""
        if days is not None:
            check_expiry_days(role, days)
            self.config = RepoConfig({**self.config.expires, role: days}, self.config.online_keys)

    def _save_config(self) -> None:
        save_config(self.layout.config_file, self.config)

    def _read(self, path: Path, role: str, *, fresh: bool = False) -> Metadata[Any]:
        """Parsed metadata; ``fresh`` for a private copy the caller may modify."""
        if fresh:
            return self.layout.load(path, role)
        if path not in self._cache:
            self._cache[path] = self.layout.load(path, role)
        return self._cache[path]

    def _load(self, role: str, version: int, *, fresh: bool = False) -> Metadata[Any]:
        return self._read(self.layout.published_path(role, version), role, fresh=fresh)

    def published_root(self, *, fresh: bool = False) -> Metadata[Root] | None:
        versions = self.layout.root_versions()
        return self._load(Root.type, versions[-1], fresh=fresh) if versions else None

    def published_timestamp(self, *, fresh: bool = False) -> Metadata[Timestamp] | None:
        path = self.layout.published_path(Timestamp.type, 0)
        if not path.exists():
            return None
        return self._read(path, Timestamp.type, fresh=fresh)

    def published_snapshot(self, *, fresh: bool = False) -> Metadata[Snapshot] | None:
        timestamp = self.published_timestamp()
        if timestamp is None:
            return None
        return self._load(Snapshot.type, timestamp.signed.snapshot_meta.version, fresh=fresh)

    def published_version(self, role: str) -> int:
        """Version of ``role`` that clients see now (0: never published)."""
        if role == Root.type:
            versions = self.layout.root_versions()
            return versions[-1] if versions else 0
        if role in ONLINE_ROLES:
            md = self.published_snapshot() if role == Snapshot.type else self.published_timestamp()
            return md.signed.version if md else 0
        snapshot = self.published_snapshot()
        meta = snapshot.signed.meta.get(f"{role}.json") if snapshot else None
        return meta.version if meta else 0

    def published(self, role: str, *, fresh: bool = False) -> Metadata[Any] | None:
        if role == Root.type:
            return self.published_root(fresh=fresh)
        version = self.published_version(role)
        return self._load(role, version, fresh=fresh) if version else None

    def staged(self, role: str, *, fresh: bool = False) -> Metadata[Any] | None:
        path = self.layout.staged_path(role)
        if path not in self._cache and not path.exists():
            return None
        return self._read(path, role, fresh=fresh)

    def latest(self, role: str) -> Metadata[Any] | None:
        """The staged version if there is one, else the published one."""
        return self.staged(role) or self.published(role)

    def latest_root(self) -> Root:
        md = self.latest(Root.type)
        if md is None:
            raise MalformedError("the repository has no root metadata")
        return cast(Root, md.signed)

    def editable(self, role: str) -> Metadata[Any]:
        """The next version of ``role`` to modify: the staged one, or published + 1.

        Signatures are dropped: they would not cover the modified content.
        """
        md = self.staged(role, fresh=True)
        if md is None or self.leftover(role, md):
            md = self.published(role, fresh=True)
            if md is None:
                raise UsageError(f"no role {role!r} in this repository")
            md.signed.version = md.signed.version + 1
        md.signed.expires = self.expiry(role)
        md.signatures.clear()
        return md

    def leftover(self, role: str, md: Metadata[Any] | None = None) -> bool:
        """Whether staged ``role`` is exactly what is published at its version.

        Why: publish clears staged/ only after writing the timestamp (its commit point); a
        crash in between leaves each staged role behind, already published. Such a file is
        not a release manager's pending work, and treating it as one wedges the repository
        (a stale version, refused). A stale staged role with *other* content is still
        refused by :meth:`publish`: it may be somebody's edit, which must not be lost.
        """
        md = md or self.staged(role, fresh=True)
        if md is None or md.signed.version > self.published_version(role):
            return False
        path = self.layout.published_path(role, md.signed.version)
        if not path.exists():
            return False
        return _canonical(self._read(path, role, fresh=True)) == _canonical(md)

    def stage(self, role: str, md: Metadata[Any]) -> None:
        path = self.layout.staged_path(role)
        self._cache.pop(path, None)
        self.layout.write(path, md)

    # -- delegations -------------------------------------------------------------------

    def _children(self, role: str) -> Delegations | None:
        md = self.latest(role)
        return md.signed.delegations if md is not None else None

    def delegator_of(self, role: str) -> str:
        """Which role delegates ``role`` (root for the top-level roles)."""
        if role in TOP_ROLES:
            return Root.type
        queue, seen = [Targets.type], set[str]()
        while queue:
            current = queue.pop(0)
            if current in seen or len(seen) > MAX_DELEGATIONS_PER_ROLE * MAX_DELEGATION_DEPTH:
                continue
            seen.add(current)
            delegations = self._children(current)
            if delegations is None:
                continue
            if delegations.succinct_roles is not None:
                if delegations.succinct_roles.is_delegated_role(role):
                    return current
                continue
            roles = delegations.roles or {}
            if role in roles:
                return current
            queue.extend(roles)
        raise UsageError(f"no role delegates to {role!r}")

    def route(self, path: str) -> list[str]:
        """The roles a client walks to find ``path``; the last is where it belongs."""
        chain = [Targets.type]
        for _ in range(MAX_DELEGATION_DEPTH):
            delegations = self._children(chain[-1])
            if delegations is None:
                break
            if delegations.succinct_roles is not None:
                chain.append(delegations.succinct_roles.get_role_for_target(path))
                break
            child = next(
                (r for r in (delegations.roles or {}).values() if r.is_delegated_path(path)), None
            )
            if child is None:
                break
            chain.append(child.name)
        return chain

    def delegate(
        self,
        name: str,
        keys: Sequence[Key],
        threshold: int,
        paths: Sequence[str],
        *,
        delegator: str = Targets.type,
        terminating: bool = False,
        expiry_days: int | None = None,
    ) -> None:
        """Stage ``delegator`` with a new delegation and ``name`` v1 (no targets).

        ``expiry_days``: how long each version of ``name`` is valid (default: as targets).
        """
        check_role_name(name)
        if not paths or len(paths) > MAX_PATHS_PER_DELEGATION:
            raise UsageError(f"give 1-{MAX_PATHS_PER_DELEGATION} --path patterns")
        for pattern in paths:
            check_path_pattern(pattern)
        _check_threshold(threshold, len({k.keyid for k in keys}), name)
        if self.latest(name) is not None:
            raise UsageError(f"role {name!r} already exists")
        parent = self.editable(delegator)
        targets: Targets = parent.signed
        if targets.delegations is None:
            targets.delegations = Delegations(keys={}, roles={})
        if targets.delegations.succinct_roles is not None:
            raise UsageError(f"{delegator} delegates to hashed bins; it cannot also name roles")
        roles = targets.delegations.roles
        assert roles is not None
        if len(roles) >= MAX_DELEGATIONS_PER_ROLE:
            raise UsageError(f"{delegator} already has {MAX_DELEGATIONS_PER_ROLE} delegations")
        roles[name] = DelegatedRole(name, [], threshold, terminating, list(paths))
        for key in keys:
            targets.add_key(key, name)
        self._expire_after(name, expiry_days)
        self.stage(delegator, parent)
        self.stage(name, Metadata(Targets(expires=self.expiry(name))))
        if expiry_days is not None:
            self._save_config()

    def delegate_bins(
        self,
        count: int,
        keys: Sequence[Key],
        threshold: int = 1,
        *,
        delegator: str = Targets.type,
        prefix: str = DEFAULT_BIN_PREFIX,
        expiry_days: int | None = None,
    ) -> list[str]:
        """Stage ``delegator`` delegating every path to ``count`` hashed bins, and each bin v1.

        ``expiry_days``: how long each version of a bin is valid (default: as targets).
        """
        bits = count.bit_length() - 1
        if count < 2 or count != 1 << bits or bits > MAX_BIN_BITS:
            raise UsageError(f"--hashed-bins must be a power of two from 2 to {1 << MAX_BIN_BITS}")
        check_role_name(prefix)
        _check_threshold(threshold, len({k.keyid for k in keys}), prefix)
        parent = self.editable(delegator)
        targets: Targets = parent.signed
        if targets.delegations is not None and (
            targets.delegations.roles or targets.delegations.succinct_roles
        ):
            raise UsageError(f"{delegator} already delegates; hashed bins need a role of their own")
        succinct = SuccinctRoles([], threshold, bits, prefix)
        targets.delegations = Delegations(keys={}, succinct_roles=succinct)
        for key in keys:
            targets.add_key(key)
        names = list(succinct.get_roles())
        for name in names:
            if self.latest(name) is not None:
                raise UsageError(f"role {name!r} already exists")
        self._expire_after(prefix, expiry_days)
        self.stage(delegator, parent)
        expires = self.expiry(prefix)
        for name in names:
            self.stage(name, Metadata(Targets(expires=expires)))
        if expiry_days is not None:
            self._save_config()
        return names

    # -- targets -----------------------------------------------------------------------

    def add_targets(
        self, items: Sequence[TargetFile], *, role: str | None = None
    ) -> dict[str, list[str]]:
        """Record ``items`` in the role each belongs to (or ``role``); stage those roles."""
        by_role: dict[str, list[TargetFile]] = {}
        for info in items:
            check_target_path(info.path)
            chain = self.route(info.path)
            if role is not None and role not in chain:
                raise UsageError(
                    f"{info.path} cannot go in {role}: clients look for it in {chain[-1]}"
                )
            by_role.setdefault(role or chain[-1], []).append(info)
        for name, infos in by_role.items():
            md = self.editable(name)
            targets: dict[str, TargetFile] = md.signed.targets
            for info in infos:
                old = targets.get(info.path)
                if old is not None and (old.hashes, old.length) != (info.hashes, info.length):
                    raise RejectedError(
                        f"{info.path} is already recorded in {name} with other content; "
                        "a released name never changes its bytes (use a new name)"
                    )
                targets[info.path] = info
            self.stage(name, md)
        return {name: [i.path for i in infos] for name, infos in by_role.items()}

    def remove_target(self, path: str) -> str:
        """Stage ``path``'s removal from the role that records it; returns that role."""
        for name in reversed(self.route(path)):
            md = self.latest(name)
            if md is not None and path in md.signed.targets:
                md = self.editable(name)
                del md.signed.targets[path]
                self.stage(name, md)
                return name
        raise UsageError(f"no target {path!r}")

    # -- signatures --------------------------------------------------------------------

    def allowed_keyids(self, role: str) -> set[str]:
        if role == Root.type:
            ids = set(self.latest_root().roles[Root.type].keyids)
            previous = self.published_root()
            if previous is not None:
                ids |= set(previous.signed.roles[Root.type].keyids)
            return ids
        delegator = self.delegator_of(role)
        if delegator == Root.type:
            return set(self.latest_root().roles[role].keyids)
        parent = self.latest(delegator)
        assert parent is not None
        return set(parent.signed.get_delegated_role(role).keyids)

    def status(self, role: str, md: Metadata[Any] | None = None) -> SignatureStatus:
        md = md or self.staged(role)
        if md is None:
            raise UsageError(f"nothing staged for {role!r}")
        payload = _canonical(md)
        if role == Root.type:
            new: Root = md.signed
            previous = self.published_root()
            try:
                result = new.get_root_verification_result(
                    previous.signed if previous else None, payload, md.signatures
                )
            except ValueError as exc:
                raise RejectedError(f"staged root is stale: {exc}") from exc
            detail = []
            if previous is not None and not result.first.verified:
                detail.append(
                    f"{result.first.missing} more of the current root's keys "
                    f"(threshold {result.first.threshold})"
                )
            if not result.second.verified:
                detail.append(
                    f"{result.second.missing} more of the new root's keys "
                    f"(threshold {result.second.threshold})"
                )
            threshold = max(result.first.threshold, result.second.threshold)
            return SignatureStatus(role, new.version, len(result.signed), threshold, detail)
        delegator = self.delegator_of(role)
        parent: Root | Targets = (
            self.latest_root() if delegator == Root.type else self.latest(delegator).signed  # type: ignore[union-attr]
        )
        vresult = parent.get_verification_result(role, payload, md.signatures)
        detail = [] if vresult.verified else [f"{vresult.missing} more of {role}'s keys"]
        return SignatureStatus(
            role, md.signed.version, len(vresult.signed), vresult.threshold, detail
        )

    def staged_statuses(self) -> list[tuple[str, SignatureStatus | None]]:
        """Each staged role and how far it is from its threshold (None: already published)."""
        return [
            (role, None if self.leftover(role) else self.status(role))
            for role in self.layout.staged_roles()
        ]

    def sign(self, role: str, signers: Sequence[Signer]) -> SignatureStatus:
        """Add each signer's signature to the staged ``role``; refuse keys not of that role."""
        md = self.staged(role, fresh=True)
        if md is None:
            raise UsageError(f"nothing staged for {role!r}")
        allowed = self.allowed_keyids(role)
        for signer in signers:
            keyid = signer.public_key.keyid
            if keyid not in allowed:
                raise RejectedError(f"key {keyid[:16]} is not a key of role {role}")
            md.sign(signer, append=True)
        self.stage(role, md)
        return self.status(role, md)

    def signable_roles(self, signers: Sequence[Signer]) -> list[str]:
        """Staged roles that at least one of ``signers`` may sign."""
        ids = {s.public_key.keyid for s in signers}
        return [r for r in self.layout.staged_roles() if ids & self.allowed_keyids(r)]

    # -- key rotation ------------------------------------------------------------------

    def resolve_keyid(self, keyids: Iterable[str], prefix: str) -> str:
        prefix = prefix.lower()
        matches = [k for k in keyids if k.startswith(prefix)]
        if len(prefix) < 8 or len(matches) != 1:
            raise UsageError(f"--remove-key {prefix[:64]}: not one key of the role (8+ hex digits)")
        return matches[0]

    def rotate(
        self,
        role: str,
        *,
        add: Sequence[Key] = (),
        remove: Sequence[str] = (),
        threshold: int | None = None,
    ) -> str:
        """Stage a new delegator version with ``role``'s keys changed; return the delegator."""
        delegator = self.delegator_of(role)
        md = self.editable(delegator)
        signed: Root | Targets = md.signed
        if isinstance(signed, Root):
            delegated = signed.roles[role]
        elif signed.delegations is not None and signed.delegations.succinct_roles is not None:
            delegated = signed.delegations.succinct_roles
        else:
            delegated = signed.get_delegated_role(role)
        for prefix in remove:
            keyid = self.resolve_keyid(delegated.keyids, prefix)
            if isinstance(signed, Root):
                signed.revoke_key(keyid, role)
            else:
                signed.revoke_key(keyid, None if isinstance(delegated, SuccinctRoles) else role)
        for key in add:
            if isinstance(signed, Root):
                signed.add_key(key, role)
            else:
                signed.add_key(key, None if isinstance(delegated, SuccinctRoles) else role)
        if threshold is not None:
            delegated.threshold = threshold
        _check_threshold(delegated.threshold, len(delegated.keyids), role)
        self.stage(delegator, md)
        return delegator

    # -- publishing --------------------------------------------------------------------

    def _check_publishable(self, role: str, md: Metadata[Any]) -> None:
        published = self.published_version(role)
        if md.signed.version <= published:
            raise RejectedError(
                f"staged {role} v{md.signed.version} is stale: v{published} is already "
                f"published (delete staged/{role}.json and stage again)"
            )
        if md.signed.is_expired(self.now):
            raise RejectedError(f"staged {role} v{md.signed.version} has expired")
        size = len(to_bytes(md))
        cap = CLIENT_CAPS.get(role, DEFAULT_CLIENT_CAP)
        if size > cap:
            raise RejectedError(
                f"{role} would be {size} bytes, over the {cap}-byte cap of clients: "
                "delegate to hashed bins (repo delegate --hashed-bins)"
            )

    @staticmethod
    def _online_ok(root: Root, role: str, md: Metadata[Any]) -> None:
        if not root.get_verification_result(role, _canonical(md), md.signatures).verified:
            raise UsageError(
                f"the {role} key given does not meet root's {role} threshold "
                f"(rotated? pass --{role}-key)"
            )

    def publish(
        self, snapshot_signers: Sequence[Signer], timestamp_signers: Sequence[Signer]
    ) -> PublishResult:
        """Publish every staged role (all or nothing), then new snapshot and timestamp."""
        staged = {role: self.staged(role) for role in self.layout.staged_roles()}
        leftovers = [role for role, md in staged.items() if self.leftover(role, md)]
        for role in leftovers:
            del staged[role]
        missing = []
        for role, md in staged.items():
            assert md is not None
            status = self.status(role, md)
            if not status.ok:
                missing.append(status.describe())
        if missing:
            raise SignaturesMissingError("nothing published: " + " | ".join(missing))
        for role, md in staged.items():
            assert md is not None
            self._check_publishable(role, md)
        root = self.latest_root()

        previous = self.published_snapshot(fresh=True)
        snapshot_md = previous or Metadata(Snapshot(expires=self.expiry(Snapshot.type)))
        snapshot: Snapshot = snapshot_md.signed
        changed = [r for r in staged if r != Root.type]
        for role in changed:
            snapshot.meta[f"{role}.json"] = MetaFile(staged[role].signed.version)  # type: ignore[union-attr]
        self._check_delegations_listed(staged, snapshot)
        half = (self.expiry(Snapshot.type) - self.now) / 2
        renew = previous is None or bool(staged) or snapshot.expires - self.now < half
        if renew:
            snapshot.version += 0 if previous is None else 1
            snapshot.expires = self.expiry(Snapshot.type)
            self._sign_online(snapshot_md, snapshot_signers)
            self._online_ok(root, Snapshot.type, snapshot_md)
        snapshot_bytes = to_bytes(snapshot_md)

        previous_ts = self.published_timestamp(fresh=True)
        timestamp_md = previous_ts or Metadata(Timestamp())
        timestamp: Timestamp = timestamp_md.signed
        timestamp.version += 0 if previous_ts is None else 1
        timestamp.expires = self.expiry(Timestamp.type)
        timestamp.snapshot_meta = MetaFile.from_data(snapshot.version, snapshot_bytes, ["sha256"])
        self._sign_online(timestamp_md, timestamp_signers)
        self._online_ok(root, Timestamp.type, timestamp_md)

        # Write order: targets roles, root, snapshot, then timestamp (what clients start from).
        for role in changed:
            md = staged[role]
            assert md is not None
            self.layout.write(self.layout.published_path(role, md.signed.version), md)
        if Root.type in staged:
            md = staged[Root.type]
            assert md is not None
            self.layout.write(self.layout.published_path(Root.type, md.signed.version), md)
        if renew:
            self.layout.write(
                self.layout.published_path(Snapshot.type, snapshot.version), snapshot_md
            )
        self.layout.write(self.layout.published_path(Timestamp.type, 0), timestamp_md)
        for role in [*staged, *leftovers]:
            self.layout.staged_path(role).unlink(missing_ok=True)
        self._cache.clear()
        return PublishResult(sorted(staged), snapshot.version, timestamp.version, leftovers)

    @staticmethod
    def _sign_online(md: Metadata[Any], signers: Sequence[Signer]) -> None:
        md.signatures.clear()
        for signer in signers:
            md.sign(signer, append=True)

    def _check_delegations_listed(
        self, staged: dict[str, Metadata[Any] | None], snapshot: Snapshot
    ) -> None:
        for role, md in staged.items():
            if md is None or role == Root.type:
                continue
            delegations = md.signed.delegations
            if delegations is None:
                continue
            names: Iterable[str] = (
                delegations.succinct_roles.get_roles()
                if delegations.succinct_roles is not None
                else (delegations.roles or {})
            )
            absent = [n for n in names if f"{n}.json" not in snapshot.meta]
            if absent:
                raise RejectedError(
                    f"{role} delegates to {absent[0]!r}, which is neither published nor staged"
                )


@contextlib.contextmanager
def locked(base: str | os.PathLike[str]) -> Iterator[None]:
    """Serialise commands that change one repository (two release managers at once)."""
    path = os.path.join(base, ".lock")
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise StorageError(f"cannot lock {base}: {exc.strerror or exc}") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
