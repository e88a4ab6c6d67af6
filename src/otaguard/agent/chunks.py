"""A download in progress on the device's storage: the bytes, and a journal of verified chunks.

::

    downloads/<key>/data      the target's bytes at their offsets, never past the signed length
    downloads/<key>/journal   a header, then one record per chunk known complete

The target is cut into fixed chunks (``chunk_size``, the last one shorter). A
chunk is complete when all its bytes arrived: they are written to ``data``
and fsync'd, *then* a record (index, SHA-256 of the chunk, CRC-32 of the
record) is appended to ``journal`` and fsync'd. So after a power cut:

* a chunk whose record is missing or torn (bad CRC: the append was cut) is
  simply fetched again, with every record after it ignored;
* a chunk whose record survived but whose data did not (a storage that lied
  about fsync, a torn sector) is caught when the store is opened: every
  recorded chunk is hashed again and only the damaged ones are fetched again.

The chunk hashes are the device's own, computed from what it received: they
detect local damage, not a hostile server. Whether the bytes are the signed
ones is decided once, on the whole file, against the TUF target's length and
hashes (:func:`otaguard.agent.transfer.fetch_target`).

Header (64 bytes, big-endian): magic ``OTAGDLJ1``, target length (u64), chunk
size (u32), key (32 bytes: which target this is), 8 reserved zero bytes,
CRC-32 of the preceding 60 bytes (u32). Record (40 bytes): chunk index (u32),
SHA-256 (32 bytes), CRC-32 of the preceding 36 bytes (u32).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import struct
import zlib
from pathlib import Path

from otaguard.errors import StorageError

MAGIC = b"OTAGDLJ1"
HEADER = struct.Struct(">8sQI32s8sI")
RECORD = struct.Struct(">I32sI")
#: Chunks per download (a 4 GiB target in 64 KiB chunks): bounds the journal's size.
MAX_CHUNKS = 1 << 16
READ_PIECE = 1 << 20


def _header(length: int, chunk_size: int, key: bytes) -> bytes:
    body = HEADER.pack(MAGIC, length, chunk_size, key, bytes(8), 0)[:-4]
    return body + struct.pack(">I", zlib.crc32(body))


def _record(index: int, digest: bytes) -> bytes:
    body = RECORD.pack(index, digest, 0)[:-4]
    return body + struct.pack(">I", zlib.crc32(body))


def parse_journal(data: bytes, length: int, chunk_size: int, key: bytes) -> dict[int, bytes] | None:
    """Chunk index -> recorded SHA-256, or None if the header is not this download's.

    Records are read up to the first torn or invalid one; a later record for the
    same chunk replaces an earlier one.
    """
    if len(data) < HEADER.size or data[: HEADER.size] != _header(length, chunk_size, key):
        return None
    count = -(-length // chunk_size)
    recorded: dict[int, bytes] = {}
    for at in range(HEADER.size, len(data) - RECORD.size + 1, RECORD.size):
        raw = data[at : at + RECORD.size]
        index, digest, crc = RECORD.unpack(raw)
        if crc != zlib.crc32(raw[:-4]) or index >= count:
            break
        recorded[index] = digest
    return recorded


class ChunkStore:
    """One target's partial download (see the module doc). Not thread-safe; one owner."""

    def __init__(self, directory: Path, *, key: bytes, length: int, chunk_size: int) -> None:
        if len(key) != 32 or length < 1 or chunk_size < 1:
            raise ValueError("ChunkStore: a 32-byte key, a positive length and chunk size")
        if -(-length // chunk_size) > MAX_CHUNKS:
            chunk_size = -(-length // MAX_CHUNKS)  # larger chunks, never an unbounded journal
        self.directory = directory
        self.length = length
        self.chunk_size = chunk_size
        self.key = key
        self.count = -(-length // chunk_size)
        self.data_path = directory / "data"
        self._journal_path = directory / "journal"
        try:
            directory.mkdir(parents=True, exist_ok=True)
            self._verified = self._load()
            self._data = os.open(self.data_path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise StorageError(f"cannot open download {directory}: {exc.strerror or exc}") from exc
        try:
            self._journal = os.open(self._journal_path, os.O_WRONLY | os.O_APPEND)
        except OSError as exc:
            os.close(self._data)
            raise StorageError(f"cannot open {self._journal_path}: {exc.strerror or exc}") from exc

    # -- opening: what survived ------------------------------------------------------------

    def _load(self) -> set[int]:
        try:
            with open(self._journal_path, "rb") as handle:
                data = handle.read(HEADER.size + RECORD.size * 4 * MAX_CHUNKS)
        except FileNotFoundError:
            data = b""
        recorded = parse_journal(data, self.length, self.chunk_size, self.key)
        if recorded is None:  # a new download, or a journal of another target / chunking
            self.data_path.unlink(missing_ok=True)
            self._write_new_journal()
            return set()
        verified = self._check(recorded)
        # Rewrite the journal when it held torn or stale records, so appends follow good ones.
        wanted = _header(self.length, self.chunk_size, self.key) + b"".join(
            _record(i, recorded[i]) for i in sorted(verified)
        )
        if data != wanted:
            self._write_journal(wanted)
        return verified

    def _write_new_journal(self) -> None:
        self._write_journal(_header(self.length, self.chunk_size, self.key))

    def _write_journal(self, content: bytes) -> None:
        tmp = self._journal_path.with_name(".journal.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, content)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self._journal_path)
        _fsync_dir(self.directory)

    def _check(self, recorded: dict[int, bytes]) -> set[int]:
        """The recorded chunks whose bytes on storage still hash to their record."""
        verified: set[int] = set()
        try:
            handle = open(self.data_path, "rb")  # noqa: SIM115 - closed below
        except FileNotFoundError:
            return verified
        with handle:
            for index in sorted(recorded):
                start, end = self.bounds(index)
                handle.seek(start)
                data = handle.read(end - start)
                if len(data) == end - start and hashlib.sha256(data).digest() == recorded[index]:
                    verified.add(index)
        return verified

    # -- the chunk grid -------------------------------------------------------------------

    def bounds(self, index: int) -> tuple[int, int]:
        """``[start, end)`` of chunk ``index`` in the target."""
        if not 0 <= index < self.count:
            raise IndexError(f"no chunk {index}")
        start = index * self.chunk_size
        return start, min(start + self.chunk_size, self.length)

    @property
    def verified(self) -> frozenset[int]:
        return frozenset(self._verified)

    @property
    def verified_bytes(self) -> int:
        return sum(self.bounds(i)[1] - self.bounds(i)[0] for i in self._verified)

    def missing_runs(self) -> list[tuple[int, int]]:
        """Runs of missing chunks as ``(first, last)`` indexes, inclusive, in order."""
        runs: list[tuple[int, int]] = []
        for index in range(self.count):
            if index in self._verified:
                continue
            if runs and runs[-1][1] == index - 1:
                runs[-1] = (runs[-1][0], index)
            else:
                runs.append((index, index))
        return runs

    def done(self) -> bool:
        return len(self._verified) == self.count

    # -- writing ----------------------------------------------------------------------------

    def put(self, index: int, data: bytes) -> None:
        """Store chunk ``index`` (exactly its length): data, fsync, journal record, fsync."""
        start, end = self.bounds(index)
        if len(data) != end - start:
            raise ValueError(f"chunk {index} is {end - start} bytes, not {len(data)}")
        if index in self._verified:
            return  # never rewrite a completed chunk
        try:
            os.pwrite(self._data, data, start)
            os.fsync(self._data)
            os.write(self._journal, _record(index, hashlib.sha256(data).digest()))
            os.fsync(self._journal)
        except OSError as exc:
            raise StorageError(f"cannot write download {self.directory}: {exc}") from exc
        self._verified.add(index)

    def close(self) -> None:
        for fd in (self._data, self._journal):
            with contextlib.suppress(OSError):
                os.close(fd)

    def __enter__(self) -> ChunkStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def discard(self) -> None:
        """Forget this download entirely (its bytes were refused)."""
        self.close()
        shutil.rmtree(self.directory, ignore_errors=True)


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
