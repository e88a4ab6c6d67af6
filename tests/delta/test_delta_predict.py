"""The pointer-aware predictor: references found, targets moved, smaller deltas, tamper refused."""

from __future__ import annotations

import io
import lzma
import struct
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import make_image
from helpers_delta import HW, Pair, apply_bytes, code_image, code_layout, container_of, resign
from otaguard.crypto.keys import PrivateKey
from otaguard.delta import open_delta
from otaguard.delta.engine import _predicted_diff
from otaguard.delta.format import (
    Filter,
    encode_header,
    encode_triple,
    lzma_filters,
    read_header,
)
from otaguard.delta.predict import (
    MAX_SEGMENTS,
    Alignment,
    Arch,
    _thumb_decode,
    _thumb_encode,
    payload_phase,
    predict,
    references,
)
from otaguard.errors import DigestMismatchError, MalformedError, RejectedError

from .test_delta_tamper import zdict_of

_SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))


@given(
    offset=st.integers(-(1 << 24), (1 << 24) - 1).map(lambda v: v & ~1),
    link=st.booleans(),
)
def test_thumb_branch_offsets_round_trip(offset: int, link: bool) -> None:
    encoded = _thumb_encode(0xF000, 0xD000 if link else 0x9000, offset)
    assert encoded is not None
    hw1, hw2 = struct.unpack("<HH", encoded)
    assert _thumb_decode(hw1, hw2) == offset
    assert hw1 & 0xF800 == 0xF000 and hw2 & 0xD000 == (0xD000 if link else 0x9000)


def test_thumb_offsets_that_cannot_be_encoded() -> None:
    assert _thumb_encode(0xF000, 0xD000, 3) is None  # odd
    assert _thumb_encode(0xF000, 0xD000, 1 << 24) is None  # out of range
    assert _thumb_encode(0xF000, 0xD000, -(1 << 24) - 2) is None


def test_thumb_references_are_found_at_their_phase() -> None:
    bl = _thumb_encode(0xF000, 0xD000, 0x40 - 8)  # at 4: target 4 + 4 + 0x38 = 0x40
    assert bl is not None
    code = b"\x00\x20" * 2 + bl + b"\x00\x20" * 40
    assert list(references(code, 0, len(code), Arch.THUMB2, 0)) == [(4, 8, 0x40)]
    assert list(references(code, 0, len(code), Arch.THUMB2, 1)) == []  # not an instruction there
    shifted = b"\xff" + code
    assert list(references(shifted, 0, len(shifted), Arch.THUMB2, 1)) == [(5, 9, 0x41)]
    assert list(references(code, 0, 6, Arch.THUMB2, 0)) == []  # must lie wholly inside
    far = _thumb_encode(0xF000, 0xD000, 1 << 20)  # target outside the image
    assert far is not None and not list(references(far + code, 0, 8, Arch.THUMB2, 0))


def test_x86_references_are_found() -> None:
    rel = struct.Struct("<i").pack
    code = (
        b"\x90" * 4
        + b"\xe8"
        + rel(0x30)  # call: field 5, ends 9, target 0x39
        + b"\x0f\x85"
        + rel(-9)  # jne: field 11, ends 15, target 6
        + b"\x48\x8d\x05"
        + rel(2)  # lea rax, [rip+2]: field 18, ends 22, target 24
        + b"\xff\x15"
        + rel(0)  # call [rip]: field 24, ends 28, target 28
        + b"\xe8"
        + rel(1 << 20)  # a target outside the image: not a reference
        + b"\x90" * 40
    )
    found = list(references(code, 0, len(code), Arch.X86_64, 0))
    assert found == [(5, 9, 0x39), (11, 15, 6), (18, 22, 24), (24, 28, 28)]
    assert next(iter(references(code, 6, len(code), Arch.X86_64, 0))) == (11, 15, 6)


def test_alignment_maps_old_offsets_through_matched_ranges() -> None:
    # triples (add, copy, seek): old 0..10 -> new 0..10, new 10..15 inserted, old 20..30 -> new 15
    alignment = Alignment.from_triples([(10, 5, 10), (10, 0, 0)])
    assert alignment.new_offset(3) == 3
    assert alignment.new_offset(25) == 20
    assert alignment.new_offset(12) is None  # skipped by the seek: not in the new image
    assert alignment.new_offset(40) is None


