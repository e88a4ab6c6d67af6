"""``read_bounded``: the one size cap on every small file otaguard reads whole."""

from __future__ import annotations

from pathlib import Path

import pytest

from otaguard._files import read_bounded
from otaguard.cli.main import run
from otaguard.errors import MalformedError, StorageError, UsageError


def test_reads_up_to_the_limit_and_refuses_one_byte_more(tmp_path: Path) -> None:
    f = tmp_path / "k.pem"
    f.write_bytes(b"x" * 100)
    assert read_bounded(f, 100, "key file") == b"x" * 100
    with pytest.raises(UsageError, match=r"key file .*k\.pem is larger than 99 bytes"):
        read_bounded(f, 99, "key file")
    with pytest.raises(MalformedError):
        read_bounded(f, 99, too_large=MalformedError)


def test_unreadable_file_is_a_storage_error(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="cannot read CRL"):
        read_bounded(tmp_path / "missing", 10, "CRL")


def test_a_huge_key_file_is_refused_through_the_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    huge = tmp_path / "huge.pub"
    with huge.open("wb") as f:
        f.truncate((1 << 20) + 1)  # sparse: the cap, not the memory, must refuse it
    image = tmp_path / "fw.img"
    image.write_bytes(b"OTAGUARD" + bytes(100))
    assert run(["verify", "--trusted-key", str(huge), str(image)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is larger than 1048576 bytes" in err
