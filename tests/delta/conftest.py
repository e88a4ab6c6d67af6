"""Delta fixtures: a release key and one image pair (helpers live in ``helpers_delta``)."""

from __future__ import annotations

import random

import pytest

from helpers import cached_key, make_image
from helpers_delta import HW, Pair, code_image, edit
from otaguard.crypto.keys import KeyType, PrivateKey


@pytest.fixture(scope="session")
def key() -> PrivateKey:
    return cached_key(KeyType.ED25519)


@pytest.fixture(scope="session")
def pair(key: PrivateKey) -> Pair:
    rnd = random.Random(6)
    payload = rnd.randbytes(20_000)
    old = make_image(payload, [key], version="1.4.0", security_counter=7, hardware_ids=(HW,))
    new = make_image(
        edit(payload, 1), [key], version="1.5.0", security_counter=8, hardware_ids=(HW,)
    )
    # three streams, as the tamper tests read them; joined many-chunk deltas:
    # tests/delta/test_delta_joined.py
    return Pair(key, old, new, join=False)


@pytest.fixture(scope="session")
def code_pair(key: PrivateKey) -> Pair:
    """Thumb-2 firmware-like images, the new one with a function grown by 6 bytes."""
    old = make_image(
        code_image("thumb2", 3), [key], version="1.4.0", security_counter=7, hardware_ids=(HW,)
    )
    new = make_image(
        code_image("thumb2", 3, grow=6),
        [key],
        version="1.5.0",
        security_counter=8,
        hardware_ids=(HW,),
    )
    return Pair(key, old, new)
