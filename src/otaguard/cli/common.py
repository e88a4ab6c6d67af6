"""Helpers shared by the sub-commands: reading key files and passphrases."""

from __future__ import annotations

import os

from otaguard.crypto.keys import PrivateKey, PublicKey, load_private_key, load_public_key
from otaguard.errors import KeyLoadError, StorageError, UsageError

MAX_KEY_FILE = 1 << 20


def read_small_file(path: str, what: str, limit: int = MAX_KEY_FILE) -> bytes:
    """Read a file that must be small (keys, certificates); refuse huge ones."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(limit + 1)
    except OSError as exc:
        raise StorageError(f"cannot read {what} {path}: {exc.strerror or exc}") from exc
    if len(data) > limit:
        raise UsageError(f"{what} {path} is larger than {limit} bytes")
    return data


def passphrase_from_env(var: str | None) -> bytes | None:
    """The passphrase named by ``--passphrase-env``; never taken from argv (ps shows argv)."""
    if var is None:
        return None
    value = os.environ.get(var)
    if value is None:
        raise UsageError(f"environment variable {var} (--passphrase-env) is not set")
    if not value:
        raise UsageError(f"environment variable {var} (--passphrase-env) is empty")
    return value.encode()


def load_private_key_file(path: str, passphrase: bytes | None) -> PrivateKey:
    data = read_small_file(path, "key file")
    try:
        return load_private_key(data, passphrase)
    except KeyLoadError as exc:
        raise KeyLoadError(f"{path}: {exc}") from exc


def load_public_key_file(path: str) -> PublicKey:
    data = read_small_file(path, "key file")
    try:
        return load_public_key(data)
    except KeyLoadError as exc:
        raise KeyLoadError(f"{path}: {exc}") from exc


def ensure_distinct(paths: list[str]) -> None:
    resolved = [os.path.realpath(p) for p in paths]
    if len(set(resolved)) != len(resolved):
        raise UsageError("the same file was given twice")
