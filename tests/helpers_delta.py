"""Delta test helpers: image pairs, and functions to create, apply and re-sign deltas."""

from __future__ import annotations

import io
import random
from dataclasses import dataclass

from otaguard.crypto.keys import PrivateKey
from otaguard.crypto.signer import KeySigner
from otaguard.delta import create, open_delta, reconstruct
from otaguard.delta.engine import DeltaStats
from otaguard.image import Digest, HashAlgorithm, PayloadKind, TrustedKeys, sign_stream
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

    @property
    def trusted(self) -> TrustedKeys:
        return TrustedKeys.of([self.key.public_key()])

    def delta(self, *, chunk_size: int = CHUNK, **kw: object) -> bytes:
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


def sha_digest(value: bytes) -> Digest:
    return Digest(HashAlgorithm.SHA256, value)
