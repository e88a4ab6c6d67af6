"""``/api/v1/audit``: the audit log, for auditors (and admins).

* ``checkpoint`` and ``tile/...``: the C2SP tlog-tiles layout, served from the
  stored rows as they are, so ``otaguard audit verify --log URL/api/v1/audit``
  checks the server's own log (with ``--token-file``: these routes need a token);
* ``entries`` by range, ``search`` by subject, target or action (each entry with
  its inclusion path against a checkpoint), ``proof/inclusion``,
  ``proof/consistency``: RFC 9162 proofs, checked by the server before it answers;
* ``POST checkpoint``: sign one now (also signed periodically by the jobs);
* ``POST submissions``: a local (ceremony) log's entries recorded in this one.
"""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from otaguard.audit.merkle import inclusion_proof, leaf_hash
from otaguard.audit.note import VerifierKey, b64encode
from otaguard.audit.tiles import TILE_WIDTH, parse_tile_path
from otaguard.crypto.keys import PublicKey, load_public_key
from otaguard.errors import AuditError, KeyLoadError, UsageError
from otaguard.server.auth import Operator, allow
from otaguard.server.errors import ApiError, responses
from otaguard.server.routers.common import Server
from otaguard.server.services import audit_checkpoints, audit_read, audit_submit

router = APIRouter(prefix="/api/v1/audit", tags=["audit"], responses=responses(401, 403))
Reader = Annotated[Operator, allow("audit:read")]
Submitter = Annotated[Operator, allow("audit:submit")]
MAX_SIZE = 2**63 - 1
Size = Annotated[int, Query(ge=0, le=MAX_SIZE)]


class CheckpointOut(BaseModel):
    origin: str
    tree_size: int
    root_hash: str = Field(description="base64 of the RFC 9162 tree head")
    note: str = Field(description="the signed checkpoint (C2SP signed note)")
    created_at: int


def _checkpoint_out(stored: audit_read.StoredCheckpoint) -> CheckpointOut:
    cp = stored.checkpoint
    return CheckpointOut(
        origin=cp.origin,
        tree_size=cp.size,
        root_hash=b64encode(cp.root),
        note=stored.note.decode("utf-8"),
        created_at=stored.created_at,
    )


_CHECKPOINT_TEXT: dict[str, Any] = {
    "content": {"text/plain": {"schema": {"type": "string"}}},
    "description": "the newest signed checkpoint (C2SP tlog-checkpoint)",
}
_TILE_BYTES: dict[str, Any] = {
    "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    "description": "a hash tile or an entry bundle (C2SP tlog-tiles)",
}


def _refused(exc: AuditError) -> ApiError:
    """The server's own log failed its checks: the database was edited behind its back."""
    return ApiError(409, exc.check, str(exc))


@router.get(
    "/checkpoint",
    response_class=Response,
    responses=responses(404, extra={200: _CHECKPOINT_TEXT}),
)
def get_checkpoint(srv: Server, who: Reader) -> Response:
    with srv.db.reading() as session:
        latest = audit_read.latest_checkpoint(session)
    if latest is None:
        raise ApiError(404, "not-found", "no checkpoint was signed yet")
    return Response(
        latest.note,
        media_type="text/plain; charset=utf-8",
        headers={"Cache-Control": "private, no-cache"},
    )


@router.post("/checkpoint", responses=responses(409))
async def sign_checkpoint(srv: Server, who: Reader) -> CheckpointOut:
    """Sign a checkpoint of the log as it is now (the newest one if nothing was added)."""
    try:
        stored = await run_in_threadpool(
            audit_checkpoints.sign_head, srv.db, srv.audit_signer, now=srv.now()
        )
    except AuditError as exc:
        raise _refused(exc) from None
    return _checkpoint_out(stored)


