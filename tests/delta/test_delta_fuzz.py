"""Fuzzing the delta parser and applier: any mutation is refused cleanly or rebuilds the image."""

from __future__ import annotations

import io

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers_delta import Pair, container_of, refused_or_exact, resign
from otaguard.delta.format import read_header
from otaguard.errors import RejectedError

_SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))


@_SETTINGS
@given(data=st.data())
def test_mutated_containers(pair: Pair, data: st.DataObject) -> None:
    delta = pair.delta()
    container = bytearray(container_of(delta))
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, len(container) - 1))
        action = data.draw(st.sampled_from(["flip", "set", "cut", "insert"]))
        if action == "flip":
            container[pos] ^= 1 << data.draw(st.integers(0, 7))
        elif action == "set":
            container[pos] = data.draw(st.integers(0, 255))
        elif action == "cut":
            del container[pos : pos + data.draw(st.integers(1, 64))]
        else:
            container[pos:pos] = data.draw(st.binary(min_size=1, max_size=16))
    refused_or_exact(pair.old, pair.new, resign(pair.key, delta, bytes(container)))


@_SETTINGS
@given(blob=st.binary(max_size=400))
def test_random_bytes_as_container_header(blob: bytes) -> None:
    try:
        read_header(io.BytesIO(b"OTAD\x03" + blob))
    except RejectedError:
        pass


@_SETTINGS
@given(blob=st.binary(max_size=2000))
def test_random_delta_files(pair: Pair, blob: bytes) -> None:
    refused_or_exact(pair.old, pair.new, blob)
    refused_or_exact(pair.old, pair.new, pair.delta()[:200] + blob)
