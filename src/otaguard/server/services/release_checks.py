"""Every check on an uploaded release, before anything is written: pure, bytes and state in.

The release managers sign roots, ``targets`` and delegated roles offline; the
server must accept only what a TUF client would accept, *and* what it can serve
and sign for. Checks, in order (each refusal names its check, answered 422):

1. every file parses as TUF metadata of the right type (``malformed``);
2. roots: versions already published must be byte-for-byte what is published,
   new ones consecutive from the published one (from 1 on the first upload),
   each signed by the threshold of the previous root and of itself (``unsigned``
   when no trusted key signed, ``threshold`` when too few did; ``root-chain``
   for a gap), the newest unexpired (``expired``), with consistent snapshots
   (``inconsistent``) and the server's own keys, alone, as its snapshot and
   timestamp keys (``online-keys``: else the server could not sign for it, or
   someone else could);
3. roles: a version below the published one, or the published version with
   other content, is a rollback (``rollback``); a changed role must not have
   expired (``expired``);
4. the delegation tree from ``targets`` is complete (every delegated role exists,
   every uploaded role is delegated: ``inconsistent``) and every role in it is
   signed by the threshold of its delegator's keys (``unsigned``, ``threshold``);
5. every target of a changed role has an uploaded image of its length and with
   every hash it names (``missing-image``, ``image-length``, ``image-hash``), and a
   target already published keeps its bytes (``target-changed``).

python-tuf does the signature, threshold and expiry arithmetic
(``Root.get_root_verification_result``, ``get_verification_result``,
``is_expired``); this module only decides what to ask it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuf.api.metadata import Metadata, Root, Snapshot, TargetFile, Targets, Timestamp
from tuf.api.serialization import DeserializationError

from otaguard.errors import UsageError
from otaguard.repo.layout import TOP_ROLES, check_role_name, check_target_path
from otaguard.server.errors import ApiError

MAX_DELEGATED = 20_000


def refuse(check: str, detail: str) -> ApiError:
    return ApiError(422, check, detail)


@dataclass
class PublishedState:
    """What the server's repository serves now (empty before the first release)."""

    root: Metadata[Root] | None
    roles: dict[str, Metadata[Targets]]  # every targets role of the current snapshot

    @property
    def root_version(self) -> int:
        return self.root.signed.version if self.root else 0


def _parse(data: bytes, kind: type[Root] | type[Targets], what: str) -> Metadata[Any]:
    try:
        md: Metadata[Any] = Metadata.from_bytes(data)
    except (DeserializationError, ValueError, TypeError) as exc:
        raise refuse("malformed", f"{what} is not TUF metadata: {exc}") from None
    if not isinstance(md.signed, kind):
        raise refuse("malformed", f"{what} is {md.signed.type} metadata, not {kind.type}")
    return md


def _same(a: Metadata[Any], b: Metadata[Any]) -> bool:
    return a.signed_bytes == b.signed_bytes


def _signature_refusal(what: str, signed: int, threshold: int) -> ApiError:
    if signed == 0:
        return refuse("unsigned", f"{what} carries no signature by a key it must be signed with")
    return refuse("threshold", f"{what}: {signed} valid signature(s), threshold {threshold}")


def check_roots(
    uploaded: Sequence[bytes],
    published: Metadata[Root] | None,
    *,
    now: dt.datetime,
    online_keyids: Mapping[str, str],
    published_root: Callable[[int], Metadata[Root] | None],
) -> tuple[list[Metadata[Root]], Root]:
    """Step 2: the new roots to publish, in order, and the root in force after them."""
    roots = sorted(
        (_parse(data, Root, f"root #{i + 1}") for i, data in enumerate(uploaded)),
        key=lambda md: md.signed.version,
    )
    published_version = published.signed.version if published is not None else 0
    trusted = published
    seen: dict[int, Metadata[Root]] = {}
    new: list[Metadata[Root]] = []
    for md in roots:
        version = md.signed.version
        if version in seen:
            if not _same(md, seen[version]):
                raise refuse("root-chain", f"root v{version} uploaded twice, differently")
            continue
        seen[version] = md
        if version <= published_version:
            old = published_root(version)
            if old is None or not _same(md, old):
                raise refuse("rollback", f"root v{version} differs from the published v{version}")
            continue  # already published, served as it was
        expected = trusted.signed.version + 1 if trusted is not None else 1
        if version != expected:
            raise refuse("root-chain", f"root v{version} uploaded, v{expected} expected next")
        result = md.signed.get_root_verification_result(
            trusted.signed if trusted is not None else None, md.signed_bytes, md.signatures
        )
        if not result.verified:
            part = result.second if not result.second.verified else result.first
            raise _signature_refusal(f"root v{version}", len(part.signed), part.threshold)
        new.append(md)
        trusted = md
    if trusted is None:
        raise refuse(
            "root-chain", "the first release must carry the repository's root (1.root.json)"
        )
    root: Root = trusted.signed
    if root.is_expired(now):
        raise refuse("expired", f"root v{root.version} expired at {root.expires:%Y-%m-%d %H:%M}")
    if not root.consistent_snapshot:
        raise refuse("inconsistent", "the root must enable consistent snapshots")
    for role in (Snapshot.type, Timestamp.type):
        given = root.roles[role]
        if set(given.keyids) != {online_keyids[role]} or given.threshold != 1:
            raise refuse(
                "online-keys",
                f"the root's {role} key must be this server's ({online_keyids[role][:16]}..., "
                f"online-keys/{role}.pub) alone, threshold 1",
            )
    return new, root


