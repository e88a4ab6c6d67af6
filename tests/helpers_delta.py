"""Delta test helpers: image pairs, and functions to create, apply and re-sign deltas."""

from __future__ import annotations

import io
import random
from dataclasses import dataclass

from hypothesis import strategies as st

from otaguard.crypto.keys import PrivateKey
from otaguard.crypto.signer import KeySigner
from otaguard.delta import create, open_delta, reconstruct
from otaguard.delta.engine import DeltaStats
from otaguard.delta.format import CHUNK_HASH, DeltaHeader, header_dictionary, read_header
from otaguard.errors import RejectedError
from otaguard.image import Digest, HashAlgorithm, PayloadKind, TrustedKeys, sign_stream
from otaguard.image.envelope_format import parse_signature_block
from otaguard.image.envelope_verify import read_protected

HW = "acme-ecu-v2"
CHUNK = 1 << 12  # small chunks so that small images have several


def edit(payload: bytes, seed: int, edits: int = 4) -> bytes:
    """A 'new release': a few insertions, deletions and overwrites."""
    rnd = random.Random(seed)
    out = bytearray(payload)
    for _ in range(edits):
        pos = rnd.randrange(len(out) + 1)
        kind = rnd.randrange(3)
        if kind == 0:
            out[pos:pos] = rnd.randbytes(rnd.randrange(1, 64))
        elif kind == 1:
            del out[pos : pos + rnd.randrange(1, 64)]
        else:
            out[pos : pos + 8] = rnd.randbytes(8)
    return bytes(out)


@dataclass
class Pair:
    key: PrivateKey
    old: bytes
    new: bytes
    join: bool = True  # False: deltas keep three streams (for tests that read them)

    @property
    def trusted(self) -> TrustedKeys:
        return TrustedKeys.of([self.key.public_key()])

    def delta(self, *, chunk_size: int = CHUNK, **kw: object) -> bytes:
        kw.setdefault("join", self.join)
        return make_delta(self.key, self.old, self.new, chunk_size=chunk_size, **kw)[0]


def make_delta(key: PrivateKey, old: bytes, new: bytes, **kw: object) -> tuple[bytes, DeltaStats]:
    out = io.BytesIO()
    _meta, stats = create(old, new, out, [KeySigner(key)], **kw)  # type: ignore[arg-type]
    return out.getvalue(), stats


def apply_bytes(old: bytes, delta: bytes, trusted: TrustedKeys | None) -> bytes:
    stream = io.BytesIO(delta)
    opened = open_delta(stream, trusted)
    image = reconstruct(opened, stream, len(old), lambda off, n: old[off : off + n])
    return image.read()


def container_of(delta: bytes) -> bytes:
    signed, meta = read_protected(io.BytesIO(delta))
    return delta[len(signed) : len(signed) + meta.payload_length]


def resign(key: PrivateKey, delta: bytes, container: bytes, **override: object) -> bytes:
    """The same outer metadata (unless overridden) around another container, validly signed."""
    _signed, meta = read_protected(io.BytesIO(delta))
    out = io.BytesIO()
    args: dict[str, object] = {
        "version": meta.version,
        "security_counter": meta.security_counter,
        "hardware_ids": meta.hardware_ids,
        "created": meta.created,
        "payload_kind": PayloadKind.DELTA,
        "delta_base": meta.delta_base,
    }
    args.update(override)
    sign_stream(io.BytesIO(container), out, [KeySigner(key)], **args)  # type: ignore[arg-type]
    return out.getvalue()


def zdict_of(delta: bytes) -> bytes:
    """The deflate dictionary of the new image's header, as the applier derives it."""
    signed, meta = read_protected(io.BytesIO(delta))
    entries = parse_signature_block(delta[len(signed) + meta.payload_length :])
    return header_dictionary(meta, [e.key_id for e in entries])


def split_container(delta: bytes) -> tuple[DeltaHeader, bytes, bytes]:
    """The container's header, the bytes after it, and the dictionary it was read with."""
    zdict = zdict_of(delta)
    stream = io.BytesIO(container_of(delta))
    head = read_header(stream, zdict=zdict)
    return head, stream.read(), zdict


