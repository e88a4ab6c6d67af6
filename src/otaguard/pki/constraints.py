"""otaguard's certificate extension: what a CA (and its signers) may sign.

OID ``2.25.264436673573351904073737786026124856518`` (a UUID-derived OID,
ITU-T X.667, so no registry is needed). The extension is **non-critical** so
that stock tools (``openssl verify``) accept our chains; every otaguard
verifier enforces it. DER::

    OtaguardConstraints ::= SEQUENCE {
        purpose      UTF8String,                        -- "code-signing" | "device-identity"
        regions      [0] EXPLICIT SEQUENCE OF UTF8String OPTIONAL,
        hardwareIds  [1] EXPLICIT SEQUENCE OF UTF8String OPTIONAL }

An absent list means "not restricted at this level"; a present list is the set
allowed. Along a chain the restrictions intersect: a signer can never sign for
more than every CA above it allows, and issuance refuses to widen them.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography import x509

from otaguard.errors import MalformedError

OID = x509.ObjectIdentifier("2.25.264436673573351904073737786026124856518")
CODE_SIGNING = "code-signing"
DEVICE_IDENTITY = "device-identity"
PURPOSES = (CODE_SIGNING, DEVICE_IDENTITY)
MAX_ITEMS = 256


@dataclass(frozen=True)
class Constraints:
    purpose: str
    regions: frozenset[str] | None = None
    hardware_ids: frozenset[str] | None = None

    def __post_init__(self) -> None:
        if self.purpose not in PURPOSES:
            raise ValueError(f"unknown purpose {self.purpose!r}")

    def narrower_than(self, parent: Constraints) -> bool:
        """True if these constraints allow nothing that ``parent`` forbids."""
        if self.purpose != parent.purpose:
            return False
        for mine, theirs in (
            (self.regions, parent.regions),
            (self.hardware_ids, parent.hardware_ids),
        ):
            if theirs is not None and (mine is None or not mine <= theirs):
                return False
        return True


def _len(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


def _tlv(tag: int, body: bytes) -> bytes:
    return bytes([tag]) + _len(len(body)) + body


def _strings(items: frozenset[str]) -> bytes:
    return _tlv(0x30, b"".join(_tlv(0x0C, s.encode()) for s in sorted(items)))


def encode(constraints: Constraints) -> bytes:
    body = _tlv(0x0C, constraints.purpose.encode())
    if constraints.regions is not None:
        body += _tlv(0xA0, _strings(constraints.regions))
    if constraints.hardware_ids is not None:
        body += _tlv(0xA1, _strings(constraints.hardware_ids))
    return _tlv(0x30, body)


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def tlv(self) -> tuple[int, bytes]:
        if self.pos + 2 > len(self.data):
            raise MalformedError("constraints extension truncated")
        tag = self.data[self.pos]
        first = self.data[self.pos + 1]
        self.pos += 2
        if first < 0x80:
            length = first
        else:
            count = first & 0x7F
            if count == 0 or count > 3 or self.pos + count > len(self.data):
                raise MalformedError("constraints extension: bad length")
            length = int.from_bytes(self.data[self.pos : self.pos + count], "big")
            if length < 0x80:
                raise MalformedError("constraints extension: non-minimal length")
            self.pos += count
        if self.pos + length > len(self.data):
            raise MalformedError("constraints extension truncated")
        body = self.data[self.pos : self.pos + length]
        self.pos += length
        return tag, body

    @property
    def done(self) -> bool:
        return self.pos == len(self.data)


def _decode_strings(body: bytes) -> frozenset[str]:
    outer = _Reader(body)
    tag, seq = outer.tlv()
    if tag != 0x30 or not outer.done:
        raise MalformedError("constraints extension: expected SEQUENCE OF UTF8String")
    reader = _Reader(seq)
    items: list[str] = []
    while not reader.done:
        tag, raw = reader.tlv()
        if tag != 0x0C:
            raise MalformedError("constraints extension: expected UTF8String")
        try:
            items.append(raw.decode())
        except UnicodeDecodeError:
            raise MalformedError("constraints extension: bad UTF-8") from None
        if len(items) > MAX_ITEMS:
            raise MalformedError("constraints extension: too many items")
    if len(set(items)) != len(items):
        raise MalformedError("constraints extension: duplicate items")
    return frozenset(items)


def decode(der: bytes) -> Constraints:
    """Parse the extension value strictly; raise MalformedError on anything else."""
    top = _Reader(der)
    tag, body = top.tlv()
    if tag != 0x30 or not top.done:
        raise MalformedError("constraints extension: expected SEQUENCE")
    reader = _Reader(body)
    tag, purpose_raw = reader.tlv()
    if tag != 0x0C:
        raise MalformedError("constraints extension: expected purpose")
    purpose = purpose_raw.decode("utf-8", "replace")
    if purpose not in PURPOSES:
        raise MalformedError(f"constraints extension: unknown purpose {purpose!r}")
    regions = hardware_ids = None
    last = -1
    while not reader.done:
        tag, inner = reader.tlv()
        if tag not in (0xA0, 0xA1) or tag <= last:
            raise MalformedError("constraints extension: unexpected field")
        last = tag
        if tag == 0xA0:
            regions = _decode_strings(inner)
        else:
            hardware_ids = _decode_strings(inner)
    return Constraints(purpose, regions, hardware_ids)


def extension(constraints: Constraints) -> x509.UnrecognizedExtension:
    return x509.UnrecognizedExtension(OID, encode(constraints))


def of_certificate(cert: x509.Certificate) -> Constraints | None:
    """The constraints a certificate carries, or None if it has none."""
    try:
        ext = cert.extensions.get_extension_for_oid(OID)
    except x509.ExtensionNotFound:
        return None
    value = ext.value
    assert isinstance(value, x509.UnrecognizedExtension)
    return decode(value.value)