def _children(md: Metadata[Targets]) -> list[str]:
    delegations = md.signed.delegations
    if delegations is None:
        return []
    if delegations.succinct_roles is not None:
        return list(delegations.succinct_roles.get_roles())
    return list(delegations.roles or {})


def check_roles(
    uploaded: Mapping[str, bytes],
    state: PublishedState,
    root: Root,
    *,
    now: dt.datetime,
) -> tuple[dict[str, Metadata[Targets]], dict[str, Metadata[Targets]]]:
    """Steps 3 and 4: (changed roles, every role of the new tree)."""
    changed: dict[str, Metadata[Targets]] = {}
    for name, data in uploaded.items():
        if name != Targets.type:
            try:
                check_role_name(name)
            except UsageError as exc:
                raise refuse("malformed", str(exc)) from None
        md = _parse(data, Targets, f"role {name}")
        old = state.roles.get(name)
        if old is not None:
            if md.signed.version < old.signed.version:
                raise refuse(
                    "rollback",
                    f"{name} v{md.signed.version} is older than the published "
                    f"v{old.signed.version}",
                )
            if md.signed.version == old.signed.version:
                if not _same(md, old):
                    raise refuse(
                        "rollback", f"{name} v{md.signed.version} differs from the published one"
                    )
                continue
        if md.signed.is_expired(now):
            raise refuse("expired", f"{name} v{md.signed.version} expired at {md.signed.expires}")
        changed[name] = md
    tree = {**state.roles, **changed}
    if Targets.type not in tree:
        raise refuse("inconsistent", "no targets role: upload targets.json")
    delegator: dict[str, str] = {Targets.type: Root.type}
    queue = [Targets.type]
    while queue:
        parent = queue.pop(0)
        for child in _children(tree[parent]):
            if child in delegator:
                continue
            if child not in tree:
                raise refuse(
                    "inconsistent", f"{parent} delegates to {child!r}, which is not uploaded"
                )
            if len(delegator) > MAX_DELEGATED:
                raise refuse("inconsistent", f"more than {MAX_DELEGATED} delegated roles")
            delegator[child] = parent
            queue.append(child)
    stray = sorted(set(changed) - set(delegator))
    if stray:
        raise refuse("inconsistent", f"role {stray[0]!r} is not delegated by any role")
    for name, parent_name in delegator.items():
        md = tree[name]
        signer: Root | Targets = root if parent_name == Root.type else tree[parent_name].signed
        result = signer.get_verification_result(name, md.signed_bytes, md.signatures)
        if not result.verified:
            raise _signature_refusal(
                f"{name} v{md.signed.version}", len(result.signed), result.threshold
            )
    return changed, {name: tree[name] for name in delegator}


def check_targets(
    changed: Mapping[str, Metadata[Targets]],
    published: Mapping[str, TargetFile],
    *,
    stored: Mapping[str, int],
    open_artifact: Callable[[str], Path],
) -> list[TargetFile]:
    """Step 5: the images of every new target; returns the targets not published before."""
    new: list[TargetFile] = []
    for md in changed.values():
        for path, info in md.signed.targets.items():
            try:
                check_target_path(path)
            except UsageError as exc:
                raise refuse("malformed", str(exc)) from None
            old = published.get(path)
            if old is not None:
                if (old.length, old.hashes) != (info.length, info.hashes):
                    raise refuse(
                        "target-changed",
                        f"{path} is published with other bytes; a released name never changes",
                    )
                continue
            sha256 = info.hashes.get("sha256")
            if sha256 is None:
                raise refuse("inconsistent", f"{path} names no sha256 hash")
            length = stored.get(sha256)
            if length is None:
                raise refuse("missing-image", f"no image uploaded for {path} (sha256 {sha256})")
            if length != info.length:
                raise refuse(
                    "image-length",
                    f"{path}: the image is {length} bytes, the metadata says {info.length}",
                )
            others = {alg: value for alg, value in info.hashes.items() if alg != "sha256"}
            if others:
                _check_other_hashes(path, open_artifact(sha256), others)
            new.append(info)
    return new


def _check_other_hashes(path: str, file: Path, hashes: Mapping[str, str]) -> None:
    digests = {}
    for alg in hashes:
        try:
            digests[alg] = hashlib.new(alg)
        except ValueError:
            raise refuse("inconsistent", f"{path}: unknown hash algorithm {alg[:32]!r}") from None
    with open(file, "rb") as handle:
        while chunk := handle.read(1 << 20):
            for digest in digests.values():
                digest.update(chunk)
    for alg, value in hashes.items():
        if digests[alg].hexdigest() != value:
            raise refuse(
                "image-hash", f"{path}: the image's {alg} is not the one the metadata names"
            )


def top_level_only(roles: Mapping[str, bytes]) -> None:
    bad = [name for name in roles if name in TOP_ROLES and name != Targets.type]
    if bad:
        raise refuse("malformed", f"{bad[0]} is signed by the server, not uploaded")
