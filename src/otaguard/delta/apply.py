"""Applying a delta container: streaming, bounded memory, every chunk checked.

The applier reads the old image only through ``read_at(offset, n)`` (random,
in pieces of at most 64 KiB), reads the container strictly forward per stream,
and hands the new image out through :class:`Reconstruction`, a file-like
object whose ``read`` produces it in order. Nothing grows with the image:

* a plain delta has three LZMA2 decoders, one per stream (the streams are shared
  by all chunks), each with the container's dictionary: at most one chunk
  (<= 8 MiB, 4 MiB by default), and no larger than the biggest stream needs;
  plus one 64 KiB piece of old data, diff data, output and compressed input each.
  So the bound is ``3 * chunk_size + ~1 MiB``: under 32 MiB for any image size;
* the small-image kinds hold more, within caps that do not grow with the image
  either: a joined delta its one stream (at most 4 MiB + 64 KiB) and its decoded
  bytes (at most 4 MiB), about 9 MiB; a zstd delta the old image and the frame's
  window (each at most one chunk); a predicted delta the old image and one
  predicted range (together at most 4 MiB), its triples and their map: under
  20 MiB (``docs/delta.md``, "Memory bounds").

Checks, each with its own error: the base (length and SHA-256 of the whole old
image, :func:`check_base`, run before anything is written), every control
triple's range inside its chunk and the old image, every stream consumed
exactly, each chunk's output hash (which also proves the old bytes it read
were the base's: an output byte is the old byte plus a diff byte, or XOR it under
the ``ZERO_RUNS_XOR`` diff coding), and
the SHA-256 of the whole reconstructed image -- checked *before* its last
bytes (the signature block) are handed out, so a consumer never sees a
complete image that does not match. The last chunk's check is that one.

Resuming (``written``): an install cut short by a power loss left a prefix of
the new image in the target slot. Given a reader of that slot, the applier
first finds how many leading chunks are already there (the new image's
header, then each chunk read back and checked against the chunk table, up to
the first that is not), then hands those bytes out as read back, decoding
their part of the streams without producing it (no old-image reads, no
diffs); the chunks after them are decoded as usual. Every byte handed out,
read back or decoded, still goes into the payload digest checked before the
end: a prefix that only seemed right fails there, like any corrupt chunk.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import lzma
from array import array
from collections.abc import Callable, Iterator
from typing import BinaryIO

from otaguard.delta.format import (
    CHUNK_HASH,
    MAX_PREDICTED,
    DeltaHeader,
    DiffCoding,
    Filter,
    decode_triple_head,
    decode_varint,
    lzma_filters,
    max_triples,
    next_edit,
    unzigzag,
)
from otaguard.delta.predict import MAX_SEGMENTS, Alignment, Arch, predict
from otaguard.errors import DigestMismatchError, MalformedError, TruncatedError

#: Reads ``n`` bytes of the old image at ``offset`` (fewer only at its end).
ReadAt = Callable[[int, int], bytes]

PIECE = 1 << 16


@functools.lru_cache(maxsize=4)
def _masks(n: int) -> tuple[int, int]:
    return int.from_bytes(b"\x7f" * n, "little"), int.from_bytes(b"\x80" * n, "little")


def xor_bytes(old: bytes, diff: bytes) -> bytes:
    """Bytewise ``old XOR diff`` (the ``ZERO_RUNS_XOR`` diff coding)."""
    if len(diff) != len(old):
        raise ValueError("xor_bytes needs equal lengths")
    x = int.from_bytes(old, "little") ^ int.from_bytes(diff, "little")
    return x.to_bytes(len(old), "little")


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


def sub_bytes(new: bytes, old: bytes) -> bytes:
    """Bytewise ``(new - old) mod 256`` at C speed (SWAR over big integers; inverse of add)."""
    n = len(new)
    if len(old) != n:
        raise ValueError("sub_bytes needs equal lengths")
    if not n:
        return b""
    low, high = _masks(n)
    x = int.from_bytes(new, "little")
    y = int.from_bytes(old, "little")
    # per byte (x | 0x80) - (y & 0x7f) cannot borrow from the next; bit 7 is then fixed up
    return (((x | high) - (y & low)) ^ ((x ^ ~y) & high)).to_bytes(n, "little")


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
        data = read_at(pos, min(PIECE, old_length - pos))  # small reads: RSS stays flat
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


class _Held:
    """One part of a FLAG_JOINED container's stream, decoded whole (at most 4 MiB)."""

    def __init__(self, data: bytes, what: str) -> None:
        self._data = data
        self._pos = 0
        self._what = what

    def read(self, n: int) -> bytes:
        if self._pos + n > len(self._data):
            raise MalformedError(f"the {self._what} stream is shorter than its chunk needs")
        self._pos += n
        return self._data[self._pos - n : self._pos]

    def finish(self) -> None:
        if self._pos != len(self._data):
            raise MalformedError(f"the {self._what} stream has trailing bytes")


