"""Applying a delta container: streaming, bounded memory, every chunk checked.

The applier reads the old image only through ``read_at(offset, n)`` (random,
in pieces of at most 64 KiB), reads the container strictly forward per stream,
and hands the new image out through :class:`Reconstruction`, a file-like
object whose ``read`` produces it in order. Nothing is ever held whole:

* three LZMA2 decoders, one per stream, each with a dictionary of one chunk
  (<= 8 MiB, 4 MiB by default): at most 24 MiB, 12 MiB by default;
* one 64 KiB piece of old data, diff data, output and compressed input each.

So the bound is ``3 * chunk_size + ~1 MiB``: under 32 MiB for any image size.

Checks, each with its own error: the base (length and SHA-256 of the whole old
image, :func:`check_base`, run before anything is written), every control
triple's range inside the old image, every stream consumed exactly, each
chunk's source hash (the old bytes it read) and output hash, and the SHA-256
of the whole reconstructed image -- checked *before* its last bytes (the
signature block) are handed out, so a consumer never sees a complete image
that does not match.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import lzma
from collections.abc import Callable, Iterator
from typing import BinaryIO

from otaguard.delta.format import (
    CHUNK_HEAD,
    ChunkHead,
    DeltaHeader,
    Filter,
    Method,
    decode_varint,
    dict_size_for,
    lzma_filters,
    max_triples,
    read_chunk_head,
    unzigzag,
)
from otaguard.errors import DigestMismatchError, MalformedError, TruncatedError

#: Reads ``n`` bytes of the old image at ``offset`` (fewer only at its end).
ReadAt = Callable[[int, int], bytes]

PIECE = 1 << 16


@functools.lru_cache(maxsize=4)
def _masks(n: int) -> tuple[int, int]:
    return int.from_bytes(b"\x7f" * n, "little"), int.from_bytes(b"\x80" * n, "little")


def add_bytes(old: bytes, diff: bytes) -> bytes:
    """Bytewise ``(old + diff) mod 256`` at C speed: SWAR over Python big integers."""
    n = len(old)
    if len(diff) != n:
        raise ValueError("add_bytes needs equal lengths")
    if not n:
        return b""
    low, high = _masks(n)
    x = int.from_bytes(old, "little")
    y = int.from_bytes(diff, "little")
    return (((x & low) + (y & low)) ^ ((x ^ y) & high)).to_bytes(n, "little")


def check_base(head: DeltaHeader, old_length: int, read_at: ReadAt) -> None:
    """Refuse the delta unless the old image is exactly its base (reads it once, only reads)."""
    if old_length != head.base_length:
        raise DigestMismatchError(
            f"delta base mismatch: the delta was made for a {head.base_length}-byte image, "
            f"this one has {old_length} bytes"
        )
    hasher = hashlib.sha256()
    pos = 0
    while pos < old_length:
        data = read_at(pos, min(1 << 20, old_length - pos))
        if not data:
            raise TruncatedError("the old image ended early")
        hasher.update(data)
        pos += len(data)
    if not hmac.compare_digest(hasher.digest(), head.base_sha256):
        raise DigestMismatchError(
            f"delta base mismatch: the delta was made for base sha256:{head.base_sha256.hex()}, "
            f"not for this image (sha256:{hasher.hexdigest()})"
        )


class _Stream:
    """One compressed stream of a chunk, decoded on demand from its place in the container."""

    def __init__(
        self, src: BinaryIO, offset: int, length: int, flt: Filter, dict_size: int, what: str
    ) -> None:
        self._src = src
        self._pos = offset
        self._left = length
        self._what = what
        self._dec = lzma.LZMADecompressor(
            format=lzma.FORMAT_RAW, filters=lzma_filters(flt, dict_size)
        )
        self._empty = length == 0

    def _feed(self) -> bytes:
        if not self._dec.needs_input:
            return b""
        if not self._left:
            raise TruncatedError(f"truncated: the {self._what} stream ends early")
        self._src.seek(self._pos)
        data = self._src.read(min(PIECE, self._left))
        if not data:
            raise TruncatedError("truncated: delta ends inside a chunk")
        self._pos += len(data)
        self._left -= len(data)
        return data

    def read(self, n: int) -> bytes:
        if not n:
            return b""
        if self._empty:
            raise MalformedError(f"the {self._what} stream is shorter than its chunk needs")
        parts = []
        while n:
            if self._dec.eof:
                raise MalformedError(f"the {self._what} stream is shorter than its chunk needs")
            try:
                got = self._dec.decompress(self._feed(), n)
            except lzma.LZMAError as exc:
                raise MalformedError(f"the {self._what} stream is corrupt: {exc}") from None
            parts.append(got)
            n -= len(got)
        return b"".join(parts)

    def finish(self) -> None:
        """The stream must end exactly here: no more output, no more input."""
        if self._empty:
            return
        try:
            while not self._dec.eof:
                if self._dec.decompress(self._feed(), 1):
                    raise MalformedError(f"the {self._what} stream is longer than its chunk")
        except lzma.LZMAError as exc:
            raise MalformedError(f"the {self._what} stream is corrupt: {exc}") from None
        if self._left or self._dec.unused_data:
            raise MalformedError(f"the {self._what} stream has trailing bytes")


class _ZeroRuns:
    """The diff stream of a BSDIFF_ZRLE chunk: records of literal bytes and zero runs."""

    def __init__(self, stream: _Stream, max_records: int) -> None:
        self._stream = stream
        self._literal = 0
        self._zeros = 0
        self._want_zeros = False  # the next varint is a zero run
        self._records = 0
        self._max = max_records

    def _varint(self) -> int:
        return decode_varint(lambda: self._stream.read(1)[0])

    def read(self, n: int) -> bytes:
        parts = []
        while n:
            if self._literal:
                k = min(n, self._literal)
                parts.append(self._stream.read(k))
                self._literal -= k
            elif self._zeros:
                k = min(n, self._zeros)
                parts.append(bytes(k))
                self._zeros -= k
            elif self._want_zeros:
                self._zeros = self._varint()
                self._want_zeros = False
                continue
            else:
                self._records += 1
                if self._records > self._max:
                    raise MalformedError("delta: too many zero-run records for the chunk")
                self._literal = self._varint()
                self._want_zeros = True
                continue
            n -= len(parts[-1])
        return b"".join(parts)

    def finish(self) -> None:
        if self._want_zeros and not self._literal and not self._zeros:
            self._zeros = self._varint()
            self._want_zeros = False
        if self._literal or self._zeros or self._want_zeros:
            raise MalformedError("the diff stream is longer than its chunk")
        self._stream.finish()


class Reconstruction:
    """The new image, produced in order by ``read`` (see the module doc for the checks).

    ``src`` is the container, positioned at its first chunk record; ``end`` is
    the offset where the container (the delta's payload) ends.
    """

    def __init__(self, head: DeltaHeader, src: BinaryIO, end: int, read_at: ReadAt) -> None:
        self.head = head
        self._src = src
        self._pos = src.tell()
        self._end = end
        self._read_at = read_at
        self._pieces = self._produce()
        self._buffer = b""
        self._done = False
        self.produced = 0

    def read(self, size: int = -1, /) -> bytes:
        if size is None or size < 0:
            size = self.head.target_length
        while len(self._buffer) < size and not self._done:
            piece = next(self._pieces, None)
            if piece is None:
                self._done = True
            else:
                self._buffer += piece
        out, self._buffer = self._buffer[:size], self._buffer[size:]
        return out

    def readall_into(self, sink: BinaryIO) -> None:
        for piece in self._pieces:
            sink.write(piece)
        self._done = True

    def _produce(self) -> Iterator[bytes]:
        head = self.head
        target = hashlib.sha256()
        for piece in (head.new_signed,):
            target.update(piece)
            self.produced += len(piece)
            yield piece
        for index in range(head.chunk_count):
            for piece in self._chunk(index):
                target.update(piece)
                self.produced += len(piece)
                yield piece
        if self._pos != self._end:
            raise MalformedError(f"delta: {self._end - self._pos} bytes after the last chunk")
        target.update(head.new_signatures)
        if self.produced + len(head.new_signatures) != head.target_length or not (
            hmac.compare_digest(target.digest(), head.target_sha256)
        ):
            raise DigestMismatchError("the reconstructed image does not match the target digest")
        self.produced += len(head.new_signatures)
        yield head.new_signatures

    def _chunk(self, index: int) -> Iterator[bytes]:
        head = self.head
        if self._pos + CHUNK_HEAD.size > self._end:
            raise TruncatedError(f"truncated: delta ends inside chunk {index}")
        self._src.seek(self._pos)
        chunk = read_chunk_head(self._src, head, index)
        body = self._src.tell()
        if body + chunk.body_length > self._end:
            raise TruncatedError(f"truncated: delta ends inside chunk {index}")
        self._pos = body + chunk.body_length
        dict_size = dict_size_for(head.chunk_size)
        control = _Stream(self._src, body, chunk.control_length, Filter.NONE, dict_size, "control")
        diff = _Stream(
            self._src,
            body + chunk.control_length,
            chunk.diff_length,
            Filter.NONE,
            dict_size,
            "diff",
        )
        extra = _Stream(
            self._src,
            body + chunk.control_length + chunk.diff_length,
            chunk.extra_length,
            chunk.filter,
            dict_size,
            "extra",
        )
        out_hash = hashlib.sha256()
        src_hash = hashlib.sha256()
        diffs: _Stream | _ZeroRuns = diff
        if chunk.method is Method.BSDIFF_ZRLE:
            diffs = _ZeroRuns(diff, max_triples(chunk.out_length))
        if chunk.method is Method.LITERAL:
            pieces = self._literal(chunk, extra)
        else:
            pieces = self._bsdiff(chunk, control, diffs, extra, src_hash)
        for piece in pieces:
            out_hash.update(piece)
            yield piece
        for stream in (control, diffs, extra):
            stream.finish()
        if not hmac.compare_digest(src_hash.digest(), chunk.src_sha256):
            raise DigestMismatchError(f"delta chunk {index}: the old data it read does not match")
        if not hmac.compare_digest(out_hash.digest(), chunk.out_sha256):
            raise DigestMismatchError(f"delta chunk {index}: output hash mismatch")

    @staticmethod
    def _literal(chunk: ChunkHead, extra: _Stream) -> Iterator[bytes]:
        left = chunk.out_length
        while left:
            n = min(PIECE, left)
            yield extra.read(n)
            left -= n

    def _bsdiff(
        self,
        chunk: ChunkHead,
        control: _Stream,
        diff: _Stream | _ZeroRuns,
        extra: _Stream,
        src_hash: hashlib._Hash,
    ) -> Iterator[bytes]:
        base_length = self.head.base_length
        produced = 0
        old_pos = 0
        triples = 0
        limit = max_triples(chunk.out_length)

        def next_byte() -> int:
            return control.read(1)[0]

        while produced < chunk.out_length:
            triples += 1
            if triples > limit:
                raise MalformedError("delta: too many control triples for the chunk")
            add, copy = decode_varint(next_byte), decode_varint(next_byte)
            seek = unzigzag(decode_varint(next_byte))
            if add + copy > chunk.out_length - produced:
                raise MalformedError("delta: a control triple runs past the end of its chunk")
            if add and not 0 <= old_pos <= base_length - add:
                raise MalformedError("delta: a control triple reads outside the old image")
            done = 0
            while done < add:
                n = min(PIECE, add - done)
                old = self._read_at(old_pos + done, n)
                if len(old) != n:
                    raise TruncatedError("the old image ended early")
                src_hash.update(old)
                yield add_bytes(old, diff.read(n))
                done += n
            done = 0
            while done < copy:
                n = min(PIECE, copy - done)
                yield extra.read(n)
                done += n
            produced += add + copy
            old_pos += add + seek
