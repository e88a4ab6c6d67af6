"""CA and signer directories on disk.

Each CA or signer lives in one directory::

    cert.pem     its certificate
    chain.pem    its certificate, then its issuers' up to (not including) the root
    key.pem      its private key (mode 0600, encrypted if a passphrase was given), or
    key.uri      the PKCS#11 URI of its key when the key lives in an HSM (no PIN in it)
    state.json   CAs only: revocations recorded so far and the last CRL number,
                 checked against ``STATE_SCHEMA`` and every serial against
                 ``pki/serial.py`` whenever it is read

A directory is created whole or not at all (built in a temporary directory,
then renamed), and an existing CA directory is never overwritten: losing a
CA key to a typo is not recoverable.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from otaguard._atomic import write_atomic
from otaguard._files import read_bounded
from otaguard._statefile import load_state
from otaguard.crypto.keys import certificate_key
from otaguard.crypto.loader import load_signer
from otaguard.errors import StorageError, UsageError
from otaguard.pki.issue import REVOCATION_REASONS, Issuer, Revocation
from otaguard.pki.serial import check_serial

MAX_PEM = 1 << 20
#: A CRL of a million revocations is ~40 MB; anything larger is not a CRL we issued.
MAX_CRL = 64 << 20
#: A CA's state.json; a million revocations fit.
MAX_STATE = 256 << 20
STATE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "revoked": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["serial", "date", "reason"],
                "properties": {
                    # "-": the serials older versions accepted; _entries names them
                    "serial": {"type": "string", "pattern": "^-?[0-9A-Fa-f]{1,600}$"},
                    "date": {"type": "string", "maxLength": 64},
                    "reason": {"enum": sorted(REVOCATION_REASONS)},
                },
            },
        },
        "crl_number": {"type": "integer", "minimum": 0},
    },
}


@dataclass(frozen=True)
class CaDir:
    path: Path
    cert: x509.Certificate
    chain: tuple[x509.Certificate, ...]
    key_ref: str

    def issuer(self, passphrase: bytes | None = None) -> Issuer:
        return Issuer(self.cert, load_signer(self.key_ref, passphrase))

    def chain_of(self, issued: x509.Certificate) -> list[x509.Certificate]:
        """What ``issued`` (a certificate this CA issued) is stored with: itself, then this
        CA's chain up to, not including, the root (a verifier brings its own root)."""
        return [issued, *[c for c in self.chain if c.subject != c.issuer]]


def pem(certs: list[x509.Certificate] | tuple[x509.Certificate, ...]) -> bytes:
    return b"".join(c.public_bytes(Encoding.PEM) for c in certs)


def read_certs(
    path: str | os.PathLike[str], what: str = "certificate file"
) -> list[x509.Certificate]:
    data = read_bounded(path, MAX_PEM, what)
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError:
        try:
            certs = [x509.load_der_x509_certificate(data)]
        except ValueError as exc:
            raise UsageError(f"{what} {path} holds no X.509 certificate") from exc
    for cert in certs:  # a broken key is the operator's file's fault: a key error, now
        certificate_key(cert, f"{what} {path}")
    return certs


def read_crl(path: str | os.PathLike[str]) -> x509.CertificateRevocationList:
    data = read_bounded(path, MAX_CRL, "CRL")
    try:
        return (
            x509.load_pem_x509_crl(data) if b"-----BEGIN" in data else x509.load_der_x509_crl(data)
        )
    except ValueError as exc:
        raise UsageError(f"{path} is not an X.509 CRL") from exc


