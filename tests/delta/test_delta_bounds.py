"""The applier's memory does not grow with the image; the documented layout matches the code."""

from __future__ import annotations

import io
import os
import random
import re
import subprocess
import sys
from pathlib import Path

from helpers import make_image
from helpers_delta import HW, make_delta
from otaguard.crypto.keys import PrivateKey
from otaguard.delta import open_delta
from otaguard.delta.format import CHUNK_HASH, HEAD, HEADERS_HASH, MAX_PREDICTED
from otaguard.delta.predict import MAX_SEGMENTS

DOC = Path(__file__).resolve().parents[2] / "docs" / "delta.md"
SRC = Path(__file__).resolve().parents[2] / "src"

_APPLY = """
import io, os, resource, sys
sys.path.insert(0, {src!r})
from otaguard.delta import open_delta, reconstruct
old = open(sys.argv[1], "rb"); delta = open(sys.argv[2], "rb")
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
opened = open_delta(delta, None)
size = os.fstat(old.fileno()).st_size
image = reconstruct(opened, delta, size, lambda off, n: os.pread(old.fileno(), n, off))
with open(os.devnull, "wb") as sink:
    image.readall_into(sink)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)
"""


def _growth_kib(tmp: Path, key: PrivateKey, mib: int) -> int:
    rnd = random.Random(mib)
    payload = rnd.randbytes(mib << 20)
    changed = bytearray(payload)
    for _ in range(50):
        pos = rnd.randrange(len(changed))
        changed[pos : pos + 16] = rnd.randbytes(16)
    old = make_image(payload, [key], version="1.0.0", security_counter=1, hardware_ids=(HW,))
    new = make_image(bytes(changed), [key], version="1.1.0", security_counter=2, hardware_ids=(HW,))
    delta, _stats = make_delta(key, old, new, chunk_size=1 << 18)
    (tmp / "old").write_bytes(old)
    (tmp / "delta").write_bytes(delta)
    code = _APPLY.format(src=str(SRC))
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp / "old"), str(tmp / "delta")],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(out.stdout)


def test_apply_memory_is_independent_of_image_size(tmp_path: Path, key: PrivateKey) -> None:
    small = _growth_kib(tmp_path, key, 1)
    large = _growth_kib(tmp_path, key, 12)
    bound_kib = (3 * (1 << 18) + (1 << 20)) // 1024  # 3 chunks + 1 MiB (docs/delta.md)
    assert large <= bound_kib + 2048, (small, large)
    assert large - small <= 2048, (small, large)


def test_documented_layout_matches_the_code() -> None:
    text = DOC.read_text()
    assert HEAD.size == 11 and "| 11 | 1-10 | base length: varint" in text
    assert HEADERS_HASH == 16 and "| ... | 16 | SHA-256 of the new image's preamble" in text
    assert CHUNK_HASH == 4 and "(N - 1) x 4" in text
    assert re.search(r"\| 0 \| 4 \| magic `OTAD`", text)
    assert MAX_SEGMENTS == 1 << 15 and "at most 32,768" in text
    assert MAX_PREDICTED == 1 << 22 and "4 MiB" in text
    assert os.path.exists(DOC)


def test_predicted_apply_memory_stays_under_its_bound(tmp_path: Path, key: PrivateKey) -> None:
    """The largest predicted delta (old + new payload just under 4 MiB) within 20 MiB."""
    from helpers_delta import code_image
    from otaguard.delta.predict import Arch

    functions = 30_000  # ~1.95 MB of code each
    old_payload = code_image("thumb2", 8, functions=functions)
    new_payload = code_image("thumb2", 8, grow=40, functions=functions)
    assert len(old_payload) + len(new_payload) > MAX_PREDICTED * 0.85
    old = make_image(old_payload, [key], version="1.0.0", security_counter=1, hardware_ids=(HW,))
    new = make_image(new_payload, [key], version="1.1.0", security_counter=2, hardware_ids=(HW,))
    delta, _stats = make_delta(key, old, new, zstd=False, predictor=Arch.THUMB2)
    assert open_delta(io.BytesIO(delta), None).header.predictor is Arch.THUMB2
    (tmp_path / "old").write_bytes(old)
    (tmp_path / "delta").write_bytes(delta)
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            _APPLY.format(src=str(SRC)),
            str(tmp_path / "old"),
            str(tmp_path / "delta"),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert int(out.stdout) <= 20 * 1024, int(out.stdout)
