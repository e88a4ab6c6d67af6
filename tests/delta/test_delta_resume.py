"""A delta install cut short resumes from the last verified chunk written to the inactive slot."""

from __future__ import annotations

import hmac
import io
import random

import pytest

import otaguard.delta as delta_api
from helpers import make_image
from helpers_delta import HW, edit, make_delta
from otaguard.crypto.keys import PrivateKey
from otaguard.delta import open_delta, reconstruct
from otaguard.device.bootloader import boot
from otaguard.device.faults import FaultPlan, PowerLoss, TearFill
from otaguard.device.install import install, install_delta, running_of
from otaguard.errors import DigestMismatchError

from .test_delta_device import new_device, running_v1

CHUNK = 8192


@pytest.fixture(scope="module")
def images(key: PrivateKey) -> dict[str, bytes]:
    rnd = random.Random(31)
    v1 = rnd.randbytes(40 * 1024)
    v2 = edit(v1, 5, 12)
    out = {
        "v1": make_image(v1, [key], version="1.0.0", security_counter=1, hardware_ids=(HW,)),
        "v2": make_image(v2, [key], version="2.0.0", security_counter=2, hardware_ids=(HW,)),
    }
    for join in (True, False):
        delta = make_delta(key, out["v1"], out["v2"], chunk_size=CHUNK, join=join)[0]
        out["joined" if join else "streams"] = delta
    return out


def _apply(delta: bytes, old: bytes, written: bytes | None) -> tuple[bytes, int, int]:
    """The rebuilt image, the chunks resumed, and the old-image bytes read after the base check."""
    stream = io.BytesIO(delta)
    opened = open_delta(stream, None)
    reads = [0]

    def read_at(offset: int, n: int) -> bytes:
        reads[0] += n
        return old[offset : offset + n]

    def read_written(offset: int, n: int) -> bytes:
        assert written is not None
        return written[offset : offset + n]

    image = reconstruct(
        opened, stream, len(old), read_at, written=None if written is None else read_written
    )
    reads[0] = 0
    return image.read(), image.resumed_chunks, reads[0]


@pytest.mark.parametrize("kind", ["joined", "streams"])
def test_intact_chunks_are_read_back_not_decoded(images: dict[str, bytes], kind: str) -> None:
    delta, old, new = images[kind], images["v1"], images["v2"]
    full, none_resumed, full_reads = _apply(delta, old, None)
    assert full == new and none_resumed == 0
    header_len = len(open_delta(io.BytesIO(delta), None).header.new_signed)
    for chunks in range(1, 5):
        prefix = new[: header_len + chunks * CHUNK]
        junk = random.Random(chunks).randbytes(len(new) - len(prefix))  # a torn rest
        image, resumed, reads = _apply(delta, old, prefix + junk)
        assert image == new
        assert resumed == chunks
        assert reads < full_reads


def test_a_damaged_chunk_ends_the_resumed_prefix(images: dict[str, bytes]) -> None:
    delta, old, new = images["streams"], images["v1"], images["v2"]
    header_len = len(open_delta(io.BytesIO(delta), None).header.new_signed)
    torn = bytearray(new)
    torn[header_len + 2 * CHUNK + 100] ^= 0x10  # chunk 2 torn; 0, 1 and 3 intact
    image, resumed, _reads = _apply(delta, old, bytes(torn))
    assert image == new and resumed == 2
    other_header = bytearray(new)
    other_header[20] ^= 1
    assert _apply(delta, old, bytes(other_header))[1] == 0  # another image there: from scratch


def test_a_prefix_that_only_seems_right_fails_the_payload_digest(
    images: dict[str, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Chunk hashes are 4 bytes: a forged prefix matching them still fails the signed digest."""
    delta, old, new = images["streams"], images["v1"], images["v2"]
    header_len = len(open_delta(io.BytesIO(delta), None).header.new_signed)
    forged = bytearray(new)
    forged[header_len + 10] ^= 0xFF
    from otaguard.delta import apply

    monkeypatch.setattr(apply, "hmac", _ChunkHashesAlwaysMatch)  # in the applier only
    with pytest.raises(DigestMismatchError):
        _apply(delta, old, bytes(forged))


class _ChunkHashesAlwaysMatch:
    @staticmethod
    def compare_digest(a: bytes, b: bytes) -> bool:
        return len(a) == 4 or hmac.compare_digest(a, b)


def test_power_cuts_at_random_flash_operations_of_a_delta_install(
    key: PrivateKey, images: dict[str, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    resumed: list[int] = []
    real = delta_api.reconstruct

    def spy(*args, **kwargs):
        image = real(*args, **kwargs)
        resumed.append(image.resumed_chunks)
        return image

    monkeypatch.setattr(delta_api, "reconstruct", spy)
    reference = install(new_device(key), {"main": io.BytesIO(images["v2"])}).images[0].image_id
    device, running = running_v1(key, {**images, "v1": images["v1"]})
    device.arm()
    total = install_delta(device, io.BytesIO(images["streams"]), running=running).flash_ops
    rng = random.Random(2026)
    cuts = 0
    for _trial in range(6):
        device, running = running_v1(key, {**images, "v1": images["v1"]})
        while True:  # power fails again and again, at random operations, until it gets through
            op = rng.randrange(total)
            tear = rng.random() < 0.5
            device.arm(
                FaultPlan(tear_at=op, fill=TearFill.RANDOM, seed=op)
                if tear
                else FaultPlan(cut_before=op)
            )
            try:
                result = install_delta(device, io.BytesIO(images["streams"]), running=running)
                break
            except PowerLoss:
                cuts += 1
            device.arm()
            after = boot(device)  # power back: the old image boots, verified
            assert after.main is not None and after.main.metadata.version == "1.0.0"
            running = running_of(after)  # type: ignore[assignment]
        assert result.images[0].image_id == reference
        device.arm()
        booted = boot(device)
        assert booted.state == "trial" and booted.images[0].image_id == reference
    print(f"{cuts} power cuts; chunks resumed per run: {resumed}")
    assert cuts >= 6
    assert max(resumed) >= 2  # some reruns found chunks in place and did not decode them again
