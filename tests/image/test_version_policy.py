"""--min-version on the native envelope: semver precedence, applied after authentication."""

from __future__ import annotations

import pytest

from helpers import cached_key, make_image, verify_bytes
from otaguard.crypto.keys import KeyType
from otaguard.errors import VersionError
from otaguard.image import ImagePolicy


@pytest.mark.parametrize(
    ("version", "floor", "ok"),
    [
        ("1.4.0", "1.4.0", True),
        ("1.4.0", "1.3.9", True),
        ("1.4.0", "1.4.1", False),
        ("1.4.0-rc.1", "1.4.0", False),  # a pre-release sorts before its release
        ("1.10.0", "1.9.0", True),  # numeric, not lexical
        ("2.0.0+build.7", "2.0.0", True),  # build metadata is ignored
    ],
)
def test_min_version(version: str, floor: str, ok: bool) -> None:
    key = cached_key(KeyType.ED25519)
    image = make_image(b"x" * 100, [key], version=version)
    policy = ImagePolicy(min_version=floor)
    if ok:
        verify_bytes(image, [key], policy=policy)
    else:
        with pytest.raises(VersionError):
            verify_bytes(image, [key], policy=policy)
