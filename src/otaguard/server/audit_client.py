"""The client side of ``/api/v1/audit`` (what ``otaguard fleet audit`` calls).

Nothing here trusts the server: every answer is checked by the caller against a
checkpoint verified with the audit key it holds (:mod:`otaguard.cli.fleet_audit_cmd`
through :func:`checked_entries` and the pure ``otaguard.audit`` verifiers).
"""

from __future__ import annotations

import base64
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from otaguard.audit.checkpoint import Checkpoint, open_checkpoint
from otaguard.audit.entry import parse_entry
from otaguard.audit.merkle import leaf_hash, verify_inclusion
from otaguard.audit.note import VerifierKey, b64decode_strict, b64encode
from otaguard.audit.records import Proven
from otaguard.crypto.keys import PublicKey
from otaguard.errors import AuditCheckpointError, AuditEntryError, AuditTreeError
from otaguard.server.client import FleetClient

if TYPE_CHECKING:
    from otaguard.repo.fetcher import HttpxFetcher

PREFIX = "/api/v1/audit"


class AuditClient:
    """The audit calls of one :class:`FleetClient` (its token, its connection)."""

    def __init__(self, fleet: FleetClient) -> None:
        self.fleet = fleet

    def _json(self, method: str, path: str, **kw: Any) -> Any:
        return self.fleet._call(method, PREFIX + path, **kw).json()

    def sign_checkpoint(self) -> dict[str, Any]:
        return dict(self._json("POST", "/checkpoint"))

    def file(self, path: str) -> bytes:
        """``checkpoint`` or a ``tile/...`` path, as served."""
        return self.fleet._call("GET", f"{PREFIX}/{path}").content

    def inclusion(self, index: int, tree_size: int | None = None) -> dict[str, Any]:
        params = {"index": index, **({"tree_size": tree_size} if tree_size is not None else {})}
        return dict(self._json("GET", "/proof/inclusion", params=params))

    def consistency(self, old_size: int, tree_size: int | None = None) -> dict[str, Any]:
        params = {"old_size": old_size}
        if tree_size is not None:
            params["tree_size"] = tree_size
        return dict(self._json("GET", "/proof/consistency", params=params))

    def search(
        self,
        *,
        tree_size: int,
        subject: str | None = None,
        target: str | None = None,
        actions: Sequence[str] = (),
    ) -> Iterator[dict[str, Any]]:
        """Every entry found, page after page, with its proof against ``tree_size``."""
        after = -1
        while True:
            params: dict[str, Any] = {"tree_size": tree_size, "after": after}
            if subject is not None:
                params["subject"] = subject
            if target is not None:
                params["target"] = target
            if actions:
                params["action"] = list(actions)
            page = self._json("GET", "/search", params=params)
            yield from page["entries"]
            if page["next_after"] is None:
                return
            after = int(page["next_after"])

    def submit(self, note: bytes, key: str, entries: Sequence[bytes]) -> dict[str, Any]:
        body = {
            "checkpoint": note.decode("utf-8"),
            "key": key,
            "entries": [base64.b64encode(e).decode("ascii") for e in entries],
        }
        return dict(self._json("POST", "/submissions", json=body))


@dataclass(frozen=True)
class Head:
    checkpoint: Checkpoint
    note: bytes


def verified_checkpoint(note: str | bytes, keys: Sequence[VerifierKey | PublicKey]) -> Head:
    data = note.encode("utf-8") if isinstance(note, str) else note
    return Head(open_checkpoint(data, keys), data)


def checked_entry(item: dict[str, Any], head: Head) -> Proven:
    """An entry the server sent with its inclusion path, checked against ``head``."""
    try:
        index = int(item["index"])
        raw = str(item["entry"]).encode("utf-8")
        path = [b64decode_strict(str(h)) for h in item["inclusion_path"]]
    except (KeyError, TypeError, ValueError):
        raise AuditCheckpointError("the server sent an entry without a usable proof") from None
    checkpoint = head.checkpoint
    try:
        entry = parse_entry(raw)
    except AuditEntryError as exc:
        raise AuditEntryError(f"entry {index}: {exc}", index=index) from None
    if entry.index != index:
        raise AuditEntryError(f"the server sent entry {entry.index} as {index}", index=index)
    try:
        verify_inclusion(leaf_hash(raw), index, checkpoint.size, path, checkpoint.root)
    except AuditTreeError:
        raise AuditTreeError(
            f"entry {index} is not in the log the checkpoint of {checkpoint.size} entries signs: "
            f"it was edited or its proof is false",
            index=index,
        ) from None
    return Proven(entry, raw, tuple(str(h) for h in item["inclusion_path"]))


def checkpoint_json(head: Head) -> dict[str, Any]:
    """The checkpoint a report was proven against, as it is printed with the report."""
    cp = head.checkpoint
    return {
        "origin": cp.origin,
        "tree_size": cp.size,
        "root_hash": b64encode(cp.root),
        "note": head.note.decode("utf-8"),
    }


def collect(api: AuditClient, head: Head, **query: Any) -> list[Proven]:
    """The entries a search finds, each checked against ``head`` (:func:`checked_entry`)."""
    return [
        checked_entry(item, head) for item in api.search(tree_size=head.checkpoint.size, **query)
    ]


def fresh_head(api: AuditClient, keys: Sequence[VerifierKey | PublicKey]) -> Head:
    """A checkpoint the server signs now, verified with ``keys``."""
    return verified_checkpoint(api.sign_checkpoint()["note"], keys)


