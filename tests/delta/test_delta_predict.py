"""The pointer-aware predictor: references found, targets moved, smaller deltas, tamper refused."""

from __future__ import annotations

import io
import lzma
import random
import struct
import sys
from array import array
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import assert_one_line, make_image
from helpers_delta import (
    HW,
    Pair,
    apply_bytes,
    assert_mutations_refused_or_exact,
    code_image,
    code_layout,
    container_of,
    header_of,
    refused_or_exact,
    resign,
    split_container,
)
from otaguard.crypto.keys import PrivateKey
from otaguard.delta import open_delta
from otaguard.delta.engine import _predicted_diff, payload_offset
from otaguard.delta.format import (
    FLAG_JOINED,
    FLAG_REPEAT,
    HEAD,
    Filter,
    encode_header,
    encode_triple,
    lzma_filters,
    uvarint,
)
from otaguard.delta.predict import (
    GUESS_ALIGN,
    GUESS_FLOOR,
    MAX_SEGMENTS,
    Absolute,
    Alignment,
    Arch,
    _thumb_decode,
    _thumb_encode,
    elf_arch,
    elf_code_range,
    guess_load_addresses,
    predict,
    raw_range,
    references,
)
from otaguard.errors import DigestMismatchError, MalformedError

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


@given(
    st.lists(st.tuples(st.integers(0, 300), st.integers(0, 300), st.integers(0, 60)), max_size=40),
    st.lists(st.integers(0, 400), min_size=1, max_size=30),
)
def test_alignment_maps_through_the_longest_range_holding_the_offset(
    segments: list[tuple[int, int, int]], probes: list[int]
) -> None:
    """The disjoint-piece map equals the rule it implements, checked by brute force."""
    olds, news, lengths = (
        (array("q", column) for column in zip(*segments, strict=True))
        if (segments)
        else (array("q"), array("q"), array("q"))
    )
    alignment = Alignment(olds, news, lengths)
    for t in probes:
        holding = [(-n, new, o) for o, new, n in segments if o <= t < o + n]
        if not holding:
            assert alignment.new_offset(t) is None
        else:
            _neg, new, o = min(holding)
            assert alignment.new_offset(t) == new + t - o


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


def test_phase_is_the_payload_offset_mod_4(key: PrivateKey) -> None:
    image = make_image(b"x" * 64, [key], version="1.0.0", security_counter=1, hardware_ids=(HW,))
    header_length = struct.unpack(">I", image[12:16])[0]
    assert payload_offset(image) == 16 + header_length
    assert payload_offset(image) & 3 == (16 + header_length) % 4
    assert payload_offset(b"not an image") == 0


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
    assert header_of(chosen).predictor is Arch(["none", "thumb2", "x86_64"].index(arch))
    assert header_of(plain).predictor is Arch.NONE
    assert len(chosen) < len(plain) - 20, (len(chosen), len(plain))
    assert apply_bytes(old, chosen, pair.trusted) == new
    assert apply_bytes(old, plain, pair.trusted) == new


def test_predictor_is_not_used_on_random_data(pair: Pair) -> None:
    assert header_of(pair.delta(chunk_size=1 << 16, zstd=False)).predictor is Arch.NONE


def test_predictor_only_for_small_images(code_pair: Pair) -> None:
    """Several chunks (or the FULL / zstd methods) never carry a predictor."""
    head = header_of(code_pair.delta(chunk_size=1 << 12, predictor=Arch.THUMB2))
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
    assert header_of(delta).predictor is arch
    assert apply_bytes(old, delta, None) == new


