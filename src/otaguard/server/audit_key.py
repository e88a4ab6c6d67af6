"""The server's audit key: it signs the audit log's checkpoints, nothing else.

Made at the first start like the other online keys (``DATA_DIR/online-keys/audit.pem``,
mode 0600, Ed25519), unless ``--audit-key`` names one (a key file or a ``pkcs11:``
URI: an HSM key, Ed25519 or ECDSA P-256, the two signed-note types). Its public half
is ``DATA_DIR/audit.pub``, what auditors verify the log with
(``otaguard audit verify --trusted-key audit.pub``).

The audit key never changes under a log: ``audit.pub`` is written once, and a start
whose key differs from it is refused, since every checkpoint signed before would
stop verifying with the key auditors hold (rotation is not supported).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from otaguard._atomic import write_atomic
from otaguard._files import read_bounded
from otaguard.audit.note import VerifierKey
from otaguard.crypto.keys import (
    KeyType,
    PublicKey,
    generate_private_key,
    private_key_pem,
    public_key_der,
    public_key_pem,
)
from otaguard.crypto.loader import load_signer
from otaguard.crypto.signer import Signer
from otaguard.errors import KeyLoadError, StorageError, UsageError
from otaguard.server.config import ServerConfig

MAX_PUBLIC_FILE = 64 * 1024


def key_file(config: ServerConfig) -> Path:
    return config.online_keys_dir / "audit.pem"


def default_origin(public_key: PublicKey) -> str:
    """The log's name when ``--audit-origin`` gives none: stable, and unique per key."""
    return "otaguard.audit/" + hashlib.sha256(public_key_der(public_key)).hexdigest()[:16]


def load(config: ServerConfig) -> Signer:
    """The audit key's signer (a checkpoint is signed per call; HSM keys stay in the HSM)."""
    spec = config.audit_key or str(key_file(config))
    try:
        signer = load_signer(spec)
    except KeyLoadError as exc:
        raise KeyLoadError(f"audit key: {exc}") from exc
    try:
        VerifierKey.for_public_key("audit", signer.public_key)
    except UsageError as exc:
        raise UsageError(f"audit key {spec[:80]}: {exc}") from None
    return signer


def prepare(config: ServerConfig) -> tuple[list[Path], Signer]:
    """Make the file key if no ``--audit-key`` names one, write ``audit.pub`` once, and
    refuse a key that is not the one ``audit.pub`` holds. Returns the files written."""
    written = []
    if config.audit_key is None and not key_file(config).exists():
        try:
            config.online_keys_dir.mkdir(parents=True, exist_ok=True, mode=0o755)
        except OSError as exc:
            raise StorageError(f"cannot create {config.online_keys_dir}: {exc}") from exc
        key = generate_private_key(KeyType.ED25519)
        write_atomic(key_file(config), private_key_pem(key, None), mode=0o600)
        written.append(key_file(config))
    signer = load(config)
    pem = public_key_pem(signer.public_key)
    public = config.audit_public_file
    if public.exists():
        if read_bounded(public, MAX_PUBLIC_FILE, "audit public key") != pem:
            raise UsageError(
                f"{public} holds another audit key than the one configured: the audit key "
                f"cannot change under a log (its checkpoints would no longer verify)"
            )
    else:
        write_atomic(public, pem, mode=0o644)
        written.append(public)
    return written, signer