def _joined(src: BinaryIO, head: DeltaHeader, offset: int) -> tuple[_Held, _Held, _Held]:
    """A FLAG_JOINED stream, decoded whole (at most MAX_PREDICTED bytes) and cut in three."""
    dec = lzma.LZMADecompressor(
        format=lzma.FORMAT_RAW, filters=lzma_filters(Filter.NONE, head.dict_size)
    )
    src.seek(offset)
    data = src.read(head.extra_length)
    if len(data) != head.extra_length:
        raise TruncatedError("truncated: delta ends inside its streams")
    try:
        raw = dec.decompress(data, MAX_PREDICTED + 1)
    except lzma.LZMAError as exc:
        raise MalformedError(f"the joined stream is corrupt: {exc}") from None
    if len(raw) > MAX_PREDICTED:
        raise MalformedError("the joined stream decodes to more than 4 MiB")
    if not dec.eof or dec.unused_data:
        raise MalformedError("the joined stream does not end with the container")
    cut = head.control_length + head.diff_length
    if len(raw) < cut:
        raise MalformedError("the joined stream is shorter than its control and diff parts")
    return (
        _Held(raw[: head.control_length], "control"),
        _Held(raw[head.control_length : cut], "diff"),
        _Held(raw[cut:], "extra"),
    )


class _ZeroRuns:
    """The diff stream of a ZERO_RUNS or ZERO_RUNS_XOR delta, one chunk's records at a time:
    literal bytes and zero runs (the XOR coding differs only in how ``_add`` combines)."""

    def __init__(self, stream: _Stream | _Held, max_records: int) -> None:
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

    def end_chunk(self) -> None:
        """The chunk's records must end exactly here (the shared stream goes on)."""
        if self._want_zeros and not self._literal and not self._zeros:
            self._zeros = self._varint()
            self._want_zeros = False
        if self._literal or self._zeros or self._want_zeros:
            raise MalformedError("the diff stream is longer than its chunk")


def _old_image(head: DeltaHeader, read_at: ReadAt) -> bytes:
    """The whole (small) old image, read again and checked against the base digest."""
    data = b"".join(
        read_at(pos, min(PIECE, head.base_length - pos))
        for pos in range(0, head.base_length, PIECE)
    )
    if len(data) != head.base_length or not hmac.compare_digest(
        hashlib.sha256(data).digest(), head.base_sha256
    ):
        raise DigestMismatchError("the old image changed after the base check")
    return data