def test_predict_rewrites_branches_whose_target_moved() -> None:
    old, split = code_layout("thumb2", 5)  # split: where the 8 bytes go in
    new = code_image("thumb2", 5, grow=8)
    triples = [(split, 8, 0), (len(old) - split, 0, 0)]
    alignment = Alignment.from_triples(triples)
    tail = predict(old, split, split + 8, len(old) - split, Arch.THUMB2, 0, alignment)
    head = predict(old, 0, 0, split, Arch.THUMB2, 0, alignment)
    assert head + new[split : split + 8] + tail == new  # every moved branch predicted exactly
    plain = predict(old, 0, 0, split, Arch.NONE, 0, alignment)
    assert plain == old[:split] != new[:split]


def test_payload_phase_is_the_payload_offset_mod_4(key: PrivateKey) -> None:
    image = make_image(b"x" * 64, [key], version="1.0.0", security_counter=1, hardware_ids=(HW,))
    header_length = struct.unpack(">I", image[12:16])[0]
    assert payload_phase(image) == (16 + header_length) % 4
    assert payload_phase(b"not an image") == 0


def _header(delta: bytes):  # type: ignore[no-untyped-def]
    return read_header(io.BytesIO(container_of(delta)), zdict=zdict_of(delta))


@pytest.mark.parametrize("arch", ["thumb2", "x86_64"])
def test_predicted_delta_is_chosen_smaller_and_exact(key: PrivateKey, arch: str) -> None:
    old = make_image(
        code_image(arch, 9), [key], version="1.0.0", security_counter=1, hardware_ids=(HW,)
    )
    new = make_image(
        code_image(arch, 9, grow=10), [key], version="1.1.0", security_counter=2, hardware_ids=(HW,)
    )
    pair = Pair(key, old, new)
    chosen = pair.delta(chunk_size=1 << 16, zstd=False)
    plain = pair.delta(chunk_size=1 << 16, zstd=False, predictor=Arch.NONE)
    assert _header(chosen).predictor is Arch(["none", "thumb2", "x86_64"].index(arch))
    assert _header(plain).predictor is Arch.NONE
    assert len(chosen) < len(plain) - 20, (len(chosen), len(plain))
    assert apply_bytes(old, chosen, pair.trusted) == new
    assert apply_bytes(old, plain, pair.trusted) == new


def test_predictor_is_not_used_on_random_data(pair: Pair) -> None:
    assert _header(pair.delta(chunk_size=1 << 16, zstd=False)).predictor is Arch.NONE


def test_predictor_only_for_small_images(code_pair: Pair) -> None:
    """Several chunks (or the FULL / zstd methods) never carry a predictor."""
    head = _header(code_pair.delta(chunk_size=1 << 12, predictor=Arch.THUMB2))
    assert head.chunk_count > 1 and head.predictor is Arch.NONE


@_SETTINGS
@given(
    seed=st.integers(0, 1 << 16),
    grow=st.integers(0, 40),
    arch=st.sampled_from([Arch.THUMB2, Arch.X86_64]),
    source=st.sampled_from(["thumb2", "x86_64"]),
)
def test_forced_predictors_round_trip(
    key: PrivateKey, seed: int, grow: int, arch: Arch, source: str
) -> None:
    """Whatever the predictor guesses (even the wrong architecture), the image comes out."""
    old = make_image(
        code_image(source, seed, functions=30),
        [key],
        version="1.0.0",
        security_counter=1,
        hardware_ids=(HW,),
    )
    new_payload = bytearray(code_image(source, seed, grow=grow, functions=30))
    new_payload[seed % len(new_payload)] ^= 0x55
    new = make_image(
        bytes(new_payload), [key], version="1.1.0", security_counter=2, hardware_ids=(HW,)
    )
    pair = Pair(key, old, new)
    delta = pair.delta(chunk_size=1 << 16, zstd=False, predictor=arch)
    assert _header(delta).predictor is arch
    assert apply_bytes(old, delta, None) == new


def _predicted(code_pair: Pair) -> bytes:
    delta = code_pair.delta(chunk_size=1 << 16, zstd=False, predictor=Arch.THUMB2)
    assert _header(delta).predictor is Arch.THUMB2
    return delta


@pytest.mark.parametrize(
    "change",
    [
        pytest.param({"predictor": Arch.X86_64}, id="another predictor"),
        pytest.param({"predictor": Arch.NONE}, id="no predictor"),
        pytest.param({"phase": 1}, id="another phase"),
    ],
)
def test_changed_predictor_fails_the_payload_digest(code_pair: Pair, change: dict) -> None:  # type: ignore[type-arg]
    delta = _predicted(code_pair)
    zdict = zdict_of(delta)
    stream = io.BytesIO(container_of(delta))
    head = read_header(stream, zdict=zdict)
    rest = stream.read()
    forged = resign(code_pair.key, delta, encode_header(replace(head, **change), zdict) + rest)
    with pytest.raises(DigestMismatchError, match="payload digest"):
        apply_bytes(code_pair.old, forged, code_pair.trusted)


