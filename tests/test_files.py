"""``_files`` and ``_atomic``: the one size cap on reads, the one policy for outputs."""

from __future__ import annotations

import fcntl
import os
import socket
import stat
from pathlib import Path

import pytest

from otaguard._atomic import atomic_output, sweep_stale_temps, write_atomic
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


# --- atomic_output: the output-path policy and the sweep of dead writers' files -------------


def _temp_name(target: str) -> str:
    return f".{target}.otaguard-abcd1234.tmp"


@pytest.mark.parametrize("kind", ["directory", "fifo", "socket", "chardev"])
def test_only_regular_files_are_written(tmp_path: Path, kind: str) -> None:
    out = tmp_path / "out"
    if kind == "directory":
        out.mkdir()
    elif kind == "fifo":
        os.mkfifo(out)
    elif kind == "socket":
        with socket.socket(socket.AF_UNIX) as sock:
            sock.bind(str(out))
    else:
        os.mknod(out, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    mode = out.lstat().st_mode
    with pytest.raises(UsageError, match="otaguard writes only regular files"):
        write_atomic(out, b"data")
    assert out.lstat().st_mode == mode
    assert os.listdir(tmp_path) == ["out"]


def test_an_input_directory_protects_the_files_in_it(tmp_path: Path) -> None:
    ca = tmp_path / "ca"
    ca.mkdir()
    (ca / "key.pem").write_bytes(b"secret")
    with pytest.raises(UsageError, match=r"is the input .*key\.pem: refusing to replace an input"):
        write_atomic(ca / "key.pem", b"crl", inputs=[ca, None, "pkcs11:token=x"])
    assert (ca / "key.pem").read_bytes() == b"secret"
    write_atomic(ca / "crl.pem", b"crl", inputs=[ca])  # a new file beside them is fine
    write_atomic(tmp_path / "k.pem", b"x", inputs=[tmp_path / "missing", "pkcs11:object=k"])


def test_no_overwrite_refuses_a_file_that_appears_while_writing(tmp_path: Path) -> None:
    """The final step is a hard link, which fails if the name exists: no check-then-replace race."""
    out = tmp_path / "k.pem"
    with (
        pytest.raises(UsageError, match="exists: give --force"),
        atomic_output(out, overwrite=False) as handle,
    ):
        handle.write(b"mine")
        out.write_bytes(b"another writer's key")
    assert out.read_bytes() == b"another writer's key"
    assert os.listdir(tmp_path) == ["k.pem"]
    with pytest.raises(UsageError, match="exists: give --force"):
        write_atomic(out, b"again", overwrite=False)
    write_atomic(tmp_path / "new.pem", b"new", overwrite=False, mode=0o600)
    assert stat.S_IMODE((tmp_path / "new.pem").stat().st_mode) == 0o600


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_a_failed_block_leaves_the_old_file_and_no_temp(tmp_path: Path, error: type) -> None:
    out = tmp_path / "fw.img"
    out.write_bytes(b"old")
    with pytest.raises(error), atomic_output(out) as handle:
        handle.write(b"half of the new")
        raise error()
    assert out.read_bytes() == b"old" and os.listdir(tmp_path) == ["fw.img"]


def test_the_temp_file_is_locked_while_it_is_written(tmp_path: Path) -> None:
    with atomic_output(tmp_path / "out") as handle:
        handle.write(b"x")
        handle.flush()
        (temp,) = [p for p in tmp_path.iterdir() if p.name.startswith(".out.otaguard-")]
        with open(temp, "rb") as other, pytest.raises(BlockingIOError):
            fcntl.flock(other.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert sweep_stale_temps(tmp_path) == []
    assert os.listdir(tmp_path) == ["out"]


def test_the_sweep_removes_only_dead_writers_files_of_our_naming(tmp_path: Path) -> None:
    dead = tmp_path / _temp_name("fw.img")
    dead.write_bytes(b"x" * 1000)
    empty = tmp_path / _temp_name("key.pem")
    empty.write_bytes(b"")  # killed between creating and writing: dead too
    live = tmp_path / _temp_name("live.img")
    live.write_bytes(b"being written")
    kept = {
        tmp_path / ".fw.img.abcd1234.tmp": "not ours (no otaguard mark)",
        tmp_path / "fw.img.otaguard-abcd1234.tmp": "not hidden: not ours",
        tmp_path / ".x.otaguard-abcd1234.tmp.bak": "not ours",
    }
    for path in kept:
        path.write_bytes(b"someone else's")
    fifo = tmp_path / _temp_name("fifo")
    os.mkfifo(fifo)
    victim = tmp_path / "victim"
    victim.write_bytes(b"a file a symlink points to")
    (tmp_path / _temp_name("link")).symlink_to(victim)
    with open(live, "rb") as writer:
        fcntl.flock(writer.fileno(), fcntl.LOCK_EX)  # a live writer holds its lock
        removed = sweep_stale_temps(tmp_path)
    assert sorted(removed) == sorted([dead.name, empty.name])
    assert live.exists() and fifo.exists() and all(p.exists() for p in kept)
    assert (tmp_path / _temp_name("link")).is_symlink() and victim.exists()


def test_a_write_sweeps_its_directory_unless_a_writer_is_creating_its_temp(tmp_path: Path) -> None:
    """A writer holds the directory's lock (shared) from creating its temp file to locking it.

    The sweep needs the lock exclusively, so a temp file that exists but is not locked yet
    (a live writer in that instant) is never taken for a dead writer's.
    """
    stale = tmp_path / _temp_name("old.img")
    stale.write_bytes(b"left by a killed writer")
    directory = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(directory, fcntl.LOCK_SH)  # another writer, between mkstemp and flock
        write_atomic(tmp_path / "a.img", b"a")
        assert stale.exists()
    finally:
        os.close(directory)
    write_atomic(tmp_path / "b.img", b"b")  # the next write in the directory sweeps it
    assert not stale.exists()
    assert sorted(os.listdir(tmp_path)) == ["a.img", "b.img"]