@router.get(
    "/tile/{path:path}",
    response_class=Response,
    responses=responses(404, extra={200: _TILE_BYTES}),
)
def get_tile(
    path: Annotated[str, Path(max_length=200, description="a tlog-tiles path after tile/")],
    srv: Server,
    who: Reader,
) -> Response:
    name = f"tile/{path}"
    try:
        tile = parse_tile_path(name)
    except ValueError:
        raise ApiError(404, "not-found", "not a tlog-tiles path") from None
    with srv.db.reading() as session:
        try:
            data = audit_read.DbLogReader(session)(name)
        except FileNotFoundError:
            raise ApiError(404, "not-found", f"{name} is not in the log (yet)") from None
    # a tile's bytes never change once it exists (the log is append-only)
    cache = "private, max-age=31536000, immutable" if tile.width == TILE_WIDTH else "private"
    return Response(data, media_type="application/octet-stream", headers={"Cache-Control": cache})


class EntryOut(BaseModel):
    index: int
    entry: str = Field(description="the entry: canonical JSON (docs/audit.md)")
    leaf_hash: str
    inclusion_path: list[str] | None = Field(
        default=None, description="base64 hashes, bottom-up, against the checkpoint given"
    )


@router.get("/entries", responses=responses(422))
def list_entries(
    srv: Server,
    who: Reader,
    start: Size,
    end: Size,
) -> list[EntryOut]:
    """Entries ``start`` (included) to ``end`` (excluded), at most a page of them."""
    if end <= start or end - start > srv.config.limits.audit_page:
        page = srv.config.limits.audit_page
        raise ApiError(422, "invalid-request", f"give start < end, at most {page} apart")
    with srv.db.reading() as session:
        rows = audit_read.entries(session, start, end)
    return [_entry(r) for r in rows]


def _entry(row: audit_read.EntryRow, path: list[bytes] | None = None) -> EntryOut:
    return EntryOut(
        index=row.index,
        entry=row.data.decode("utf-8"),
        leaf_hash=b64encode(leaf_hash(row.data)),
        inclusion_path=None if path is None else [b64encode(h) for h in path],
    )


class SearchOut(BaseModel):
    checkpoint: CheckpointOut
    entries: list[EntryOut]
    next_after: int | None = Field(description="pass as after= for the next page (None: done)")


def _checkpoint_for(session: Any, tree_size: int | None) -> audit_read.StoredCheckpoint:
    found = (
        audit_read.latest_checkpoint(session)
        if tree_size is None
        else audit_read.checkpoint_of_size(session, tree_size)
    )
    if found is None:
        raise ApiError(404, "not-found", "no checkpoint of that size (sign one first)")
    return found


@router.get("/search", responses=responses(404, 422))
def search(
    srv: Server,
    who: Reader,
    subject: Annotated[str | None, Query(min_length=1, max_length=1024)] = None,
    target: Annotated[str | None, Query(min_length=1, max_length=255)] = None,
    action: Annotated[list[str] | None, Query(max_length=40)] = None,
    after: Annotated[int, Query(ge=-1, le=MAX_SIZE)] = -1,
    limit: Annotated[int, Query(ge=1, le=1000)] = 1000,
    tree_size: Annotated[int | None, Query(ge=0, le=MAX_SIZE)] = None,
) -> SearchOut:
    """Entries about a subject or a target (or of some actions), in log order, each with
    its inclusion path against the checkpoint ``tree_size`` (default: the newest)."""
    if subject is None and target is None and not action:
        raise ApiError(422, "invalid-request", "give subject, target or action")
    with srv.db.reading() as session:
        stored = _checkpoint_for(session, tree_size)
        size = stored.checkpoint.size
        rows = audit_read.find(
            session,
            subject=subject,
            target=target,
            actions=action or (),
            below=size,
            after=after,
            limit=limit,
        )
        hashes = audit_read.source(session, size)
        found = [_entry(r, inclusion_proof(hashes, r.index, size)) for r in rows]
    return SearchOut(
        checkpoint=_checkpoint_out(stored),
        entries=found,
        next_after=found[-1].index if len(found) == limit else None,
    )


