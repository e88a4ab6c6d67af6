"""Whoever edits the database behind the server's back: the served log names the edited
entry, and the server refuses to sign a checkpoint over a head that does not extend the
last one. The audit key: made at the first start, or an HSM key; never changed under a log."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

import pytest
from sqlalchemy import select, update

from conftest import hsm_uri
from otaguard.audit.merkle import CompactRange
from otaguard.audit.note import VerifierKey
from otaguard.crypto.keys import KeyType, generate_private_key, private_key_pem
from otaguard.crypto.pkcs11 import generate_pkcs11_key
from otaguard.errors import AuditTreeError, UsageError
from otaguard.server import jobs
from otaguard.server.datadir import prepare
from otaguard.server.db import Database
from otaguard.server.models import AuditEntryRow, AuditHead
from server.helpers_audit_log import audit_key, checkpoint, entries, verify_over_http
from server.helpers_server import LiveServer, start_live


def _edit(live: LiveServer, index: int, old: bytes, new: bytes) -> None:
    with live.app_state.server.db.writing() as session:
        row = session.get(AuditEntryRow, index)
        assert old in row.data
        row.data = row.data.replace(old, new)


def test_an_entry_edited_in_the_database_is_named_by_the_verifier(live: LiveServer) -> None:
    live.token("operator", "ops")
    checkpoint(live)
    found = entries(live)
    index = next(e.index for e in found if e.event.subject == "ops")
    _edit(live, index, b'"ops"', b'"eve"')
    with pytest.raises(AuditTreeError) as refused:
        verify_over_http(live.url, live.admin_token, audit_key(live.config.data_dir))
    assert refused.value.index == index
    assert "edited" in str(refused.value)


def _rewrite_head(live: LiveServer, leaves: list[bytes]) -> None:
    tree, _ = CompactRange.empty().append(leaves)
    with live.app_state.server.db.writing() as session:
        session.execute(update(AuditHead).values(size=tree.size, edge=b"".join(tree.hashes)))


def _leaves(live: LiveServer) -> list[bytes]:
    with live.app_state.server.db.reading() as session:
        return list(session.scalars(select(AuditEntryRow.leaf).order_by(AuditEntryRow.idx)))


def test_a_head_that_is_not_its_stored_tree_is_not_signed(live: LiveServer) -> None:
    live.token("operator", "ops")
    leaves = _leaves(live)
    _rewrite_head(live, [*leaves[:-1], b"\x00" * 32])
    answer = live.admin().post("/api/v1/audit/checkpoint")
    assert (answer.status_code, answer.json()["error"]) == (409, "audit-tree")


def test_a_rewritten_history_is_not_signed(live: LiveServer) -> None:
    """An edit made consistent (entry, leaf hash and head rewritten together) no longer
    extends the last checkpoint: the server refuses to sign the fork."""
    signed = checkpoint(live)
    live.token("operator", "ops")
    first = entries(live)[0]
    with live.app_state.server.db.writing() as session:
        row = session.get(AuditEntryRow, first.index)
        from otaguard.audit.merkle import leaf_hash

        row.data = row.data.replace(b'"server"', b'"mallory"')
        row.leaf = leaf_hash(row.data)
    _rewrite_head(live, _leaves(live))
    answer = live.admin().post("/api/v1/audit/checkpoint")
    assert (answer.status_code, answer.json()["error"]) == (409, "audit-consistency")
    assert live.client(live.admin_token).get("/api/v1/audit/checkpoint").text == signed["note"]


def test_deleted_entries_are_not_signed_over(live: LiveServer) -> None:
    checkpoint(live)
    leaves = _leaves(live)
    _rewrite_head(live, leaves[:-1])
    answer = live.admin().post("/api/v1/audit/checkpoint")
    assert (answer.status_code, answer.json()["error"]) == (409, "audit-consistency")


def test_the_jobs_sign_a_checkpoint_when_entries_were_added(live: LiveServer) -> None:
    ctx = live.app_state.server
    first = checkpoint(live)
    assert "checkpoint" not in jobs.run_once(ctx)  # nothing added
    live.token("operator", "ops")
    real = ctx.clock
    ctx.clock = lambda: real() + 3600
    try:
        done = jobs.run_once(ctx)
    finally:
        ctx.clock = real
    assert done["checkpoint"] == first["tree_size"] + 1


def test_the_audit_key_may_live_in_an_hsm(
    softhsm: dict[str, str], db_url: str, tmp_path: Path
) -> None:
    uri = hsm_uri(softhsm, f"server-audit-{tmp_path.name}")
    public = generate_pkcs11_key(uri, KeyType.ECDSA_P256)
    live = start_live(tmp_path / "srv", db_url, audit_key=uri, audit_origin="audit.test/fleet")
    try:
        assert not (live.config.online_keys_dir / "audit.pem").exists()
        signed = checkpoint(live)
        assert signed["origin"] == "audit.test/fleet"
        assert audit_key(live.config.data_dir) == public
        key = VerifierKey.for_public_key("audit.test/fleet", public)
        verified = verify_over_http(live.url, live.admin_token, key)  # type: ignore[arg-type]
        assert verified.checkpoint.size == signed["tree_size"]
    finally:
        live.stop()


def test_the_audit_key_cannot_change_under_a_log(live: LiveServer) -> None:
    config = live.config
    other = private_key_pem(generate_private_key(KeyType.ED25519), None)
    (config.online_keys_dir / "audit.pem").write_bytes(other)
    db = Database(config.database_url)
    try:
        with pytest.raises(UsageError, match="another audit key"):
            prepare(config, db, now=dt.datetime.now(dt.UTC))
        config.audit_public_file.unlink()  # audit.pub gone too: the database remembers
        with pytest.raises(UsageError, match="cannot change under a log"):
            prepare(config, db, now=dt.datetime.now(dt.UTC))
        renamed = dataclasses.replace(config, audit_origin="other.example/log")
        with pytest.raises(UsageError, match="cannot rename"):
            prepare(renamed, db, now=dt.datetime.now(dt.UTC))
    finally:
        db.dispose()
