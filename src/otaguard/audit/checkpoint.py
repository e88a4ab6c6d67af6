"""C2SP tlog-checkpoint: the signed tree head of the audit log.

Note text (c2sp.org/tlog-checkpoint, "Note text")::

    <origin>                         the log's identity, e.g. audit.example.com/fleet
    <tree size>                      ASCII decimal, no leading zeroes
    <root hash>                      base64 of the 32-byte RFC 9162 tree head
    [<extension line>...]            opaque, non-empty (we write none)

otaguard signs a checkpoint with the key name equal to the origin ("The log's
key name in its signature line SHOULD match the origin line") and, when
verifying, requires it: a key trusted for one log does not vouch for another
log's checkpoints. Parsing is strict: one spelling per checkpoint.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from otaguard.audit.merkle import EMPTY_ROOT, HASH_SIZE, MAX_TREE_SIZE
from otaguard.audit.note import (
    VerifierKey,
    b64decode_strict,
    b64encode,
    open_note,
    parse_note,
    sign_note,
)
from otaguard.crypto.keys import PublicKey
from otaguard.crypto.signer import Signer
from otaguard.errors import AuditCheckpointError, AuditSignatureError, UsageError

_SIZE = re.compile(r"0|[1-9][0-9]{0,18}")


@dataclass(frozen=True)
class Checkpoint:
    """A tree head: the log ``origin`` had ``size`` entries with root hash ``root``."""

    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.origin or "\n" in self.origin:
            raise ValueError("a checkpoint origin is one non-empty line")
        if not 0 <= self.size <= MAX_TREE_SIZE or len(self.root) != HASH_SIZE:
            raise ValueError("checkpoint size or root hash out of range")
        if any(not line or "\n" in line for line in self.extensions):
            raise ValueError("checkpoint extension lines are non-empty single lines")

    def text(self) -> bytes:
        """The note text: the bytes the signatures cover."""
        lines = [self.origin, str(self.size), b64encode(self.root), *self.extensions]
        return ("\n".join(lines) + "\n").encode("utf-8")


def parse_checkpoint(text: bytes) -> Checkpoint:
    """Strictly parse a checkpoint's note text (not the signatures: see :func:`open_checkpoint`)."""
    try:
        decoded = text.decode("utf-8")
    except UnicodeDecodeError:
        raise AuditCheckpointError("checkpoint is not UTF-8") from None
    if not decoded.endswith("\n"):
        raise AuditCheckpointError("checkpoint text must end with a newline")
    lines = decoded[:-1].split("\n")
    if len(lines) < 3 or any(not line for line in lines):
        raise AuditCheckpointError("a checkpoint is at least three non-empty lines")
    origin, size_text, root_text, *extensions = lines
    if not _SIZE.fullmatch(size_text) or int(size_text) > MAX_TREE_SIZE:
        raise AuditCheckpointError(f"checkpoint tree size {size_text!r} is not a decimal size")
    try:
        root = b64decode_strict(root_text)
    except ValueError:
        raise AuditCheckpointError("checkpoint root hash is not canonical base64") from None
    if len(root) != HASH_SIZE:
        raise AuditCheckpointError("checkpoint root hash is not 32 bytes")
    size = int(size_text)
    if size == 0 and root != EMPTY_ROOT:
        raise AuditCheckpointError("an empty tree's root hash is SHA-256 of nothing")
    if any(c < " " for line in lines for c in line):
        raise AuditCheckpointError("checkpoint holds a control character")
    return Checkpoint(origin, size, root, tuple(extensions))


def sign_checkpoint(checkpoint: Checkpoint, signer: Signer) -> bytes:
    """The signed note of ``checkpoint``, signed under the key name ``origin``."""
    return sign_note(checkpoint.text(), signer, checkpoint.origin)


def trusted_keys_for(origin: str, trusted: Sequence[VerifierKey | PublicKey]) -> list[VerifierKey]:
    """Verifier keys for ``origin``: named keys as given, bare public keys named ``origin``."""
    keys = []
    for key in trusted:
        if isinstance(key, VerifierKey):
            keys.append(key)
            continue
        try:
            keys.append(VerifierKey.for_public_key(origin, key))
        except UsageError as exc:
            raise AuditCheckpointError(f"checkpoint origin {origin!r}: {exc}") from None
    return keys


def open_checkpoint(data: bytes, trusted: Sequence[VerifierKey | PublicKey]) -> Checkpoint:
    """Verify a signed checkpoint and return it.

    1. The note parses and its text is a checkpoint (the origin is read before
       the signature only to name bare public keys, whose key id binds the name).
    2. A trusted key verifies it (signed-note rules, :func:`open_note`).
    3. That key's name is the checkpoint's origin.
    """
    checkpoint = parse_checkpoint(parse_note(data).text)
    text, verified_by = open_note(data, trusted_keys_for(checkpoint.origin, trusted))
    if not any(key.name == checkpoint.origin for key in verified_by):
        raise AuditSignatureError(
            f"checkpoint of log {checkpoint.origin!r} is signed by the audit key of "
            f"{verified_by[0].name!r}, not by that log's key"
        )
    return parse_checkpoint(text)