def _predicted(code_pair: Pair) -> bytes:
    delta = code_pair.delta(chunk_size=1 << 16, zstd=False, predictor=Arch.THUMB2)
    assert header_of(delta).predictor is Arch.THUMB2
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
    head, rest, zdict = split_container(delta)
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
    head, _rest, zdict = split_container(delta)
    assert head.predictor is Arch.THUMB2
    # every triple reads one old byte and seeks back: valid, but one more than allowed
    raw = encode_triple(1, 0, -1) * (MAX_SEGMENTS + 1)
    control = lzma.compress(
        raw, format=lzma.FORMAT_RAW, filters=lzma_filters(Filter.NONE, head.dict_size)
    )
    container = encode_header(
        replace(
            head,
            flags=head.flags & ~FLAG_JOINED & ~FLAG_REPEAT,  # plain triples, own stream
            control_length=len(control),
            diff_length=0,
            extra_length=0,
        ),
        zdict,
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
    assert_mutations_refused_or_exact(code_pair, _predicted(code_pair), data)


def test_predicted_delta_opens_with_trust(code_pair: Pair) -> None:
    opened = open_delta(io.BytesIO(_predicted(code_pair)), code_pair.trusted)
    assert opened.header.predictor is Arch.THUMB2 and opened.header.phase == 3 & payload_offset(
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


def _brute_absolute(old: bytes, start: int, end: int, absolute: Absolute) -> list[tuple[int, int]]:
    out, p = [], start
    while p + absolute.width <= min(end, len(old)):
        value = int.from_bytes(old[p : p + absolute.width], "little")
        if absolute.lo <= value < absolute.hi:
            out.append((p, value - absolute.old_bias))
            p += absolute.width
        else:
            p += 1
    return out


@_SETTINGS
@given(
    data=st.binary(max_size=300),
    width=st.sampled_from([4, 8]),
    lo=st.integers(0, 1 << 24),
    span=st.integers(1, 1 << 24),
    start=st.integers(0, 20),
)
def test_absolute_prefilter_finds_exactly_the_pointers(
    data: bytes, width: int, lo: int, span: int, start: int
) -> None:
    absolute = Absolute(width, lo, lo + span, 5, 0)
    planted = bytearray(data)
    for at in range(0, len(planted) - width, 37):  # some real pointers among the noise
        planted[at : at + width] = (lo + at % span).to_bytes(width, "little")
    old = bytes(planted)
    assert list(absolute.references(old, start, len(old))) == _brute_absolute(
        old, start, len(old), absolute
    )


def test_absolute_ranges_are_validated() -> None:
    for width, lo, hi in ((2, 0, 10), (4, 10, 10), (4, 0, (1 << 32) + 1), (8, -1, 5)):
        with pytest.raises(ValueError):
            Absolute(width, lo, hi, 0, 0)


def _release(key: PrivateKey, payload: Callable[[int], bytes], grow: int) -> tuple[bytes, bytes]:
    """Images 1.0.0 of ``payload(0)`` and 1.1.0 of ``payload(grow)``, signed by ``key``."""
    old = make_image(payload(0), [key], version="1.0.0", security_counter=1, hardware_ids=(HW,))
    new = make_image(payload(grow), [key], version="1.1.0", security_counter=2, hardware_ids=(HW,))
    return old, new


def _elf64(body: bytes, vaddr: int = 0x400000, machine: int = 62) -> bytes:
    """A minimal little-endian ELF64 file: its header, one PT_LOAD R+X segment, ``body``."""
    phoff, phnum = 64, 1
    header = (
        b"\x7fELF\x02\x01\x01"
        + bytes(9)
        + struct.pack("<HHIQQQIHHHHHH", 3, machine, 1, vaddr, phoff, 0, 0, 64, 56, phnum, 64, 0, 0)
    )
    total = 64 + 56 + len(body)
    phdr = struct.pack("<IIQQQQQQ", 1, 5, 0, vaddr, vaddr, total, total, 0x1000)
    return header + phdr + body


def test_elf_arch_names_the_predictor_of_its_machine() -> None:
    elf = _elf64(b"\x90" * 100)
    assert elf_arch(elf) is Arch.X86_64
    assert elf_arch(elf[:18] + (40).to_bytes(2, "little") + elf[20:]) is Arch.THUMB2
    assert elf_arch(elf[:18] + (183).to_bytes(2, "little") + elf[20:]) is Arch.NONE  # AArch64
    assert elf_arch(elf[:5] + b"\x02" + elf[6:]) is None  # big-endian
    assert elf_arch(b"\x7fELF") is None
    assert elf_arch(b"raw firmware, no header") is None


def test_an_elf_of_another_machine_is_not_predicted(key: PrivateKey) -> None:
    """The trials are spared: its header says no predictor of ours reads its code."""
    old, new = _elf_pair(key, grow=9, machine=183)  # x86-64 code in an AArch64 ELF
    pair = Pair(key, old, new)
    delta = pair.delta(chunk_size=1 << 16, zstd=False)
    assert header_of(delta).predictor is Arch.NONE and header_of(delta).absolute is None
    assert apply_bytes(old, delta, pair.trusted) == new
    forced = pair.delta(chunk_size=1 << 16, zstd=False, predictor=Arch.X86_64)
    assert header_of(forced).predictor is Arch.X86_64  # a forced predictor still applies


def test_elf_code_range_reads_the_executable_segment() -> None:
    elf = _elf64(b"\x90" * 100)
    found = elf_code_range(elf, 300)
    assert found == Absolute(8, 0x400000, 0x400000 + len(elf), 0x400000 - 300, 0x400000)
    assert elf_code_range(b"not an elf" * 10, 0) is None
    assert elf_code_range(elf[:70], 0) is None  # its program header is cut off
    big_endian = elf[:5] + b"\x02" + elf[6:]
    assert elf_code_range(big_endian, 0) is None
    far = elf[:32] + (0xC100000000000040).to_bytes(8, "little") + elf[40:]
    assert elf_code_range(far, 0) is None  # once an OverflowError out of unpack_from
    assert elf_code_range(elf[:54] + b"\x08\x00" + elf[56:], 0) is None  # entries too short
    with open(sys.executable, "rb") as interpreter:  # a real ELF: the Python running this
        head = interpreter.read(1 << 12)
    if head[:4] == b"\x7fELF":
        real = elf_code_range(head, 0)
        assert real is not None and real.width in (4, 8) and real.hi > real.lo


def _elf_pair(key: PrivateKey, grow: int, machine: int = 62) -> tuple[bytes, bytes]:
    """x86-64 code plus a table of absolute pointers to its functions, as an ELF."""

    def payload(grow: int) -> bytes:
        code, at = code_layout("x86_64", 11, grow=grow, functions=60)
        places = range(0, len(code) - grow, 97)  # the same places of the code, moved or not
        table = b"".join(
            (0x400000 + 120 + p + (grow if p >= at else 0)).to_bytes(8, "little") for p in places
        )
        return _elf64(code + table, machine=machine)

    return _release(key, payload, grow)


def test_absolute_pointers_of_an_elf_are_predicted(key: PrivateKey) -> None:
    old, new = _elf_pair(key, grow=9)
    pair = Pair(key, old, new)
    delta = pair.delta(chunk_size=1 << 16, zstd=False)
    head = header_of(delta)
    assert head.predictor is Arch.X86_64 and head.absolute is not None
    assert head.absolute.lo == 0x400000 and head.absolute.width == 8
    assert apply_bytes(old, delta, pair.trusted) == new
    # the same bytes without the ELF header's help cost more
    stripped = pair.delta(chunk_size=1 << 16, zstd=False, predictor=Arch.NONE)
    assert len(delta) < len(stripped)


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda a: None, id="pointers not predicted"),
        pytest.param(lambda a: replace(a, new_bias=a.new_bias + 16), id="another new bias"),
        pytest.param(lambda a: replace(a, old_bias=a.old_bias - 8), id="another old bias"),
        pytest.param(lambda a: replace(a, hi=a.lo + 64), id="a narrower range"),
    ],
)
def test_changed_absolute_fields_fail_the_payload_digest(key: PrivateKey, change) -> None:
    old, new = _elf_pair(key, grow=9)
    pair = Pair(key, old, new)
    delta = pair.delta(chunk_size=1 << 16, zstd=False)
    head, rest, zdict = split_container(delta)
    assert head.absolute is not None
    forged_head = replace(head, absolute=change(head.absolute))
    forged = resign(key, delta, encode_header(forged_head, zdict) + rest)
    with pytest.raises(DigestMismatchError, match="payload digest"):
        apply_bytes(old, forged, pair.trusted)


