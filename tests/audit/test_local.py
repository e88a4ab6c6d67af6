"""The file-backed local log: appends, the checkpoint as commit point, one key per
log, refusal to build on a tampered log, serialised concurrent appenders."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest

from helpers_audit import ORIGIN, audit_signer, event
from otaguard.audit import LocalLog, append_event, verify_log
from otaguard.audit.local import LocalLog as _LocalLog
from otaguard.audit.tiles import CHECKPOINT, DirectoryReader, entries_path, tile_path
from otaguard.errors import AuditSignatureError, AuditTreeError, UsageError

KEY = audit_signer()


def _verify(directory: Path) -> int:
    return verify_log(DirectoryReader(directory), [KEY.public_key]).checkpoint.size


def test_appends_build_a_verifiable_log_and_prune_partial_tiles(tmp_path: Path) -> None:
    log = LocalLog(tmp_path)
    log.create(ORIGIN, KEY)
    assert _verify(tmp_path) == 0
    first, checkpoint = log.append([event(i) for i in range(200)], KEY)
    assert (first, checkpoint.size) == (0, 200)
    first, checkpoint = log.append([event(i) for i in range(200, 300)], KEY)
    assert (first, checkpoint.size) == (200, 300)
    assert append_event(tmp_path, event(300), KEY) == 300
    assert _verify(tmp_path) == 301
    assert (tmp_path / tile_path(0, 0)).exists()
    assert not (tmp_path / (tile_path(0, 0) + ".p")).exists()  # superseded partials deleted
    assert not (tmp_path / (entries_path(0) + ".p")).exists()
    assert (tmp_path / entries_path(1, 45)).exists()


def test_create_refuses_an_existing_log_and_unsuitable_keys(tmp_path: Path) -> None:
    from helpers import cached_key
    from otaguard.crypto.keys import KeyType
    from otaguard.crypto.signer import KeySigner

    LocalLog(tmp_path).create(ORIGIN, KEY)
    with pytest.raises(UsageError, match="already"):
        LocalLog(tmp_path).create(ORIGIN, KEY)
    with pytest.raises(UsageError, match="Ed25519"):
        LocalLog(tmp_path / "rsa").create(ORIGIN, KeySigner(cached_key(KeyType.RSA_3072)))
    with pytest.raises(UsageError, match="key name"):
        LocalLog(tmp_path / "bad").create("has space", KEY)


def test_another_key_cannot_append(tmp_path: Path) -> None:
    LocalLog(tmp_path).create(ORIGIN, KEY)
    with pytest.raises(AuditSignatureError):
        append_event(tmp_path, event(0), audit_signer(1))


def test_append_refuses_a_tampered_log(tmp_path: Path) -> None:
    log = LocalLog(tmp_path)
    log.create(ORIGIN, KEY)
    log.append([event(i) for i in range(5)], KEY)
    tile = tmp_path / tile_path(0, 0, 5)
    tile.write_bytes(b"\0" * 32 + tile.read_bytes()[32:])
    with pytest.raises(AuditTreeError, match="do not match the signed checkpoint"):
        append_event(tmp_path, event(5), KEY)


def test_a_crash_before_the_checkpoint_leaves_the_old_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Everything but the checkpoint written, then the power goes: the log is the old
    one, and the next append overwrites the debris."""
    log = LocalLog(tmp_path)
    log.create(ORIGIN, KEY)
    log.append([event(i) for i in range(250)], KEY)
    before = (tmp_path / CHECKPOINT).read_bytes()

    def crash(self: _LocalLog, *args: object) -> None:
        raise OSError("power cut")

    with monkeypatch.context() as patch:
        patch.setattr(_LocalLog, "_commit", crash)
        with pytest.raises(OSError, match="power cut"):
            log.append([event(i) for i in range(250, 270)], KEY)
    assert (tmp_path / CHECKPOINT).read_bytes() == before
    assert (tmp_path / tile_path(0, 0)).exists()  # the crashed append got this far
    assert _verify(tmp_path) == 250
    first, checkpoint = log.append([event(i) for i in range(250, 260)], KEY)
    assert (first, checkpoint.size, _verify(tmp_path)) == (250, 260, 260)


def _append_many(directory: str, start: int, count: int) -> None:
    for i in range(start, start + count):
        append_event(directory, event(i), audit_signer())


def test_concurrent_appenders_are_serialised(tmp_path: Path) -> None:
    LocalLog(tmp_path).create(ORIGIN, KEY)
    context = multiprocessing.get_context("fork")
    workers = [
        context.Process(target=_append_many, args=(str(tmp_path), k * 100, 15)) for k in range(3)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
        assert worker.exitcode == 0
    assert _verify(tmp_path) == 45


def test_read_for_submission_verifies_the_whole_log_first(tmp_path: Path) -> None:
    from otaguard.audit.entry import parse_entry
    from otaguard.audit.local import read_for_submission
    from otaguard.audit.note import VerifierKey

    log = LocalLog(tmp_path)
    log.create(ORIGIN, KEY)
    log.append([event(i) for i in range(300)], KEY)
    found = read_for_submission(str(tmp_path), KEY.public_key)
    assert [parse_entry(e).index for e in found.entries] == list(range(300))
    assert found.key == VerifierKey.for_public_key(ORIGIN, KEY.public_key)
    assert found.note == (tmp_path / CHECKPOINT).read_bytes()
    bundle = tmp_path / entries_path(0)
    data = bytearray(bundle.read_bytes())
    data[40] ^= 1  # one edited entry: nothing is submitted
    bundle.write_bytes(bytes(data))
    with pytest.raises(AuditTreeError):
        read_for_submission(str(tmp_path), KEY.public_key)


def test_checked_refuses_stored_tiles_that_do_not_match_the_checkpoint(tmp_path: Path) -> None:
    log = LocalLog(tmp_path)
    log.create(ORIGIN, KEY)
    log.append([event(i) for i in range(300)], KEY)
    assert log.checked(KEY).size == 300
    tile = tmp_path / tile_path(0, 1, 44)  # the right edge: what the root is built from
    data = bytearray(tile.read_bytes())
    data[0] ^= 1
    tile.write_bytes(bytes(data))
    with pytest.raises(AuditTreeError, match="do not match the signed checkpoint"):
        log.checked(KEY)
