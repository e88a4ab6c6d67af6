"""Reading a live server's audit log in tests: its entries, and the whole log verified
over HTTP exactly as ``otaguard audit verify --log URL`` reads it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from otaguard.audit.entry import AuditEntry, parse_entry
from otaguard.audit.verify import VerifiedLog, verify_log
from otaguard.crypto.keys import PublicKey, load_public_key
from otaguard.repo.fetcher import HttpxFetcher
from otaguard.server.audit_client import HttpReader
from server.helpers_server import LiveServer


def audit_key(data_dir: Path) -> PublicKey:
    return load_public_key((data_dir / "audit.pub").read_bytes())


def entries(live: LiveServer, token: str | None = None) -> list[AuditEntry]:
    """Every entry, in order, through ``GET /api/v1/audit/entries``."""
    client = live.client(token or live.admin_token)
    found: list[AuditEntry] = []
    while True:
        page = client.get(
            "/api/v1/audit/entries", params={"start": len(found), "end": len(found) + 1000}
        )
        assert page.status_code == 200, page.text
        batch = [parse_entry(e["entry"].encode()) for e in page.json()]
        found += batch
        if len(batch) < 1000:
            return found


def of(found: list[AuditEntry], action: str) -> list[AuditEntry]:
    return [e for e in found if e.event.action == action]


def details(entry: AuditEntry) -> dict[str, Any]:
    return dict(entry.event.details)


def checkpoint(live: LiveServer, token: str | None = None) -> dict[str, Any]:
    answer = live.client(token or live.admin_token).post("/api/v1/audit/checkpoint")
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def verify_over_http(
    url: str, token: str, key: PublicKey, old_checkpoint: bytes | None = None
) -> VerifiedLog:
    """The whole log as a remote auditor checks it (``audit verify --log URL``)."""
    with HttpxFetcher() as fetcher:
        reader = HttpReader(f"{url}/api/v1/audit", fetcher, token)
        return verify_log(reader, [key], old_checkpoint=old_checkpoint)
