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


#: Optionally supplies the digest of ``length`` bytes at ``offset`` of the open
#: stream, computed by the caller's own means (the CLI hashes in a child process
#: while it starts up); ``None`` means "hash it here". It is asked only after the
#: signatures and policy passed, for the exact range the signed header names.
DigestSource = Callable[[BinaryIO, int, int, str], bytes | None]
