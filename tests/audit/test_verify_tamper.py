"""Every kind of tampering with an exported log is refused, and the first bad entry named.

The log: 600 entries (bundles of 256, 256 and a partial 88). The auditor holds the
checkpoint of the first 300 entries (``old``), taken before the tampering.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from helpers_audit import ORIGIN, audit_signer, entries, export, rewrite_tiles
from otaguard.audit import VerifierKey, verify_log
from otaguard.audit.merkle import leaf_hash
from otaguard.audit.tiles import (
    CHECKPOINT,
    DirectoryReader,
    encode_bundle,
    entries_path,
    parse_bundle,
    tile_path,
    tile_width,
)
from otaguard.errors import (
    AuditCheckpointError,
    AuditConsistencyError,
    AuditEntryError,
    AuditError,
    AuditSignatureError,
    AuditTreeError,
    AuditTruncatedError,
)

SIZE = 600
RAW = entries(SIZE)
KEY = audit_signer()


@pytest.fixture(scope="module")
def old_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    directory = tmp_path_factory.mktemp("old")
    export(directory, RAW[:300])
    return (directory / CHECKPOINT).read_bytes()


@pytest.fixture
def log(tmp_path: Path) -> Path:
    export(tmp_path / "log", RAW)
    return tmp_path / "log"


def verify(directory: Path, old: bytes | None = None) -> None:
    verify_log(DirectoryReader(directory), [KEY.public_key], old_checkpoint=old)


def write_bundles(directory: Path, raw: list[bytes]) -> None:
    """Replace the entries as the checkpoint's bundles lay them out, tiles untouched."""
    for bundle in range(-(-SIZE // 256)):
        path = directory / entries_path(bundle, tile_width(SIZE, 0, bundle))
        path.write_bytes(encode_bundle(raw[bundle * 256 : (bundle + 1) * 256]))


def edited(index: int) -> list[bytes]:
    raw = list(RAW)
    raw[index] = raw[index].replace(b"release-manager", b"release-managex")
    return raw


def refused(directory: Path, error: type[AuditError], old: bytes | None = None) -> AuditError:
    with pytest.raises(error) as caught:
        verify(directory, old)
    return caught.value


def test_an_untouched_log_verifies_and_extends_the_older_checkpoint(
    log: Path, old_checkpoint: bytes
) -> None:
    verify(log, old_checkpoint)
    vkey = VerifierKey.for_public_key(ORIGIN, KEY.public_key)
    result = verify_log(DirectoryReader(log), [vkey], old_checkpoint=old_checkpoint)
    assert (result.checkpoint.size, result.old_checkpoint and result.old_checkpoint.size) == (
        600,
        300,
    )


def test_edited_entry_is_named(log: Path) -> None:
    write_bundles(log, edited(300))
    error = refused(log, AuditTreeError)
    assert error.index == 300 and "edited" in str(error)


def test_edited_entry_with_its_leaf_hash_rewritten_names_its_subtree(log: Path) -> None:
    raw = edited(300)
    write_bundles(log, raw)
    tile = bytearray((log / tile_path(0, 1)).read_bytes())
    tile[44 * 32 : 45 * 32] = leaf_hash(raw[300])
    (log / tile_path(0, 1)).write_bytes(bytes(tile))
    error = refused(log, AuditTreeError)
    assert error.index == 256 and "entries 256 to 511" in str(error)


def test_edited_entry_with_every_tile_rewritten_fails_the_signed_root(log: Path) -> None:
    rewrite_tiles(log, edited(300))
    error = refused(log, AuditTreeError)
    assert error.index is None and "signed root" in str(error)


def test_rewrite_before_the_older_checkpoint_is_a_fork(log: Path, old_checkpoint: bytes) -> None:
    rewrite_tiles(log, edited(100))
    error = refused(log, AuditConsistencyError, old_checkpoint)
    assert "first 300 entries" in str(error)


def test_rewrite_and_resign_passes_alone_but_not_against_the_held_checkpoint(
    log: Path, old_checkpoint: bytes
) -> None:
    """The log operator holds the key: only a checkpoint handed out earlier catches it."""
    rewrite_tiles(log, edited(100), resign=KEY)
    verify(log)
    refused(log, AuditConsistencyError, old_checkpoint)


def test_deleted_entry_is_named(log: Path) -> None:
    write_bundles(log, RAW[:300] + RAW[301:])
    error = refused(log, AuditEntryError)
    assert error.index == 300 and "entry 300 was deleted" in str(error)


def test_reordered_entries_are_named(log: Path) -> None:
    write_bundles(log, [*RAW[:300], RAW[301], RAW[300], *RAW[302:]])
    assert refused(log, AuditEntryError).index == 300


def test_reordered_and_renumbered_entries_are_named(log: Path) -> None:
    swapped = [
        *RAW[:300],
        RAW[301].replace(b'"index":301', b'"index":300'),
        RAW[300].replace(b'"index":300', b'"index":301'),
        *RAW[302:],
    ]
    write_bundles(log, swapped)
    assert refused(log, AuditTreeError).index == 300


def test_inserted_copy_is_named(log: Path) -> None:
    write_bundles(log, [*RAW[:300], RAW[299], *RAW[300:]])
    error = refused(log, AuditEntryError)
    assert error.index == 300 and "inserted" in str(error)


def test_inserted_forgery_with_the_right_index_is_named(log: Path) -> None:
    forged = RAW[300].replace(b"vehicle-0000300", b"vehicle-9999999")
    write_bundles(log, [*RAW[:300], forged, *RAW[300:]])
    assert refused(log, AuditTreeError).index == 300


def test_entry_appended_past_the_checkpoint_is_named(log: Path) -> None:
    path = log / entries_path(2, 88)
    path.write_bytes(path.read_bytes() + encode_bundle(entries(1, 600)))
    error = refused(log, AuditEntryError)
    assert error.index == 600 and "inserted" in str(error)


def test_truncated_bundle_is_named(log: Path) -> None:
    path = log / entries_path(2, 88)
    path.write_bytes(encode_bundle(parse_bundle(path.read_bytes())[:-1]))
    error = refused(log, AuditTruncatedError)
    assert error.index == 599


def test_cut_bundle_is_named(log: Path) -> None:
    path = log / entries_path(1)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    assert 256 < refused(log, AuditTruncatedError).index < 512  # type: ignore[operator]


def test_missing_bundle_is_named(log: Path) -> None:
    (log / entries_path(2, 88)).unlink()
    assert refused(log, AuditTruncatedError).index == 512


def test_log_shorter_than_the_held_checkpoint_is_refused(tmp_path: Path) -> None:
    """The operator re-signs a shorter log; the auditor holds the checkpoint of 600."""
    export(tmp_path / "full", RAW)
    held = (tmp_path / "full" / CHECKPOINT).read_bytes()
    export(tmp_path / "short", RAW[:200])
    error = refused(tmp_path / "short", AuditTruncatedError, held)
    assert error.index == 200 and "deleted" in str(error)


def test_checkpoint_signed_by_another_key_is_refused(log: Path) -> None:
    export(log, RAW, audit_signer(1))
    refused(log, AuditSignatureError)


def test_missing_checkpoint_is_refused(log: Path) -> None:
    (log / CHECKPOINT).unlink()
    refused(log, AuditCheckpointError)


@pytest.mark.parametrize(
    "damage",
    [
        lambda log: (log / tile_path(1, 0, 2)).write_bytes(b"\0" * 63),
        lambda log: (log / tile_path(0, 0)).unlink(),
        lambda log: (log / tile_path(0, 2, 88)).write_bytes(b"\0" * (256 * 32 + 1)),
    ],
    ids=["short-tile", "missing-tile", "oversized-tile"],
)
def test_damaged_tiles_are_refused(log: Path, damage: Callable[[Path], object]) -> None:
    damage(log)
    refused(log, AuditTreeError)
