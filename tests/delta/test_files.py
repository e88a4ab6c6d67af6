"""``otaguard.delta.files``: deltas between files as a library (paths in, checks before writes)."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import cached_key, make_image
from otaguard.crypto.keys import KeyType
from otaguard.crypto.signer import KeySigner
from otaguard.delta.files import applied_report, apply_file, create_file
from otaguard.errors import OtaguardError, UsageError
from otaguard.image import TrustedKeys

KEY = cached_key(KeyType.ED25519, 3)
OLD = bytes(range(256)) * 400
NEW = OLD[:50_000] + b"a change" * 100 + OLD[50_000:]


@pytest.fixture
def images(tmp_path: Path) -> tuple[Path, Path]:
    old, new = tmp_path / "old.img", tmp_path / "new.img"
    old.write_bytes(make_image(OLD, [KEY], version="1.0.0"))
    new.write_bytes(make_image(NEW, [KEY], version="1.1.0"))
    return old, new


def test_create_then_apply_rebuilds_the_new_image(
    images: tuple[Path, Path], tmp_path: Path
) -> None:
    old, new = images
    out = tmp_path / "d.delta"
    made = create_file(str(old), str(new), str(out), [KeySigner(KEY)], chunk_size=1 << 16)
    assert made.out_bytes == out.stat().st_size and made.new_bytes == new.stat().st_size
    assert made.to_json()["version"] == "1.1.0" and made.to_json()["delta_bytes"] == made.out_bytes
    rebuilt = tmp_path / "rebuilt.img"
    opened = apply_file(str(old), str(out), str(rebuilt), TrustedKeys.of([KEY.public_key()]))
    assert rebuilt.read_bytes() == new.read_bytes()
    report = applied_report(opened, str(rebuilt))
    assert report["signatures_verified"] is True and report["version"] == "1.1.0"


def test_a_delta_applied_to_the_wrong_base_writes_nothing(
    images: tuple[Path, Path], tmp_path: Path
) -> None:
    old, new = images
    out = tmp_path / "d.delta"
    create_file(str(old), str(new), str(out), [KeySigner(KEY)], chunk_size=1 << 16)
    target = tmp_path / "never.img"
    with pytest.raises(OtaguardError):
        apply_file(str(new), str(out), str(target), None)
    assert not target.exists()


def test_create_never_replaces_an_input(images: tuple[Path, Path], tmp_path: Path) -> None:
    old, new = images
    before = new.read_bytes()
    with pytest.raises(UsageError, match="refusing to replace an input"):
        create_file(str(old), str(new), str(new), [KeySigner(KEY)], chunk_size=1 << 16)
    assert new.read_bytes() == before