class _ZstdFrame:
    """A FLAG_ZSTD container's frame, decoded with the old image as its dictionary.

    Input is fed in small pieces so that one call's output stays bounded (a zstd
    block is at most 128 KiB of output, a few bytes of input at the least).
    """

    FEED = 64

    def __init__(
        self, src: BinaryIO, offset: int, length: int, old: bytes, window_log: int, total: int
    ) -> None:
        import zstandard

        self._src = src
        self._pos = offset
        self._left = length
        self._total = total  # the output the frame must produce, exactly
        self._made = 0
        self._buffer = b""
        dictionary = zstandard.ZstdCompressionDict(old, dict_type=zstandard.DICT_TYPE_RAWCONTENT)
        self._dec = zstandard.ZstdDecompressor(
            dict_data=dictionary, max_window_size=1 << window_log
        ).decompressobj()
        self._error = zstandard.ZstdError

    def _more(self) -> None:
        if self._dec.eof:
            raise MalformedError("the zstd frame is shorter than the new payload")
        if not self._left:
            raise TruncatedError("truncated: the zstd frame ends early")
        self._src.seek(self._pos)
        data = self._src.read(min(self.FEED, self._left))
        if not data:
            raise TruncatedError("truncated: delta ends inside its zstd frame")
        self._pos += len(data)
        self._left -= len(data)
        try:
            out = self._dec.decompress(data)
        except self._error as exc:
            raise MalformedError(f"the zstd frame is corrupt: {exc}") from None
        self._made += len(out)
        if self._made > self._total:
            raise MalformedError("the zstd frame is longer than the new payload")
        self._buffer += out

    def read(self, n: int) -> bytes:
        while len(self._buffer) < n:
            self._more()
        out, self._buffer = self._buffer[:n], self._buffer[n:]
        return out

    def finish(self) -> None:
        """The frame must end exactly with the payload and the container's streams."""
        if self._buffer or not self._dec.eof or self._left or self._dec.unused_data:
            raise MalformedError("the zstd frame does not end with the new payload")


