"""The server's online keys: the image repository's snapshot and timestamp roles, and the director.

They live in ``DATA_DIR/online-keys/<role>.pem`` (mode 0600) with ``<role>.pub``
beside each (what release managers name in their repository's root, and what
anyone may read). These are the only keys the server holds: none of them can
sign an image or the repository's targets, so whoever steals them can at most
freeze or withhold updates (docs/server.md).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from otaguard._atomic import write_atomic
from otaguard._files import read_bounded
from otaguard.crypto.keys import (
    KeyType,
    generate_private_key,
    key_id,
    load_private_key,
    private_key_pem,
    public_key_pem,
)
from otaguard.crypto.signer import KeySigner
from otaguard.errors import KeyLoadError, StorageError
from otaguard.repo.director import director_root
from otaguard.repo.signing import tuf_key

ROLES = ("snapshot", "timestamp", "director")
#: How long the director root vehicles are provisioned with stays valid.
DIRECTOR_ROOT_DAYS = 3650
MAX_KEY_FILE = 64 * 1024


@dataclass(frozen=True)
class OnlineKeys:
    snapshot: KeySigner
    timestamp: KeySigner
    director: KeySigner

    def tuf_keyid(self, role: str) -> str:
        signer: KeySigner = getattr(self, role)
        return str(tuf_key(signer.public_key).keyid)

    @property
    def director_keyid(self) -> str:
        return key_id(self.director.public_key)


def key_path(directory: Path, role: str) -> Path:
    return directory / f"{role}.pem"


def missing(directory: Path) -> list[str]:
    return [role for role in ROLES if not key_path(directory, role).exists()]


def generate(directory: Path) -> list[Path]:
    """Make the online keys that do not exist yet; return the files written."""
    written = []
    try:
        directory.mkdir(parents=True, exist_ok=True, mode=0o755)  # the .pem files are 0600
    except OSError as exc:
        raise StorageError(f"cannot create {directory}: {exc.strerror or exc}") from exc
    for role in missing(directory):
        key = generate_private_key(KeyType.ED25519)
        write_atomic(key_path(directory, role), private_key_pem(key, None), mode=0o600)
        write_atomic(directory / f"{role}.pub", public_key_pem(key.public_key()), mode=0o644)
        written += [key_path(directory, role), directory / f"{role}.pub"]
    return written


def load(directory: Path) -> OnlineKeys:
    signers = {}
    for role in ROLES:
        path = key_path(directory, role)
        data = read_bounded(path, MAX_KEY_FILE)
        try:
            signers[role] = KeySigner(load_private_key(data))
        except KeyLoadError as exc:
            raise KeyLoadError(f"{path}: {exc}") from exc
    return OnlineKeys(**signers)


def write_director_root(path: Path, keys: OnlineKeys, *, now: dt.datetime) -> None:
    """The director's TUF root (version 1), what vehicles are provisioned with."""
    data = director_root(
        [keys.director],
        threshold=1,
        version=1,
        expires=now + dt.timedelta(days=DIRECTOR_ROOT_DAYS),
    )
    write_atomic(path, data, mode=0o644)
