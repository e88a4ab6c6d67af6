"""Fuzzing the delta parser and applier: any mutation is refused cleanly or rebuilds the image."""

from __future__ import annotations

import io

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers_delta import Pair, apply_bytes, container_of, resign
from otaguard.delta.format import read_header
from otaguard.errors import RejectedError

_SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))


def _outcome(pair: Pair, delta: bytes) -> None:
    try:
        image = apply_bytes(pair.old, delta, None)
    except RejectedError:
        return
    assert image == pair.new  # nothing else may ever come out


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
    _outcome(pair, resign(pair.key, delta, bytes(container)))


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
    _outcome(pair, blob)
    _outcome(pair, pair.delta()[:200] + blob)
