"""The client side of ``/api/v1/audit`` (what ``otaguard fleet audit`` calls).

Nothing here trusts the server: every answer is checked by the caller against a
checkpoint verified with the audit key it holds (:mod:`otaguard.cli.fleet_audit_cmd`
through :func:`checked_entries` and the pure ``otaguard.audit`` verifiers).
"""

from __future__ import annotations

import base64
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from otaguard.audit.checkpoint import Checkpoint, open_checkpoint
from otaguard.audit.entry import parse_entry
from otaguard.audit.merkle import leaf_hash, verify_inclusion
from otaguard.audit.note import VerifierKey, b64decode_strict
from otaguard.audit.records import Proven
from otaguard.crypto.keys import PublicKey
from otaguard.errors import AuditCheckpointError, AuditEntryError, AuditTreeError
from otaguard.server.client import FleetClient

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