def test_malformed_absolute_fields_are_refused(key: PrivateKey) -> None:
    old, new = _elf_pair(key, grow=9)
    pair = Pair(key, old, new)
    delta = pair.delta(chunk_size=1 << 16, zstd=False)
    raw = bytearray(container_of(delta))
    at = HEAD.size + len(uvarint(header_of(delta).base_length))
    assert raw[at] == 8  # the width
    for width in (0, 3, 16):
        raw[at] = width
        with pytest.raises(MalformedError, match="absolute"):
            apply_bytes(old, resign(key, delta, bytes(raw)), pair.trusted)


def _raw_firmware_pair(key: PrivateKey, base: int) -> tuple[bytes, bytes]:
    """Thumb-2 code followed by a literal pool of 32-bit pointers into it, linked at ``base``."""

    def payload(grow: int) -> bytes:
        code, at = code_layout("thumb2", 12, grow=grow, functions=60)
        places = list(range(0, len(code) - grow, 5))
        random.Random(1).shuffle(places)  # moved or not, in no order: the diff cannot guess
        pool = b"".join(
            (base + p + (grow if p >= at else 0) | 1).to_bytes(4, "little") for p in places
        )
        return code + pool

    return _release(key, payload, 8)


def test_raw_firmware_pointers_are_predicted_with_its_load_address(key: PrivateKey) -> None:
    old, new = _raw_firmware_pair(key, 0x08000000)
    pair = Pair(key, old, new)
    told = pair.delta(chunk_size=1 << 16, zstd=False, load_address=0x08000000)
    # told a wrong address, the creator finds no pointers there and predicts none
    unpredicted = pair.delta(chunk_size=1 << 16, zstd=False, load_address=0x30000000)
    head = header_of(told)
    assert head.absolute is not None and head.absolute.width == 4
    assert (head.absolute.lo, head.absolute.new_bias) == (0x08000000, 0x08000000)
    assert header_of(unpredicted).absolute is None
    assert len(told) < len(unpredicted) - 20, (len(told), len(unpredicted))
    assert apply_bytes(old, told, pair.trusted) == new