class Reconstruction:
    """The new image, produced in order by ``read`` (see the module doc for the checks).

    ``src`` is the container, positioned at its chunk table; ``end`` is the
    offset where the container (the delta's payload) ends.
    """

    def __init__(
        self,
        head: DeltaHeader,
        src: BinaryIO,
        end: int,
        read_at: ReadAt,
        *,
        written: ReadAt | None = None,
    ) -> None:
        self.head = head
        self._src = src
        self._table = src.tell()
        body = self._table + head.table_length
        if body + head.streams_length != end:
            if body + head.streams_length > end:
                raise TruncatedError("truncated: delta ends inside its streams")
            raise MalformedError(
                f"delta: {end - body - head.streams_length} bytes after its streams"
            )
        self._read_at = read_at
        dict_size = head.dict_size
        self._control: _Stream | _Held
        self._diff: _Stream | _Held
        self._extra: _Stream | _ZstdFrame | _Held
        if head.joined:
            self._control, self._diff, self._extra = _joined(src, head, body)
        else:
            self._control = _Stream(
                src, body, head.control_length, Filter.NONE, dict_size, "control"
            )
            body += head.control_length
            self._diff = _Stream(src, body, head.diff_length, Filter.NONE, dict_size, "diff")
            body += head.diff_length
            self._extra = _Stream(
                src, body, head.extra_length, head.extra_filter, dict_size, "extra"
            )
        self._old = b""  # the whole old image, for the small-image methods only
        if head.zstd or head.predictor is not Arch.NONE:
            self._old = _old_image(head, read_at)
        if head.zstd:
            self._extra = _ZstdFrame(
                src, body, head.extra_length, self._old, head.dict_log, head.payload_length
            )
        self._old_pos = 0  # carried from chunk to chunk
        self._previous: tuple[int, int] | None = None  # (copy, seek), for FLAG_REPEAT
        self._edit_point = -1  # where the previous triple's add ended, for FLAG_REPEAT
        self._written = written
        #: Leading chunks found already in place (``written``): read back, not decoded.
        self.resumed_chunks = 0 if written is None else self._verified_prefix(written)
        self._pieces = self._produce()
        self._buffer = b""
        self._done = False
        self.produced = 0

    def _chunk_hash(self, index: int) -> bytes:
        self._src.seek(self._table + CHUNK_HASH * index)
        return self._src.read(CHUNK_HASH)

    def _chunk_offset(self, index: int) -> int:
        return len(self.head.new_signed) + index * self.head.chunk_size

    def _read_back(self, written: ReadAt, index: int) -> Iterator[bytes]:
        start, length = self._chunk_offset(index), self.head.chunk_length(index)
        for done in range(0, length, PIECE):
            data = written(start + done, min(PIECE, length - done))
            if len(data) != min(PIECE, length - done):
                raise TruncatedError("the target ended early")
            yield data

    def _verified_prefix(self, written: ReadAt) -> int:
        """How many leading chunks ``written`` already holds (the last chunk never counts)."""
        head = self.head
        if head.predictor is not Arch.NONE or written(0, len(head.new_signed)) != head.new_signed:
            return 0  # a predicted delta is one chunk: nothing to resume
        for index in range(head.chunk_count - 1):  # the last one's check is the whole payload's
            digest = hashlib.sha256()
            try:
                for data in self._read_back(written, index):
                    digest.update(data)
            except TruncatedError:
                return index
            if not hmac.compare_digest(digest.digest()[:CHUNK_HASH], self._chunk_hash(index)):
                return index
        return max(0, head.chunk_count - 1)

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
        self.produced += len(head.new_signed)
        yield head.new_signed
        payload = hashlib.new(head.payload_digest.algorithm.hashlib_name)
        count = head.chunk_count
        for index in range(count):
            out_hash = hashlib.sha256()
            if index < self.resumed_chunks:
                assert self._written is not None
                self._skip_chunk(index)
                pieces = self._read_back(self._written, index)
            else:
                pieces = self._chunk(index)
            for piece in pieces:
                out_hash.update(piece)
                payload.update(piece)
                self.produced += len(piece)
                yield piece
            if index + 1 < count:  # the last chunk's check is the whole payload's, just below
                expected = self._chunk_hash(index)
                if not hmac.compare_digest(out_hash.digest()[:CHUNK_HASH], expected):
                    raise DigestMismatchError(
                        f"delta chunk {index}: output hash mismatch (the old image read differs "
                        "from the delta's base, or the delta is corrupt)"
                    )
        for stream in (self._control, self._diff, self._extra):
            stream.finish()
        if self.produced + len(head.new_signatures) != head.target_length or not (
            hmac.compare_digest(payload.digest(), head.payload_digest.value)
        ):
            raise DigestMismatchError(
                "the reconstructed payload does not match the new image's payload digest"
            )
        self.produced += len(head.new_signatures)
        yield head.new_signatures

    def _skip_chunk(self, index: int) -> None:
        """Decode the chunk's part of the streams (they run on) without producing its output.

        Control triples are read and checked as usual; the diff and extra bytes
        are decoded and dropped, and the old image is not read.
        """
        head = self.head
        out_length = head.chunk_length(index)
        if head.zstd:
            for start in range(0, out_length, PIECE):
                self._extra.read(min(PIECE, out_length - start))
            return
        diff: _Stream | _Held | _ZeroRuns = self._diff
        if head.diff_coding in (DiffCoding.ZERO_RUNS, DiffCoding.ZERO_RUNS_XOR):
            diff = _ZeroRuns(self._diff, max_triples(out_length))
        for add, copy, _old_pos in self._triples(out_length):
            for done in range(0, add, PIECE):
                diff.read(min(PIECE, add - done))
            for _piece in self._copy(copy):
                pass
        if isinstance(diff, _ZeroRuns):
            diff.end_chunk()

    def _chunk(self, index: int) -> Iterator[bytes]:
        """Run the chunk's control triples; they may not read or write past the chunk."""
        head = self.head
        out_length = head.chunk_length(index)
        if head.zstd:
            for start in range(0, out_length, PIECE):
                yield self._extra.read(min(PIECE, out_length - start))
            return
        diff: _Stream | _Held | _ZeroRuns = self._diff
        if head.diff_coding in (DiffCoding.ZERO_RUNS, DiffCoding.ZERO_RUNS_XOR):
            diff = _ZeroRuns(self._diff, max_triples(out_length))
        if head.predictor is Arch.NONE:
            for add, copy, old_pos in self._triples(out_length):
                yield from self._add(old_pos, add, diff)
                yield from self._copy(copy)
        else:
            yield from self._predicted(out_length, diff)
        if isinstance(diff, _ZeroRuns):
            diff.end_chunk()

    def _triples(self, out_length: int) -> Iterator[tuple[int, int, int]]:
        """The chunk's control triples as (add, copy, old position), each checked first."""
        head = self.head
        base_length = head.base_length
        control = self._control
        produced = 0
        triples = 0
        limit = max_triples(out_length)

        def next_byte() -> int:
            return control.read(1)[0]

        while produced < out_length:
            triples += 1
            if triples > limit:
                raise MalformedError("delta: too many control triples for the chunk")
            add, repeated = decode_varint(next_byte), None
            if head.repeat:
                add, repeated = decode_triple_head(add, self._previous, self._next_edit)
            if repeated is None:
                copy = decode_varint(next_byte)
                repeated = (copy, unzigzag(decode_varint(next_byte)))
            copy, seek = self._previous = repeated
            if add + copy > out_length - produced:
                raise MalformedError("delta: a control triple runs past the end of its chunk")
            if add and head.full:
                raise MalformedError("delta: a full-image delta reads the old image")
            old_pos = self._old_pos
            if add and not 0 <= old_pos <= base_length - add:
                raise MalformedError("delta: a control triple reads outside the old image")
            yield add, copy, old_pos
            produced += add + copy
            self._edit_point = old_pos + add
            self._old_pos = old_pos + add + seek

    def _next_edit(self) -> int | None:
        return next_edit(self._read_at, self._edit_point, self._old_pos)

    def _add(self, old_pos: int, add: int, diff: _Stream | _Held | _ZeroRuns) -> Iterator[bytes]:
        combine = xor_bytes if self.head.diff_coding is DiffCoding.ZERO_RUNS_XOR else add_bytes
        for done in range(0, add, PIECE):
            n = min(PIECE, add - done)
            old = self._read_at(old_pos + done, n)
            if len(old) != n:
                raise TruncatedError("the old image ended early")
            yield combine(old, diff.read(n))

    def _copy(self, copy: int) -> Iterator[bytes]:
        for done in range(0, copy, PIECE):
            yield self._extra.read(min(PIECE, copy - done))

    def _predicted(self, out_length: int, diff: _Stream | _Held | _ZeroRuns) -> Iterator[bytes]:
        """A predicted (small, one-chunk) delta: all triples first, then the pointer-aware view.

        The predictor maps reference targets through every matched range, so the
        triples are read (and checked) before any output; at most MAX_SEGMENTS.
        """
        head = self.head
        old = self._old
        adds, copies, olds, news = array("q"), array("q"), array("q"), array("q")
        new_pos = 0
        for add, copy, old_pos in self._triples(out_length):
            if len(adds) == MAX_SEGMENTS:
                raise MalformedError("delta: too many control triples for a predicted delta")
            adds.append(add)
            copies.append(copy)
            olds.append(old_pos)
            news.append(new_pos)
            new_pos += add + copy
        alignment = Alignment(olds, news, adds)
        for add, copy, old_pos, new_pos in zip(adds, copies, olds, news, strict=True):
            if add:
                view = predict(
                    old, old_pos, new_pos, add, head.predictor, head.phase, alignment, head.absolute
                )
                for done in range(0, add, PIECE):
                    n = min(PIECE, add - done)
                    yield add_bytes(view[done : done + n], diff.read(n))
            yield from self._copy(copy)
