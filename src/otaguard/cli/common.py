"""Helpers shared by the sub-commands: reading key files and passphrases."""

from __future__ import annotations

import os

from otaguard.crypto.keys import PrivateKey, PublicKey, load_private_key, load_public_key
from otaguard.crypto.loader import read_key_file
from otaguard.errors import KeyLoadError, UsageError


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
    data = read_key_file(path)
    try:
        return load_private_key(data, passphrase)
    except KeyLoadError as exc:
        raise KeyLoadError(f"{path}: {exc}") from exc


def load_public_key_file(path: str) -> PublicKey:
    data = read_key_file(path)
    try:
        return load_public_key(data)
    except KeyLoadError as exc:
        raise KeyLoadError(f"{path}: {exc}") from exc


def ensure_distinct(paths: list[str]) -> None:
    resolved = [os.path.realpath(p) for p in paths]
    if len(set(resolved)) != len(resolved):
        raise UsageError("the same file was given twice")
