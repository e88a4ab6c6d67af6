"""Semantic versions (semver.org 2.0.0) as the native envelope carries them.

Only parsing and ordering live here. Anti-rollback is decided by the security
counter, never by the version string: versions are for people and release
policy, counters are for the fuses.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from otaguard.errors import MalformedError

_SEMVER = re.compile(
    r"^(0|[1-9]\d{0,9})\.(0|[1-9]\d{0,9})\.(0|[1-9]\d{0,9})"
    r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$"
)
MAX_VERSION_LENGTH = 64


@dataclass(frozen=True, order=False)
class SemVer:
    major: int
    minor: int
    patch: int
    prerelease: tuple[str, ...] = ()
    build: tuple[str, ...] = ()

    def __str__(self) -> str:
        text = f"{self.major}.{self.minor}.{self.patch}"
        if self.prerelease:
            text += "-" + ".".join(self.prerelease)
        if self.build:
            text += "+" + ".".join(self.build)
        return text

    def precedence_key(self) -> tuple[int, int, int, int, tuple[tuple[int, int, str], ...]]:
        """Sort key implementing semver precedence (build metadata ignored)."""
        pre = tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in self.prerelease)
        # A release sorts after all of its pre-releases.
        return (self.major, self.minor, self.patch, 0 if self.prerelease else 1, pre)


def parse_semver(text: str) -> SemVer:
    """Parse ``text`` or raise :class:`MalformedError`."""
    if len(text) > MAX_VERSION_LENGTH:
        raise MalformedError(f"version longer than {MAX_VERSION_LENGTH} characters")
    match = _SEMVER.match(text)
    if match is None:
        raise MalformedError(f"not a semantic version: {text!r}")
    major, minor, patch, pre, build = match.groups()
    return SemVer(
        int(major),
        int(minor),
        int(patch),
        tuple(pre.split(".")) if pre else (),
        tuple(build.split(".")) if build else (),
    )