def header_of(delta: bytes) -> DeltaHeader:
    return split_container(delta)[0]


def parts_of(container: bytes, zdict: bytes) -> tuple[DeltaHeader, list[bytes], list[bytes]]:
    """Header, chunk table entries and the three streams of a (not joined) container."""
    stream = io.BytesIO(container)
    head = read_header(stream, zdict=zdict)
    table = [stream.read(CHUNK_HASH) for _ in range(head.table_length // CHUNK_HASH)]
    lengths = (head.control_length, head.diff_length, head.extra_length)
    streams = [stream.read(n) for n in lengths]
    assert not stream.read()
    return head, table, streams


def refused_or_exact(old: bytes, new: bytes, delta: bytes) -> None:
    """Applied without trust, a delta is refused cleanly or rebuilds exactly ``new``."""
    try:
        image = apply_bytes(old, delta, None)
    except RejectedError:
        return
    assert image == new  # nothing else may ever come out


def flip_bits(container: bytes, data: st.DataObject, most: int = 3) -> bytes:
    """``container`` with 1 to ``most`` bits flipped where hypothesis says."""
    out = bytearray(container)
    for _ in range(data.draw(st.integers(1, most))):
        out[data.draw(st.integers(0, len(out) - 1))] ^= 1 << data.draw(st.integers(0, 7))
    return bytes(out)


def assert_mutations_refused_or_exact(pair: Pair, delta: bytes, data: st.DataObject) -> None:
    """Bit flips anywhere in the container, re-signed: refused cleanly or the exact image."""
    mutated = flip_bits(container_of(delta), data)
    refused_or_exact(pair.old, pair.new, resign(pair.key, delta, mutated))


def sha_digest(value: bytes) -> Digest:
    return Digest(HashAlgorithm.SHA256, value)


def code_layout(arch: str, seed: int, grow: int = 0, functions: int = 80) -> tuple[bytes, int]:
    """Machine-code-like bytes.

    Functions of compiler-like filler (a few recurring 16-bit instructions) that call
    each other: ``arch`` "thumb2" (BL, even offsets) or "x86_64" (E8 call rel32).
    ``grow`` bytes (rounded down to even for Thumb) are inserted at the end of the
    middle function's body, so every later function moves: what a small fix does to
    firmware. Returns the image and where the bytes went in.
    """
    from otaguard.delta.predict import _thumb_encode

    rnd = random.Random(seed)
    vocabulary = [rnd.randrange(0x2000, 0x4800).to_bytes(2, "little") for _ in range(VOCAB)]
    bodies = [
        b"".join(rnd.choice(vocabulary) for _ in range(rnd.randrange(8, 48)))
        for _ in range(functions)
    ]
    calls = [[rnd.randrange(functions) for _ in range(rnd.randrange(1, 5))] for _ in bodies]
    if arch == "thumb2":
        grow -= grow % 2
    grown = functions // 2
    grown_at = sum(len(b) for b in bodies[: grown + 1]) + (4 if arch == "thumb2" else 5) * sum(
        len(c) for c in calls[:grown]
    )
    if grow:
        bodies[grown] += random.Random(seed + 1).randbytes(grow)
    width = 4 if arch == "thumb2" else 5
    starts, at = [], 0
    for body, callees in zip(bodies, calls, strict=True):
        starts.append(at)
        at += len(body) + width * len(callees)
    out = bytearray()
    for body, callees in zip(bodies, calls, strict=True):
        out += body
        for callee in callees:
            offset = starts[callee] - (len(out) + width)
            if arch == "thumb2":
                encoded = _thumb_encode(0xF000, 0xD000, offset)
                assert encoded is not None
                out += encoded
            else:
                out += b"\xe8" + offset.to_bytes(4, "little", signed=True)
    return bytes(out), grown_at


VOCAB = 24


def code_image(arch: str, seed: int, grow: int = 0, functions: int = 80) -> bytes:
    return code_layout(arch, seed, grow, functions)[0]