class InclusionOut(BaseModel):
    index: int
    tree_size: int
    entry: str
    leaf_hash: str
    inclusion_path: list[str]
    root_hash: str
    checkpoint: str = Field(description="the signed checkpoint the proof leads to")


@router.get("/proof/inclusion", responses=responses(404, 409, 422))
def prove_inclusion(
    srv: Server,
    who: Reader,
    index: Size,
    tree_size: Annotated[int | None, Query(ge=0, le=MAX_SIZE)] = None,
) -> InclusionOut:
    """Entry ``index`` and its RFC 9162 inclusion proof against a stored checkpoint."""
    with srv.db.reading() as session:
        stored = _checkpoint_for(session, tree_size)
        if index >= stored.checkpoint.size:
            raise ApiError(404, "not-found", f"no entry {index} under that checkpoint")
        try:
            proof = audit_read.inclusion(session, stored.checkpoint, index)
        except AuditError as exc:
            raise _refused(exc) from None
    return InclusionOut(**proof.to_json(), checkpoint=stored.note.decode("utf-8"))


class ConsistencyOut(BaseModel):
    tree_size_1: int
    tree_size_2: int
    root_hash_1: str
    root_hash_2: str
    consistency_path: list[str]
    checkpoint: str = Field(description="the signed checkpoint of tree_size_2")


@router.get("/proof/consistency", responses=responses(404, 409, 422))
def prove_consistency(
    srv: Server,
    who: Reader,
    old_size: Size,
    tree_size: Annotated[int | None, Query(ge=0, le=MAX_SIZE)] = None,
) -> ConsistencyOut:
    """The RFC 9162 proof that a stored checkpoint's tree extends its first ``old_size`` entries."""
    with srv.db.reading() as session:
        stored = _checkpoint_for(session, tree_size)
        if old_size > stored.checkpoint.size:
            raise ApiError(404, "not-found", "old_size is beyond that checkpoint")
        try:
            proof = audit_read.consistency(session, stored.checkpoint, old_size)
        except AuditError as exc:
            raise _refused(exc) from None
    return ConsistencyOut(**proof.to_json(), checkpoint=stored.note.decode("utf-8"))


class Submission(BaseModel):
    checkpoint: str = Field(max_length=1 << 20, description="the local log's signed checkpoint")
    key: str = Field(
        max_length=64 * 1024,
        description="the local log's audit key: a verifier key NAME+ID+KEY or a PEM public key",
    )
    entries: list[str] = Field(
        max_length=50_000, description="base64 of every entry of the local log, in order"
    )


class SubmissionOut(BaseModel):
    origin: str
    tree_size: int = Field(description="entries in the local log")
    already: int = Field(description="entries recorded by earlier submissions")
    recorded: int = Field(description="entries recorded now")
    first_index: int | None = Field(description="this log's index of the first one")


def _submitted_key(text: str) -> VerifierKey | PublicKey:
    if "-----BEGIN" in text:
        try:
            return load_public_key(text.encode("ascii"))
        except (KeyLoadError, UnicodeEncodeError):
            raise ApiError(422, "invalid-request", "key is not a usable public key") from None
    try:
        return VerifierKey.parse(text.strip())
    except UsageError as exc:
        raise ApiError(422, "invalid-request", f"key: {exc}") from None


@router.post("/submissions", status_code=201, responses=responses(409, 413, 422))
async def submit(body: Submission, srv: Server, who: Submitter) -> SubmissionOut:
    """Record a local log's entries (verified against its own checkpoint and key)."""
    key = _submitted_key(body.key)
    try:
        entries = [base64.b64decode(e, validate=True) for e in body.entries]
        note = body.checkpoint.encode("utf-8")
    except (binascii.Error, ValueError, UnicodeEncodeError):
        raise ApiError(422, "invalid-request", "entries must be base64") from None
    done = await run_in_threadpool(
        lambda: audit_submit.submit(
            srv.db, note=note, key=key, entries=entries, by=who, now=srv.now()
        )
    )
    return SubmissionOut(**vars(done))