def test_too_many_triples_for_a_predicted_delta_are_refused(key: PrivateKey) -> None:
    payload = code_image("thumb2", 1, functions=1200)
    assert len(payload) > MAX_SEGMENTS + 1
    old = make_image(payload, [key], version="1.0.0", security_counter=1, hardware_ids=(HW,))
    new = make_image(
        code_image("thumb2", 1, grow=2, functions=1200),
        [key],
        version="1.1.0",
        security_counter=2,
        hardware_ids=(HW,),
    )
    pair = Pair(key, old, new)
    delta = pair.delta(chunk_size=1 << 22, zstd=False, predictor=Arch.THUMB2)
    zdict = zdict_of(delta)
    head = read_header(io.BytesIO(container_of(delta)), zdict=zdict)
    assert head.predictor is Arch.THUMB2
    # every triple reads one old byte and seeks back: valid, but one more than allowed
    raw = encode_triple(1, 0, -1) * (MAX_SEGMENTS + 1)
    control = lzma.compress(
        raw, format=lzma.FORMAT_RAW, filters=lzma_filters(Filter.NONE, head.dict_size)
    )
    container = encode_header(
        replace(head, control_length=len(control), diff_length=0, extra_length=0), zdict
    )
    forged = resign(key, delta, container + control)
    with pytest.raises(MalformedError, match="predicted"):
        apply_bytes(old, forged, pair.trusted)


def test_predicted_diff_is_zero_where_code_only_moved() -> None:
    """On the true alignment every moved branch is predicted: the diff is all zeros."""
    old, split = code_layout("x86_64", 4)
    new = code_image("x86_64", 4, grow=7)
    triples = [(split, 7, 0), (len(old) - split, 0, 0)]
    plain = _predicted_diff(old, new, triples, Arch.NONE, 0)
    x86 = _predicted_diff(old, new, triples, Arch.X86_64, 0)
    assert len(plain) == len(x86) == len(old)
    assert len(plain) - plain.count(0) > 50 and not any(x86)


@_SETTINGS
@given(data=st.data())
def test_mutated_predicted_containers(code_pair: Pair, data: st.DataObject) -> None:
    """Any mutation of a predicted delta is refused cleanly or still rebuilds the image."""
    delta = _predicted(code_pair)
    container = bytearray(container_of(delta))
    for _ in range(data.draw(st.integers(1, 3))):
        pos = data.draw(st.integers(0, len(container) - 1))
        container[pos] ^= 1 << data.draw(st.integers(0, 7))
    try:
        image = apply_bytes(code_pair.old, resign(code_pair.key, delta, bytes(container)), None)
    except RejectedError:
        return
    assert image == code_pair.new


def test_predicted_delta_opens_with_trust(code_pair: Pair) -> None:
    opened = open_delta(io.BytesIO(_predicted(code_pair)), code_pair.trusted)
    assert opened.header.predictor is Arch.THUMB2 and opened.header.phase == payload_phase(
        code_pair.old
    )


def test_predicted_delta_installs_on_a_device_and_survives_power_loss(
    key: PrivateKey, code_pair: Pair
) -> None:
    """The device path reads the base from its active slot; a cut install reruns to the same."""
    from otaguard.device.bootloader import boot
    from otaguard.device.faults import FaultPlan, PowerLoss
    from otaguard.device.install import install_delta

    from .test_delta_device import running_v1

    delta = _predicted(code_pair)
    images = {"v1": code_pair.old}
    device, running = running_v1(key, images)
    device.arm()
    result = install_delta(device, io.BytesIO(delta), running=running)
    assert boot(device).images[0].metadata.version == "1.5.0"
    for cut in (1, result.flash_ops // 2, result.flash_ops - 1):
        device, running = running_v1(key, images)
        device.arm(FaultPlan(cut_before=cut))
        with pytest.raises(PowerLoss):
            install_delta(device, io.BytesIO(delta), running=running)
        device.arm()
        from otaguard.device.install import running_of

        rerun = running_of(boot(device))
        assert rerun is not None and rerun.slot == running.slot
        again = install_delta(device, io.BytesIO(delta), running=rerun)
        assert again.images[0].image_id == result.images[0].image_id