def write_ca_dir(
    out_dir: Path,
    cert: x509.Certificate,
    chain: list[x509.Certificate],
    *,
    key_pem: bytes | None = None,
    key_uri: str | None = None,
    is_ca: bool = True,
) -> None:
    """Create ``out_dir`` with everything at once; refuse if it exists and is not empty."""
    if (key_pem is None) == (key_uri is None):
        raise ValueError("give exactly one of key_pem and key_uri")
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise UsageError(f"{out_dir} already exists and is not empty: refusing to overwrite")
    parent = out_dir.parent if str(out_dir.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=parent))
    except OSError as exc:
        raise StorageError(f"cannot create {out_dir}: {exc.strerror or exc}") from exc
    try:
        (tmp / "cert.pem").write_bytes(pem([cert]))
        (tmp / "chain.pem").write_bytes(pem(chain))
        if key_pem is not None:
            fd = os.open(tmp / "key.pem", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(key_pem)
        else:
            assert key_uri is not None
            (tmp / "key.uri").write_text(key_uri + "\n")
        if is_ca:
            (tmp / "state.json").write_text(json.dumps({"revoked": [], "crl_number": 0}) + "\n")
        if out_dir.exists():
            out_dir.rmdir()
        tmp.rename(out_dir)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise StorageError(f"cannot create {out_dir}: {exc.strerror or exc}") from exc
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def load_ca_dir(path: Path) -> CaDir:
    if not path.is_dir():
        raise UsageError(f"{path} is not a CA directory")
    certs = read_certs(path / "cert.pem")
    chain = read_certs(path / "chain.pem") if (path / "chain.pem").exists() else certs
    if (path / "key.pem").exists():
        key_ref = str(path / "key.pem")
    elif (path / "key.uri").exists():
        key_ref = (path / "key.uri").read_text().strip()
    else:
        raise UsageError(f"{path} has neither key.pem nor key.uri")
    return CaDir(path, certs[0], tuple(chain), key_ref)


def _state(ca: CaDir) -> dict[str, Any]:
    state_path = ca.path / "state.json"
    if not state_path.exists():
        raise UsageError(f"{ca.path} is not a CA (no state.json)")
    return load_state(state_path, STATE_SCHEMA, "CA state", limit=MAX_STATE)


def _revocation_date(text: str) -> dt.datetime:
    """An ISO 8601 time (UTC if it names no zone) that a CRL can encode (1950 or later)."""
    date = dt.datetime.fromisoformat(text)
    if date.tzinfo is None:
        date = date.replace(tzinfo=dt.UTC)
    date = date.astimezone(dt.UTC)
    if date.year < 1950:
        raise ValueError("before 1950")
    return date


def _entries(ca: CaDir, state: dict[str, Any]) -> list[Revocation]:
    """The recorded revocations, each checked as when it was entered.

    A state written before serials were checked on entry may hold one that no
    certificate carries (0, negative, longer than 20 octets); no CRL can list
    it, so it is refused here, naming the entry and the way out, instead of
    failing deep in the CRL signer on every publish.
    """
    where = f"CA state {ca.path / 'state.json'}: revoked entry"
    out = []
    for index, entry in enumerate(state.get("revoked", [])):
        serial = int(entry["serial"], 16)
        try:
            check_serial(serial)
        except UsageError as exc:
            raise StorageError(
                f"{where} {index} is unusable: {exc}, so no CRL can list it. It was mistyped "
                'when recorded and revokes nothing: delete it from the "revoked" list, then '
                "run the command again"
            ) from exc
        try:
            date = _revocation_date(entry["date"])
        except (ValueError, OverflowError) as exc:
            raise StorageError(
                f"{where} {index} (serial {serial:X}): the date {entry['date']!r} is not an "
                "ISO 8601 time after 1950: correct it (do not delete the entry: it revokes "
                "a certificate)"
            ) from exc
        out.append(Revocation(serial, date, entry["reason"]))
    return out


def revocations(ca: CaDir) -> list[Revocation]:
    return _entries(ca, _state(ca))


def record_revocation(ca: CaDir, revocation: Revocation) -> None:
    state = _state(ca)
    if any(e.serial == revocation.serial for e in _entries(ca, state)):
        raise UsageError(f"serial {revocation.serial:X} is already revoked")
    state.setdefault("revoked", []).append(
        {
            "serial": f"{revocation.serial:X}",
            "date": revocation.date.isoformat(),
            "reason": revocation.reason,
        }
    )
    write_atomic(ca.path / "state.json", (json.dumps(state, indent=2) + "\n").encode())


def next_crl_number(ca: CaDir) -> int:
    """Reserve the next CRL number (persisted first, so numbers never repeat)."""
    state = _state(ca)
    number: int = state.get("crl_number", 0) + 1
    state["crl_number"] = number
    write_atomic(ca.path / "state.json", (json.dumps(state, indent=2) + "\n").encode())
    return number