def export_log(
    api: AuditClient, out: str, keys: Sequence[VerifierKey | PublicKey] = ()
) -> dict[str, Any]:
    """Write the server's whole log to the new or empty directory ``out`` as static tiles.

    A fresh checkpoint first (verified with ``keys`` if given); every tile and entry
    bundle of its tree, synced; the checkpoint last, so that a directory holding one
    is complete (``otaguard audit verify`` checks the rest).
    """
    import os

    from otaguard.audit.checkpoint import parse_checkpoint
    from otaguard.audit.note import parse_note
    from otaguard.audit.tiles import (
        CHECKPOINT,
        TILE_HEIGHT,
        DirectoryWriter,
        entries_path,
        tile_path,
        tile_width,
    )
    from otaguard.errors import UsageError

    if os.path.exists(out) and (not os.path.isdir(out) or os.listdir(out)):
        raise UsageError(f"--out {out}: give a new or empty directory")
    note = api.sign_checkpoint()["note"].encode("utf-8")
    checkpoint = open_checkpoint(note, keys) if keys else parse_checkpoint(parse_note(note).text)
    size = checkpoint.size
    writer = DirectoryWriter(out)
    files = level = 0
    while size >> (TILE_HEIGHT * level):
        count = size >> (TILE_HEIGHT * level)
        for index in range(-(-count // 256)):
            width = tile_width(size, level, index)
            paths = [tile_path(level, index, width)]
            if level == 0:
                paths.append(entries_path(index, width))
            for path in paths:
                writer(path, api.file(path))
                files += 1
        level += 1
    writer.sync()
    writer(CHECKPOINT, note)
    writer.sync()
    return {
        "out": out,
        "origin": checkpoint.origin,
        "tree_size": size,
        "root_hash": b64encode(checkpoint.root),
        "files": files + 1,
        "checkpoint_verified": bool(keys),
    }


def proven_inclusion(api: AuditClient, head: Head, index: int) -> dict[str, Any]:
    """The server's inclusion proof of entry ``index``, checked against ``head``."""
    from otaguard.errors import UsageError

    size = head.checkpoint.size
    if index >= size:
        raise UsageError(f"the log has {size} entries: no entry {index}")
    body = api.inclusion(index, size)
    raw = str(body["entry"]).encode("utf-8")
    path = [b64decode_strict(h) for h in body["inclusion_path"]]
    verify_inclusion(leaf_hash(raw), index, size, path, head.checkpoint.root)
    if parse_entry(raw).index != index:
        raise AuditEntryError(f"the server sent another entry as {index}", index=index)
    return _proven(body, head)


def proven_consistency(
    api: AuditClient, head: Head, old_size: int, old: Checkpoint | None = None
) -> dict[str, Any]:
    """The server's proof that its log extends its first ``old_size`` entries, checked
    against ``head``; with ``old`` (a checkpoint the caller holds), that it extends
    exactly that tree (else the history was rewritten: a fork)."""
    from otaguard.audit.merkle import verify_consistency
    from otaguard.errors import AuditConsistencyError

    size = head.checkpoint.size
    if old_size > size:
        raise AuditConsistencyError(f"the log has {size} entries, fewer than {old_size}")
    body = api.consistency(old_size, size)
    old_root = b64decode_strict(body["root_hash_1"])
    if old is not None and (old.origin != head.checkpoint.origin or old_root != old.root):
        raise AuditConsistencyError(
            f"the server's tree of {old.size} entries is not the one your checkpoint "
            f"signs: the log's history was rewritten (a fork)"
        )
    path = [b64decode_strict(h) for h in body["consistency_path"]]
    verify_consistency(int(body["tree_size_1"]), size, path, old_root, head.checkpoint.root)
    return _proven(body, head)


def _proven(body: dict[str, Any], head: Head) -> dict[str, Any]:
    return {
        **body,
        "origin": head.checkpoint.origin,
        "root_hash": b64encode(head.checkpoint.root),
        "verified": True,
    }


class HttpReader:
    """A log reader over HTTP(S): ``<base>/<path>``; 404 means absent. ``token``: a
    bearer token (the fleet server's ``/api/v1/audit`` needs an auditor's).

    Each resource is fetched under the length cap its path implies (``size_cap``): an
    oversized answer is refused like an oversized file, before it is held.
    """

    def __init__(self, base: str, fetcher: HttpxFetcher, token: str | None = None) -> None:
        self.base = base.rstrip("/")
        self.fetcher = fetcher
        self.headers = {"Authorization": f"Bearer {token}"} if token else None

    def __call__(self, path: str) -> bytes:
        from otaguard.audit.tiles import CHECKPOINT, size_cap
        from otaguard.errors import StorageError
        from otaguard.repo.fetcher import FetchError, LengthExceededError

        try:
            with self.fetcher.stream(
                f"{self.base}/{path}", size_cap(path), headers=self.headers
            ) as chunks:
                return b"".join(chunks)
        except LengthExceededError as exc:  # hostile input, refused like an oversized file
            error = AuditCheckpointError if path == CHECKPOINT else AuditTreeError
            raise error(f"{path}: {exc}") from None
        except FetchError as exc:
            if exc.status_code == 404:
                raise FileNotFoundError(exc.url) from None
            raise StorageError(f"cannot fetch {exc}") from exc