@pytest.mark.parametrize("base", [0x08000000, 0x00010000, 0x10004000, 0x0000C200])
def test_raw_firmware_load_address_is_guessed_from_its_pointers(key: PrivateKey, base: int) -> None:
    old, new = _raw_firmware_pair(key, base)
    pair = Pair(key, old, new)
    guessed = pair.delta(chunk_size=1 << 16, zstd=False)
    told = pair.delta(chunk_size=1 << 16, zstd=False, load_address=base)
    head = header_of(guessed)
    assert head.absolute is not None
    assert head.absolute.lo == base  # page-aligned bases exactly, others to GUESS_ALIGN
    assert len(guessed) == len(told)
    assert apply_bytes(old, guessed, pair.trusted) == new


def test_guessed_load_addresses_are_the_densest_pointer_windows() -> None:
    rnd = random.Random(5)
    code = rnd.randbytes(8000)
    targets = [0x08001345] + [0x08001345 + rnd.randrange(7000) for _ in range(199)]
    pool = b"".join(t.to_bytes(4, "little") for t in targets)
    # the lowest pointer rounded down to a page, and to GUESS_ALIGN
    assert guess_load_addresses(code + pool) == [0x08001000, 0x08001300]
    # no crowd of pointers: random words, small integers, too short a payload
    assert guess_load_addresses(rnd.randbytes(16000)) == []
    assert guess_load_addresses(b"".join(i.to_bytes(4, "little") for i in range(4000))) == []
    assert guess_load_addresses(pool[: GUESS_FLOOR - 4]) == []
    # fewer than the minimum of pointers crowding together
    few = b"".join((0x20000000 + 4 * i).to_bytes(4, "little") for i in range(15))
    assert guess_load_addresses(rnd.randbytes(8000) + few) == []


@settings(max_examples=300, deadline=None)
@given(
    st.binary(max_size=512),
    st.lists(st.integers(0, (1 << 32) - 1), max_size=64),
    st.integers(0, 1 << 31),
    st.integers(0, 1 << 14),
)
def test_guessed_load_addresses_are_aligned_and_in_range(
    data: bytes, words: list[int], base: int, pad: int
) -> None:
    pointers = b"".join((base + 4 * i).to_bytes(4, "little") for i in range(40))
    raw = b"".join(w.to_bytes(4, "little") for w in words) + data
    for head in (b"", pointers):
        payload = head + raw + bytes(pad)  # zeros: small integers, never pointers
        guesses = guess_load_addresses(payload)
        if len(payload) < GUESS_FLOOR:
            assert guesses == []
        assert len(guesses) == len(set(guesses)) <= 4
        for g in guesses:
            assert g % GUESS_ALIGN == 0
            assert 0 <= g < (1 << 32) - len(payload) + GUESS_ALIGN


