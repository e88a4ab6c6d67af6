"""The verifier's trust anchors: public keys by key id, shared by both image formats."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import BinaryIO

from otaguard.crypto.keys import PublicKey, key_id_bytes


@dataclass(frozen=True)
class TrustedKeys:
    """The verifier's trust anchors, indexed by key id (SHA-256 of the SPKI DER)."""

    by_id: Mapping[bytes, PublicKey]

    @classmethod
    def of(cls, keys: Iterable[PublicKey]) -> TrustedKeys:
        return cls({key_id_bytes(k): k for k in keys})

    def __len__(self) -> int:
        return len(self.by_id)


#: A digest the caller computed itself, for ``unsafe_precomputed_digest`` of
#: :func:`~otaguard.image.verify_stream` and :func:`~otaguard.image.mcuboot.verify_mcuboot`:
#: called as ``(stream, offset, length, algorithm)``, it returns the ``algorithm`` digest
#: of the ``length`` bytes at ``offset`` of the open ``stream``, or ``None`` ("hash it
#: here"). It is asked only after the signatures and policy passed, for the exact range
#: the parsed signed header names.
#:
#: UNSAFE unless the caller has proved the digest is of exactly those bytes of exactly
#: that open file: the verifier compares what this returns with the signed digest and
#: never reads the bytes itself, so a digest of other bytes -- another file, the same
#: file before someone rewrote it, a cache keyed by a path -- makes it accept a payload
#: nobody hashed. The CLI's prefetch (``otaguard.image.prefetch``) hashes in a child
#: process and answers only for the same device, inode, size, mtime and ctime and the
#: same range; anything less sure must pass ``None``.
PrecomputedDigest = Callable[[BinaryIO, int, int, str], bytes | None]
