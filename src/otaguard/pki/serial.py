"""Certificate serial numbers: the one check for every serial otaguard takes in.

RFC 5280 4.1.2.2: a serial is a positive INTEGER of at most 20 octets. DER
integers are signed, so 20 octets hold at most 2^159 - 1. No conforming
certificate carries a serial outside 1 .. 2^159 - 1, so a revocation of one
revokes nothing -- and ``cryptography`` refuses to put it in a CRL, so a single
such entry would stop a CA from ever publishing its CRL again. Serials are
therefore checked where they enter: typed by an operator (``parse_serial``),
read back from a CA's state, or given to ``Revocation``.
"""

from __future__ import annotations

import re

from otaguard.errors import UsageError

MAX_SERIAL = (1 << 159) - 1
#: Hex as operators paste it: ``openssl x509 -serial`` prints ``serial=0A1B...``; DER dumps
#: use colons; our own output is plain upper-case hex. Longer than any serial, so that an
#: overlong one is refused for its size, not for its spelling. No nested repetition: linear.
_TEXT = re.compile(r"(?:serial=)?(?:0x)?([0-9a-f][0-9a-f:]{0,599})", re.IGNORECASE)


def describe(serial: int) -> str:
    """A serial for a message: hex, or its size when it is too long to be one."""
    if serial.bit_length() > 160:
        return f"of {serial.bit_length()} bits"
    return f"{serial:X}" if serial >= 0 else f"-{-serial:X}"


def check_serial(serial: int) -> int:
    """``serial`` if a certificate can carry it, else UsageError."""
    if not 1 <= serial <= MAX_SERIAL:
        raise UsageError(
            f"serial {describe(serial)} is outside 1 to 2^159-1 (RFC 5280): "
            "no certificate carries it"
        )
    return serial


def parse_serial(text: str) -> int:
    """A serial typed in hex (``0A1B``, ``0a:1b``, ``serial=0A1B``, ``0x0a1b``), checked."""
    match = _TEXT.fullmatch(text.strip())
    if match is None:
        raise UsageError(f"not a hex serial number: {text[:80]!r}")
    return check_serial(int(match.group(1).replace(":", ""), 16))
