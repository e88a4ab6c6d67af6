"""C2SP signed-note: text signed by one or more named keys.

Wire form (c2sp.org/signed-note, "Format")::

    <text, UTF-8, ending in a newline>
    <blank line>
    — <key name> <base64(4-byte key id || signature)>      (one line per signature)

Signature types otaguard signs and verifies ("Signature types"):

* ``0x01`` Ed25519 over the text (RFC 8032); key id =
  ``SHA-256(name || 0x0A || 0x01 || 32-byte public key)[:4]``.
* ``0x02`` ECDSA "as implemented by github.com/transparency-dev/witness": ASN.1
  DER signature over SHA-256 of the text; key id = ``SHA-256(DER SPKI)[:4]``.
  Only P-256 (the spec's SHOULD): HSMs without EdDSA still get a standard format.

A verifier key string is ``<name>+<hex key id>+<base64(type || public key)>``
(the public key of type 0x02 is its DER SubjectPublicKeyInfo). RSA has no
signed-note type and is refused.

Signing goes through :class:`otaguard.crypto.signer.Signer`, so the audit key may
live in an HSM (PKCS#11: Ed25519 via CKM_EDDSA, P-256 via CKM_ECDSA).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from otaguard.crypto.keys import PublicKey, public_key_der
from otaguard.crypto.signer import Signer
from otaguard.errors import AuditCheckpointError, AuditSignatureError, UsageError

ALG_ED25519 = 0x01
ALG_ECDSA = 0x02
_EM_DASH = "\u2014"
#: The spec asks verifiers to accept at least 16 signatures; Go's note.Open caps at 100.
MAX_SIGNATURES = 100
MAX_NOTE_SIZE = 1 << 20


def b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def b64decode_strict(text: str) -> bytes:
    """RFC 4648 §4 base64, canonical only (one encoding per byte string)."""
    try:
        data = base64.b64decode(text.encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error, ValueError):
        raise ValueError("not base64") from None
    if b64encode(data) != text:
        raise ValueError("not canonical base64")
    return data


def valid_key_name(name: str) -> bool:
    """Non-empty, no Unicode spaces, no ``+``, no control characters ("Format")."""
    return bool(name) and "+" not in name and not any(c.isspace() or c < " " for c in name)


def _check_name(name: str) -> None:
    if not valid_key_name(name):
        raise UsageError(f"{name!r} is not a signed-note key name (no spaces or '+')")


@dataclass(frozen=True)
class VerifierKey:
    """A named public key a note can be verified with."""

    name: str
    key_id: bytes
    alg: int
    public_key: PublicKey

    @classmethod
    def for_public_key(cls, name: str, key: PublicKey) -> VerifierKey:
        """The verifier key of ``key`` under ``name`` (Ed25519 or ECDSA P-256)."""
        _check_name(name)
        alg, material = _key_material(key)
        return cls(name, _key_id(name, alg, material), alg, key)

    @classmethod
    def parse(cls, text: str) -> VerifierKey:
        """Parse ``<name>+<hex id>+<base64(type || key)>``; the id must match the key."""
        name, plus1, rest = text.strip().partition("+")
        hex_id, plus2, encoded = rest.partition("+")
        if not plus1 or not plus2 or not valid_key_name(name):
            raise UsageError("a verifier key is <name>+<hex key id>+<base64 key>")
        if len(hex_id) != 8 or hex_id != hex_id.lower():
            raise UsageError("a verifier key id is 8 lower-case hex digits")
        try:
            key_id = bytes.fromhex(hex_id)
            blob = b64decode_strict(encoded)
        except ValueError as exc:
            raise UsageError(f"malformed verifier key: {exc}") from None
        if len(blob) < 2:
            raise UsageError("verifier key has no key material")
        alg, material = blob[0], blob[1:]
        key: PublicKey
        try:
            if alg == ALG_ED25519 and len(material) == 32:
                key = ed25519.Ed25519PublicKey.from_public_bytes(material)
            elif alg == ALG_ECDSA:
                loaded = serialization.load_der_public_key(material)
                if not isinstance(loaded, ec.EllipticCurvePublicKey):
                    raise ValueError("not an ECDSA key")
                key = loaded
            else:
                raise UsageError(f"unsupported signed-note key type 0x{alg:02x}")
        except ValueError as exc:
            raise UsageError(f"malformed verifier key: {exc}") from None
        verifier = cls.for_public_key(name, key)
        if verifier.key_id != key_id or _key_material(key)[1] != material:
            raise UsageError("verifier key id does not match its key")
        return verifier

    def encode(self) -> str:
        _, material = _key_material(self.public_key)
        return f"{self.name}+{self.key_id.hex()}+{b64encode(bytes([self.alg]) + material)}"

    def verify(self, message: bytes, signature: bytes) -> bool:
        key = self.public_key
        try:
            if isinstance(key, ed25519.Ed25519PublicKey):
                key.verify(signature, message)
            elif isinstance(key, ec.EllipticCurvePublicKey):
                key.verify(signature, message, ec.ECDSA(hashes.SHA256()))
            else:  # pragma: no cover - for_public_key refuses other keys
                return False
        except InvalidSignature:
            return False
        return True


def _key_material(key: PublicKey) -> tuple[int, bytes]:
    if isinstance(key, ed25519.Ed25519PublicKey):
        return ALG_ED25519, key.public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
    if isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp256r1":
        return ALG_ECDSA, public_key_der(key)
    raise UsageError(
        "signed notes are signed with Ed25519 (type 0x01) or ECDSA P-256 (type 0x02); "
        "use one of those for the audit key"
    )


def _key_id(name: str, alg: int, material: bytes) -> bytes:
    if alg == ALG_ECDSA:  # "the truncated SHA-256 hash of the DER encoded public key"
        return hashlib.sha256(material).digest()[:4]
    return hashlib.sha256(name.encode() + b"\n" + bytes([alg]) + material).digest()[:4]


@dataclass(frozen=True)
class NoteSignature:
    name: str
    key_id: bytes
    signature: bytes


@dataclass(frozen=True)
class Note:
    """A parsed, *unverified* note: use :func:`open_note` before trusting ``text``."""

    text: bytes
    signatures: tuple[NoteSignature, ...]


def _check_text(text: str) -> None:
    if any(c < " " and c != "\n" for c in text):
        raise AuditCheckpointError("a signed note holds a control character")


def parse_note(data: bytes) -> Note:
    """Strictly split a signed note into its text and signature lines."""
    if len(data) > MAX_NOTE_SIZE:
        raise AuditCheckpointError(f"signed note larger than {MAX_NOTE_SIZE} bytes")
    try:
        whole = data.decode("utf-8")
    except UnicodeDecodeError:
        raise AuditCheckpointError("signed note is not UTF-8") from None
    _check_text(whole)
    split = whole.rfind("\n\n")  # "the last empty line in the note"
    if split < 0 or not whole.endswith("\n"):
        raise AuditCheckpointError("signed note has no blank line before its signatures")
    text, block = whole[: split + 1], whole[split + 2 :]
    lines = block[:-1].split("\n")
    if not block or len(lines) > MAX_SIGNATURES:
        raise AuditCheckpointError(f"a signed note carries 1 to {MAX_SIGNATURES} signatures")
    signatures = []
    for line in lines:
        prefix, _, rest = line.partition(" ")
        name, space, encoded = rest.partition(" ")
        if prefix != _EM_DASH or not space or not valid_key_name(name):
            raise AuditCheckpointError("malformed signature line in signed note")
        try:
            blob = b64decode_strict(encoded)
        except ValueError:
            raise AuditCheckpointError("signature line is not canonical base64") from None
        if len(blob) < 5:
            raise AuditCheckpointError("signature line is too short")
        signatures.append(NoteSignature(name, blob[:4], blob[4:]))
    return Note(text.encode("utf-8"), tuple(signatures))


def open_note(data: bytes, keys: Sequence[VerifierKey]) -> tuple[bytes, tuple[VerifierKey, ...]]:
    """The note's text and the trusted keys whose signatures verified.

    "Signatures" rules: a line whose name *and* key id do not both match a known
    key is ignored; a known key's signature that fails rejects the whole note; no
    verified signature by a known key rejects it.
    """
    note = parse_note(data)
    verified: list[VerifierKey] = []
    for sig in note.signatures:
        key = next((k for k in keys if k.name == sig.name and k.key_id == sig.key_id), None)
        if key is None or key in verified:
            continue
        if not key.verify(note.text, sig.signature):
            raise AuditSignatureError(f"the signature of trusted key {key.name} does not verify")
        verified.append(key)
    if not verified:
        names = ", ".join(sorted({s.name for s in note.signatures}))
        raise AuditSignatureError(f"no signature by a trusted audit key (signed by: {names})")
    return note.text, tuple(verified)


def sign_note(text: bytes, signer: Signer, name: str) -> bytes:
    """``text`` followed by a blank line and ``signer``'s signature line under ``name``."""
    try:
        decoded = text.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("note text must be UTF-8") from None
    if not decoded.endswith("\n") or any(c < " " and c != "\n" for c in decoded):
        raise ValueError("note text ends with a newline and holds no control characters")
    key = VerifierKey.for_public_key(name, signer.public_key)
    signature = signer.sign(text)
    line = f"{_EM_DASH} {name} {b64encode(key.key_id + signature)}\n"
    return text + b"\n" + line.encode("utf-8")


def load_trusted_key(spec: str) -> PublicKey | VerifierKey:
    """A trusted audit key: a public key file (PEM), a file holding a verifier key, or a
    verifier key string ``NAME+ID+KEY`` (what ``otaguard audit vkey`` prints)."""
    import os

    from otaguard.crypto.keys import load_public_key
    from otaguard.crypto.loader import read_key_file
    from otaguard.errors import KeyLoadError, UsageError

    if not os.path.exists(spec):
        try:
            return VerifierKey.parse(spec)
        except UsageError as exc:
            raise UsageError(f"--trusted-key {spec}: not a file, and {exc}") from None
    data = read_key_file(spec)
    if b"-----BEGIN" not in data:
        try:
            return VerifierKey.parse(data.decode("ascii"))
        except (UnicodeDecodeError, UsageError):
            pass
    try:
        return load_public_key(data)
    except KeyLoadError as exc:
        raise KeyLoadError(f"{spec}: {exc}") from exc