def test_a_wrong_guess_is_not_kept(key: PrivateKey) -> None:
    """A crowd of words that are no pointers (a table of constants) is tried and dropped."""
    rnd = random.Random(9)
    table = b"".join((0x40000000 + rnd.randrange(20000)).to_bytes(4, "little") for _ in range(300))

    def payload(grow: int) -> bytes:
        code, _at = code_layout("thumb2", 12, grow=grow, functions=60)
        return code + table

    old, new = _release(key, payload, 8)
    assert guess_load_addresses(payload(0))[:1] == [0x40000000]
    delta = Pair(key, old, new).delta(chunk_size=1 << 16, zstd=False)
    assert header_of(delta).absolute is None
    assert apply_bytes(old, delta, Pair(key, old, new).trusted) == new


def test_raw_range_is_validated() -> None:
    assert raw_range(0x08000000, 0, 0) is None
    assert raw_range(0xFFFFFF00, 0x200, 0) is None  # past 32 bits
    assert raw_range(0x1000, 0x100, 40) == Absolute(4, 0x1000, 0x1100, 0x1000 - 40, 0x1000)


def test_cli_load_address(tmp_path: Path, cli, key: PrivateKey) -> None:
    from cryptography.hazmat.primitives import serialization

    old, new = _raw_firmware_pair(key, 0x8000)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    paths = {name: tmp_path / name for name in ("key.pem", "old", "new", "delta")}
    paths["key.pem"].write_bytes(pem)
    paths["old"].write_bytes(old)
    paths["new"].write_bytes(new)
    args = ["delta", "create", "--key", str(paths["key.pem"])]
    files = [str(paths["old"]), str(paths["new"]), str(paths["delta"])]
    result = cli(*args, "--load-address", "0x8000", *files)
    assert result.code == 0, result.err
    assert header_of(paths["delta"].read_bytes()).absolute is not None
    for bad in ("zz", "-1", "0x100000000"):
        paths["delta"].unlink(missing_ok=True)
        result = cli(*args, "--load-address", bad, *files)
        assert result.code == 2 and "--load-address" in result.err
        assert_one_line(result.err)
        assert not paths["delta"].exists()


@_SETTINGS
@given(data=st.data())
def test_mutated_absolute_pointer_containers(key: PrivateKey, data: st.DataObject) -> None:
    """Mutations of a delta with absolute-pointer fields: refused cleanly or the exact image."""
    old, new = _elf_pair(key, grow=9)
    pair = Pair(key, old, new)
    delta = pair.delta(chunk_size=1 << 16, zstd=False)
    container = bytearray(container_of(delta))
    at = data.draw(st.integers(0, min(len(container) - 1, 64)))  # the header, absolute fields
    container[at] ^= 1 << data.draw(st.integers(0, 7))
    refused_or_exact(old, new, resign(key, delta, bytes(container)))


@_SETTINGS
@given(
    data=st.data(),
    wide=st.booleans(),
)
def test_elf_code_range_never_fails_on_garbage(data: st.DataObject, wide: bool) -> None:
    """The creator reads the old payload's ELF headers: any bytes give a range or None."""
    elf = bytearray(_elf64(b"\x90" * 200) if wide else b"\x7fELF\x01\x01\x01" + bytes(200))
    for _ in range(data.draw(st.integers(0, 6))):
        at = data.draw(st.integers(0, len(elf) - 1))
        elf[at] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(elf)))
    found = elf_code_range(bytes(elf[:cut]), data.draw(st.integers(0, 1 << 20)))
    assert found is None or (found.width in (4, 8) and found.lo < found.hi)
    found = elf_code_range(data.draw(st.binary(max_size=300)), 0)
    assert found is None or found.lo < found.hi
