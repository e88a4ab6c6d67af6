"""The OpenSSL check documented in docs/image-format.md works, exactly as written.

The script is extracted from the document itself, so the documentation cannot
drift from the format without this test failing.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from helpers import ALL_KEY_TYPES, cached_key, make_image
from otaguard.crypto.keys import KeyType, public_key_pem

DOC = Path(__file__).resolve().parents[2] / "docs" / "image-format.md"


@pytest.fixture(scope="module")
def script(tmp_path_factory: pytest.TempPathFactory) -> Path:
    text = DOC.read_text()
    match = re.search(r"<!-- openssl-check -->\n```sh\n(.*?)```", text, re.S)
    assert match, "docs/image-format.md lost its openssl-check block"
    path = tmp_path_factory.mktemp("doc") / "check.sh"
    path.write_text(match.group(1))
    return path


def _check(
    script: Path, image: bytes, key_type: KeyType, tmp_path: Path, key_index: int = 0
) -> int:
    (tmp_path / "img").write_bytes(image)
    (tmp_path / "pub.pem").write_bytes(public_key_pem(cached_key(key_type, key_index).public_key()))
    proc = subprocess.run(
        ["sh", str(script), str(tmp_path / "img"), str(tmp_path / "pub.pem")],
        capture_output=True,
        text=True,
        check=False,
    )
    return proc.returncode


PAYLOAD = bytes(range(256)) * 300


@pytest.mark.parametrize("key_type", ALL_KEY_TYPES, ids=lambda k: k.value)
def test_openssl_accepts_genuine_images(script: Path, key_type: KeyType, tmp_path: Path) -> None:
    image = make_image(PAYLOAD, [cached_key(key_type)])
    assert _check(script, image, key_type, tmp_path) == 0


@pytest.mark.parametrize("key_type", ALL_KEY_TYPES, ids=lambda k: k.value)
def test_openssl_refuses_tampered_images(script: Path, key_type: KeyType, tmp_path: Path) -> None:
    image = make_image(PAYLOAD, [cached_key(key_type)])
    header_end = 16 + int.from_bytes(image[12:16], "big")
    for pos in (
        40,
        20,
        header_end - 3,
        header_end + 100,
        len(image) - 3,
    ):  # digest, header, payload, signature
        mutated = bytearray(image)
        mutated[pos] ^= 0x04
        assert _check(script, bytes(mutated), key_type, tmp_path) != 0, pos
    assert _check(script, image, key_type, tmp_path, key_index=1) != 0  # another key
