"""The agent's files in the device directory, the factory provisioning, the device identity.

::

    <device dir>/agent/
      anchors/repository-root.json   the image repository's root, provisioned at the factory
      anchors/director-root.json     the director's root, provisioned at the factory
      tuf/                           the TUF client's trusted metadata (root rotations kept)
      state.json                     the state machine's state (``agent/state.py``)
      downloads/<key>/               downloads in progress (``agent/chunks.py``)

Trust anchors come only from :func:`provision` (``otaguard agent provision``):
the agent never trusts on first use. Both roots must verify against their own
keys when provisioned; an agent directory already provisioned with other
anchors is never overwritten.

The identity directory is what ``otaguard pki issue-device`` writes:
``cert.pem`` (the device certificate; its common name is the device id),
``chain.pem`` (the certificate, then its intermediates), and ``key.pem`` or
``key.uri`` (a PKCS#11 URI, for a key in an HSM).
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.x509.oid import NameOID
from tuf.api import exceptions as tuf_exceptions

from otaguard._atomic import write_atomic
from otaguard._files import read_bounded
from otaguard.agent.state import State, parse
from otaguard.crypto.loader import load_signer
from otaguard.crypto.signer import Signer
from otaguard.errors import MalformedError, StorageError, UsageError
from otaguard.protocol.signing import DEVICE_ID_RE
from otaguard.repo.trust import TrustEngine
from otaguard.repo.uptane import load_director_root

MAX_ROOT = 512 * 1024
MAX_PEM = 1 << 20


@dataclass(frozen=True)
class AgentDir:
    """Paths of the agent's files in one device directory."""

    device: Path

    @property
    def base(self) -> Path:
        return self.device / "agent"

    @property
    def repository_root(self) -> Path:
        return self.base / "anchors" / "repository-root.json"

    @property
    def director_root(self) -> Path:
        return self.base / "anchors" / "director-root.json"

    @property
    def tuf(self) -> Path:
        return self.base / "tuf"

    @property
    def state(self) -> Path:
        return self.base / "state.json"

    @property
    def downloads(self) -> Path:
        return self.base / "downloads"

    def require(self) -> None:
        if not (self.device / "device.json").is_file():
            raise UsageError(f"{self.device} is not a device directory (no device.json)")
        if not self.repository_root.is_file() or not self.director_root.is_file():
            raise UsageError(
                f"{self.device} has no trust anchors: run 'otaguard agent provision' first "
                "(the agent never trusts on first use)"
            )

    # -- the state ------------------------------------------------------------------------

    def load_state(self) -> tuple[State, str | None]:
        """The persisted state, or a fresh one; the second value says why it was reset."""
        try:
            data = read_bounded(self.state, 8 * 1024 * 1024, "agent state", too_large=StorageError)
        except StorageError:
            if not self.state.exists():
                return fresh_state(), None
            raise
        try:
            return parse(data), None
        except StorageError as exc:
            # Fail safe, not stuck: the device itself says what runs; keep the bad copy.
            os.replace(self.state, self.state.with_name("state.json.bad"))
            return fresh_state(), str(exc)

    def save_state(self, state: State) -> None:
        write_atomic(self.state, state.to_bytes(), mode=0o600)


def fresh_state() -> State:
    return State(salt=secrets.token_hex(16))


def _check_repository_root(data: bytes, now: dt.datetime) -> None:
    try:
        TrustEngine(data, now)
    except (tuf_exceptions.RepositoryError, ValueError, TypeError) as exc:
        raise MalformedError(f"repository root: {exc}") from exc


def provision(device_dir: Path, repository_root: bytes, director_root: bytes) -> bool:
    """Install the trust anchors (factory step). Returns False if they were already these.

    Both roots must be valid root metadata signed by their own threshold of
    keys. Different anchors already in place are refused, never replaced (a
    later root rotation is the TUF client's job, from the network, signed by
    the old root).
    """
    paths = AgentDir(device_dir)
    if not (device_dir / "device.json").is_file():
        raise UsageError(f"{device_dir} is not a device directory (run 'otaguard device init')")
    _check_repository_root(repository_root, dt.datetime.now(dt.UTC))
    load_director_root(director_root)
    existing = [p for p in (paths.repository_root, paths.director_root) if p.exists()]
    if existing:
        same = (
            paths.repository_root.exists()
            and paths.director_root.exists()
            and paths.repository_root.read_bytes() == repository_root
            and paths.director_root.read_bytes() == director_root
        )
        if same:
            return False
        raise UsageError(
            f"{device_dir} is already provisioned with other trust anchors: "
            "refusing to replace them"
        )
    try:
        (paths.base / "anchors").mkdir(parents=True, exist_ok=True)
        paths.tuf.mkdir(parents=True, exist_ok=True)
        paths.downloads.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(f"cannot create {paths.base}: {exc.strerror or exc}") from exc
    write_atomic(paths.tuf / "root.json", repository_root)
    write_atomic(paths.director_root, director_root)
    write_atomic(paths.repository_root, repository_root)  # last: marks the step complete
    return True


# -- the device identity ----------------------------------------------------------------------


@dataclass(frozen=True)
class Identity:
    device_id: str
    certificate: x509.Certificate
    chain_pem: str  # leaf first, then intermediates (what enrolment sends)
    signer: Signer


def device_id_of(cert: x509.Certificate) -> str:
    """The device id a device certificate names (its common name: a VIN, a serial)."""
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(names) != 1 or not isinstance(names[0].value, str):
        raise UsageError("the device certificate must have exactly one common name")
    device_id = names[0].value
    if not DEVICE_ID_RE.match(device_id):
        raise UsageError(f"device id {device_id[:70]!r} is not 1-64 characters of [A-Za-z0-9._:-]")
    return device_id


def load_identity(id_dir: Path, passphrase: bytes | None = None) -> Identity:
    """Read ``pki issue-device``'s output; the key must be the certificate's."""
    cert_pem = read_bounded(id_dir / "cert.pem", MAX_PEM, "device certificate")
    chain_file = id_dir / "chain.pem"
    chain_pem = (
        read_bounded(chain_file, MAX_PEM, "certificate chain") if chain_file.exists() else cert_pem
    )
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
        chain = x509.load_pem_x509_certificates(chain_pem)
    except ValueError as exc:
        raise UsageError(f"{id_dir}: not a PEM certificate ({exc})") from exc
    if chain[0] != cert:
        chain = [cert, *chain]
    if (id_dir / "key.pem").exists():
        key_ref = str(id_dir / "key.pem")
    elif (id_dir / "key.uri").exists():
        key_ref = read_bounded(id_dir / "key.uri", 4096, "key URI").decode().strip()
    else:
        raise UsageError(f"{id_dir} has neither key.pem nor key.uri")
    signer = load_signer(key_ref, passphrase)
    spki = PublicFormat.SubjectPublicKeyInfo
    if cert.public_key().public_bytes(Encoding.DER, spki) != signer.public_key.public_bytes(
        Encoding.DER, spki
    ):
        raise UsageError(f"{id_dir}: the key is not the device certificate's")
    pem = b"".join(c.public_bytes(Encoding.PEM) for c in chain).decode("ascii")
    return Identity(device_id_of(cert), cert, pem, signer)
