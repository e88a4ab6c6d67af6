"""``config.json``: a repository's local settings, checked against its schema on every load.

The file is not signed and not served; ``repo init`` writes it and operators
may edit it by hand. So every load checks it against the schema below, and
anything else -- not JSON, nested too deep, a wrong type, an unknown key -- is
one :class:`RepositoryConfigError` naming the field (exit 2: the operator's
configuration is wrong, nothing was decided about any metadata), never an
internal error halfway through a publish::

    {
      "expires":     {"<role>": <days, 1-3660>, ...},      optional; roles without
                                                            an entry get the defaults
      "online_keys": {"snapshot": "<key>", "timestamp": "<key>"}   optional
    }

``<role>`` is a top-level role or a delegated role name (delegated roles get an
entry from ``repo delegate --expires``). ``<key>`` is a key file or a
``pkcs11:`` URI; a relative path is relative to the repository directory
(:func:`otaguard.repo.bootstrap.online_key_location`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from otaguard._atomic import write_atomic
from otaguard._files import read_bounded
from otaguard.errors import OtaguardError, UsageError
from otaguard.repo.layout import ONLINE_ROLES, TOP_ROLES, check_role_name

DEFAULT_EXPIRY_DAYS = {"root": 365, "targets": 90, "snapshot": 7, "timestamp": 1}
MAX_EXPIRY_DAYS = 3660
#: Largest config.json.
MAX_CONFIG_FILE = 64 * 1024
#: Longest key location (a path or a pkcs11: URI) accepted.
MAX_KEY_LOCATION = 4096
_FIELDS = ("expires", "online_keys")


class RepositoryConfigError(OtaguardError):
    """``config.json`` is not what otaguard writes (a hand edit gone wrong): exit 2."""


@dataclass(frozen=True)
class RepoConfig:
    """A validated ``config.json``."""

    expires: Mapping[str, int] = field(default_factory=dict)
    online_keys: Mapping[str, str] = field(default_factory=dict)

    def expiry_days(self, role: str) -> int:
        """Days a new version of ``role`` is valid for (delegated roles: as targets)."""
        default = DEFAULT_EXPIRY_DAYS.get(role, DEFAULT_EXPIRY_DAYS["targets"])
        return self.expires.get(role, default)

    def to_json(self) -> bytes:
        doc = {"expires": dict(self.expires), "online_keys": dict(self.online_keys)}
        return (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode()


def check_expiry_days(role: str, days: object, where: str = "--expires") -> int:
    """``days`` if it is a whole number of days in range (``bool`` is not a number here)."""
    if isinstance(days, bool) or not isinstance(days, int):
        raise UsageError(f"{where} {role}: days must be a whole number")
    if not 1 <= days <= MAX_EXPIRY_DAYS:
        raise UsageError(f"{where} {role}: days must be 1-{MAX_EXPIRY_DAYS}")
    return days


def parse_expiry_days(items: Iterable[str]) -> dict[str, int]:
    """``ROLE=DAYS`` pairs of ``repo init --expires``: the four top-level roles only.

    A new repository has no delegated role yet; a name that is not one of the four is a
    typo that would otherwise be kept silently (``repo delegate --expires`` sets a
    delegated role's expiry).
    """
    out: dict[str, int] = {}
    for item in items:
        role, sep, days = item.partition("=")
        if not sep or not role or not (days.isascii() and days.isdigit()) or len(days) > 6:
            raise UsageError(f"--expires {item[:60]!r}: use ROLE=DAYS")
        if role not in TOP_ROLES:
            raise UsageError(
                f"--expires {role[:40]!r}: not a role of a new repository "
                f"({', '.join(TOP_ROLES)}); delegated roles: 'repo delegate --expires'"
            )
        out[role] = check_expiry_days(role, int(days))
    return out


def load_config(path: str | os.PathLike[str]) -> RepoConfig:
    data = read_bounded(path, MAX_CONFIG_FILE, too_large=RepositoryConfigError)
    return parse_config(data, os.fspath(path))


def save_config(path: str | os.PathLike[str], config: RepoConfig) -> None:
    write_atomic(path, config.to_json())


def parse_config(data: bytes, where: str = "config.json") -> RepoConfig:
    """The settings in ``data``, or :class:`RepositoryConfigError` saying what is wrong."""
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise RepositoryConfigError(f"{where} is not JSON: {str(exc)[:120]}") from exc
    try:
        return _validate(doc, where)
    except UsageError as exc:
        raise RepositoryConfigError(str(exc)) from exc


def _object(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise UsageError(f"{what} must be a JSON object, not {_kind(value)}")
    return value


def _kind(value: object) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "true/false"}
    if value is None:
        return "null"
    return names.get(type(value), "a number")


def _validate(doc: Any, where: str) -> RepoConfig:
    top = _object(doc, where)
    unknown = sorted(set(top) - set(_FIELDS))
    if unknown:
        raise UsageError(
            f"{where}: unknown field {unknown[0][:40]!r} (known: {', '.join(_FIELDS)})"
        )
    expires: dict[str, int] = {}
    for role, days in _object(top.get("expires", {}), f"{where}: expires").items():
        if role not in TOP_ROLES:
            try:
                check_role_name(role)
            except UsageError:
                raise UsageError(f"{where}: expires: {role[:40]!r} is not a role name") from None
        expires[role] = check_expiry_days(role, days, f"{where}: expires")
    online: dict[str, str] = {}
    for role, spec in _object(top.get("online_keys", {}), f"{where}: online_keys").items():
        if role not in ONLINE_ROLES:
            raise UsageError(f"{where}: online_keys: {role[:40]!r} is not snapshot or timestamp")
        if not isinstance(spec, str):
            raise UsageError(
                f"{where}: online_keys: {role} must be a string (a key file or pkcs11: URI), "
                f"not {_kind(spec)}"
            )
        if not spec or len(spec) > MAX_KEY_LOCATION or "\0" in spec:
            raise UsageError(
                f"{where}: online_keys: {role} must be 1-{MAX_KEY_LOCATION} characters"
            )
        online[role] = spec
    return RepoConfig(expires, online)
