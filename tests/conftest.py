"""Shared fixtures; plain helpers live in ``helpers.py`` (importable as ``helpers``)."""

from __future__ import annotations

import pytest

from helpers import ALL_KEY_TYPES, cached_key
from otaguard.crypto.keys import PrivateKey


@pytest.fixture(params=ALL_KEY_TYPES, ids=[k.value for k in ALL_KEY_TYPES])
def any_key(request: pytest.FixtureRequest) -> PrivateKey:
    return cached_key(request.param)
