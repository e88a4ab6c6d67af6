"""Atomic file output: a reader sees the old file or the whole new one, never a part.

Everything otaguard writes (keys, signed images, extracted payloads) goes
through :func:`atomic_output` so that a crash, a power cut or a rejected
verification half-way never leaves a truncated file where a good one is
expected. It is also the one place that decides what an output path may be:

* **Only regular files are written.** An existing output that is a character or
  block device, a FIFO, a socket or a directory is refused (``UsageError``)
  before anything is written. Replacing it by a regular file (what a rename
  does) destroyed ``/dev/null`` when root ran ``otaguard sign IN /dev/null``;
  writing into it in place would hand a reader (a FIFO's other end) bytes
  before the command has decided they are good, breaking the promise above.
  Commands that can write to stdout take ``-`` instead (``otaguard.cli.common``).
* **A symlink is followed**: the file it points to is replaced atomically and
  the link keeps pointing to it, as ``cp`` and the shell's ``>`` do (a
  ``current.img -> v1.2.img`` link stays a link). The checks apply to the file it
  points to, so a link to ``/dev/null`` is refused like ``/dev/null`` itself.
* **An input is never replaced**: ``inputs`` names the files the command reads
  (keys, images, certificates); an output that is one of them (the same inode,
  however it is named: symlink, hard link, ``./``) is refused. A directory among
  ``inputs`` protects every file directly in it (a CA directory).
* **No clobbering on request**: with ``overwrite=False`` an existing output is
  refused, and the final step is a hard link that fails if the name appeared
  meanwhile, so two writers never replace each other's file (keys).

Temporary files are named ``.NAME.otaguard-XXXXXXXX.tmp`` in the output's
directory and are locked (``flock``) by their writer for as long as they exist.
A writer killed outright (SIGKILL, power cut) leaves its temporary file behind;
the first write of a later otaguard process in that directory removes every
such file whose lock it can take, that is whose writer is dead. A writer holds
the directory's lock (shared) from creating its temporary file until it has
locked it, and the sweeper holds it exclusively, so a file is never swept in
the instant between its creation and its lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import signal
import stat
import tempfile
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from otaguard.errors import StorageError, UsageError

#: What otaguard's temporary files look like (and the only files the sweep removes).
_TEMP_MARK = ".otaguard-"
_TEMP_NAME = re.compile(r"\A\..+\.otaguard-[a-z0-9_]+\.tmp\Z", re.DOTALL)
#: Longest part of the output's name kept in its temporary file's name (NAME_MAX is 255).
_NAME_KEPT = 200
#: Directories (st_dev, st_ino) this process has already swept: once per process is enough,
#: a leftover is a previous process's, and a sweep lists the whole directory.
_SWEPT: set[tuple[int, int]] = set()

InputPath = str | os.PathLike[str] | None

_KINDS = (
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISDIR, "a directory"),
)


def output_target(path: str | os.PathLike[str]) -> Path:
    """The file that writing ``path`` replaces: ``path``, or where its symlink points."""
    target = Path(path)
    if target.is_symlink():
        return Path(os.path.realpath(target))
    return target


def check_output(
    path: str | os.PathLike[str],
    *,
    inputs: Iterable[InputPath] = (),
    overwrite: bool = True,
) -> Path:
    """Refuse an output path otaguard must not write (see the module docstring); its target.

    Called by :func:`atomic_output` on entry; a command may call it earlier, to refuse
    before slow work (generating a key in an HSM, say).
    """
    target = output_target(path)
    try:
        st = os.stat(target)
    except FileNotFoundError:
        return target
    except OSError as exc:
        raise StorageError(f"cannot write {path}: {exc.strerror or exc}") from exc
    for is_kind, kind in _KINDS:
        if is_kind(st.st_mode):
            raise UsageError(f"{path} is {kind}: otaguard writes only regular files")
    name = _same_as_input(st, inputs)
    if name is not None:
        raise UsageError(f"{path} is the input {name}: refusing to replace an input")
    if not overwrite:
        raise UsageError(f"{path} exists: give --force to replace it")
    return target


def _same_as_input(out: os.stat_result, inputs: Iterable[InputPath]) -> str | None:
    """The name of the input that is the file ``out``, if any."""
    for item in inputs:
        if item is None:
            continue
        try:
            st = os.stat(item)
        except (OSError, ValueError):
            continue  # not a file (a pkcs11: URI) or unreadable: its reader reports it
        if stat.S_ISDIR(st.st_mode):
            try:
                with os.scandir(item) as entries:
                    inside = [e.path for e in entries if e.is_file()]
            except OSError:
                continue
            found = _same_as_input(out, inside)
            if found is not None:
                return found
        elif (st.st_dev, st.st_ino) == (out.st_dev, out.st_ino):
            return os.fspath(item)
    return None


@contextlib.contextmanager
def atomic_output(
    path: str | os.PathLike[str],
    *,
    mode: int = 0o644,
    inputs: Iterable[InputPath] = (),
    overwrite: bool = True,
) -> Iterator[BinaryIO]:
    """Yield a binary file that replaces ``path`` only if the block succeeds.

    The temporary file lives in the destination directory so that the final
    ``os.replace`` is a rename on one filesystem. It is created with ``mode``
    from the start, so a private key is never readable by others, not even
    for a moment. On any exception (KeyboardInterrupt included: the CLI turns
    SIGTERM into one) the temporary file is removed. ``inputs`` and
    ``overwrite``: see :func:`check_output`.
    """
    target = check_output(path, inputs=inputs, overwrite=overwrite)
    # Ctrl-C or SIGTERM between the temporary file's creation and the ``try`` that removes
    # it would leave it behind: both wait (blocked) until that ``try`` is in place.
    mask = _defer_signals()
    try:
        fd, tmp = _locked_temp(target, mode)
    except OSError as exc:
        _restore_signals(mask)
        raise StorageError(f"cannot write {path}: {exc.strerror or exc}") from exc
    except BaseException:
        _restore_signals(mask)
        raise
    handle = os.fdopen(fd, "wb")  # cannot fail on a descriptor just opened for writing
    try:
        # closing the file releases its lock: only once it is renamed or removed
        with handle:
            try:
                _restore_signals(mask)  # a signal that came meanwhile is raised here
                yield handle
                handle.flush()
                os.fsync(handle.fileno())
                _install(tmp, target, overwrite=overwrite)
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    tmp.unlink()
                raise
    except OSError as exc:
        raise StorageError(f"cannot write {path}: {exc.strerror or exc}") from exc


def write_atomic(
    path: str | os.PathLike[str],
    data: bytes,
    *,
    mode: int = 0o644,
    inputs: Iterable[InputPath] = (),
    overwrite: bool = True,
) -> None:
    """Write ``data`` to ``path`` atomically (the rules of :func:`atomic_output`)."""
    with atomic_output(path, mode=mode, inputs=inputs, overwrite=overwrite) as handle:
        handle.write(data)


def _install(tmp: Path, target: Path, *, overwrite: bool) -> None:
    if overwrite:
        os.replace(tmp, target)
        return
    try:
        os.link(tmp, target)  # fails if target exists, even one created a moment ago
    except FileExistsError:
        raise UsageError(f"{target} exists: give --force to replace it") from None
    except OSError:
        # a filesystem without hard links (FAT, some FUSE): checked, not atomic
        if os.path.lexists(target):
            raise UsageError(f"{target} exists: give --force to replace it") from None
        os.replace(tmp, target)
        return
    tmp.unlink()


_DEFERRED = {signal.SIGINT, signal.SIGTERM}


def _defer_signals() -> set[int | signal.Signals] | None:
    if threading.current_thread() is not threading.main_thread():
        return None  # Python runs signal handlers in the main thread only
    return signal.pthread_sigmask(signal.SIG_BLOCK, _DEFERRED)


def _restore_signals(mask: set[int | signal.Signals] | None) -> None:
    if mask is not None:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)


def _locked_temp(target: Path, mode: int) -> tuple[int, Path]:
    """A new temporary file beside ``target``, locked, after sweeping dead writers' ones."""
    directory = target.parent
    dir_fd = _guard_directory(directory)
    try:
        fd, name = tempfile.mkstemp(
            prefix=f".{target.name[:_NAME_KEPT]}{_TEMP_MARK}", suffix=".tmp", dir=directory
        )
        try:
            with contextlib.suppress(OSError):  # no locks on this filesystem: no sweep either
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.fchmod(fd, mode)
        except BaseException:
            os.unlink(name)
            os.close(fd)
            raise
    finally:
        if dir_fd >= 0:
            os.close(dir_fd)
    return fd, Path(name)


def _guard_directory(directory: Path) -> int:
    """A descriptor holding ``directory``'s lock (-1 if none): exclusive, after a sweep, or shared.

    Without the lock on some filesystems (flock unsupported), nothing is swept there.
    """
    try:
        dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return -1  # missing or unreadable: mkstemp reports the first, the second needs no guard
    try:
        fcntl.flock(dir_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        with contextlib.suppress(OSError):
            fcntl.flock(dir_fd, fcntl.LOCK_SH)  # a sweep is running: wait for it
        return dir_fd
    except OSError:
        return dir_fd
    try:
        _sweep_once(directory, os.fstat(dir_fd))
    except BaseException:
        os.close(dir_fd)
        raise
    return dir_fd


def _sweep_once(directory: Path, st: os.stat_result) -> None:
    key = (st.st_dev, st.st_ino)
    if key not in _SWEPT:
        _SWEPT.add(key)
        sweep_stale_temps(directory)


def sweep_stale_temps(directory: str | os.PathLike[str]) -> list[str]:
    """Remove otaguard temporary files in ``directory`` whose writer is dead; their names.

    A file is removed only if its name is ours, it is a regular file, and its lock
    can be taken (a live writer holds it until the file is renamed or removed).
    Callers must hold the directory's lock exclusively (see :func:`_locked_temp`).
    """
    removed: list[str] = []
    try:
        with os.scandir(directory) as scan:
            names = [e.name for e in scan if _TEMP_NAME.match(e.name)]
    except OSError:
        return removed
    for name in names:
        path = os.path.join(directory, name)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            continue  # gone, a symlink, or not ours to read
        try:
            opened = os.fstat(fd)
            if not stat.S_ISREG(opened.st_mode):
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                continue  # its writer is alive
            now = os.lstat(path)
            if (now.st_dev, now.st_ino) != (opened.st_dev, opened.st_ino):
                continue  # renamed away by its (finished) writer and the name reused
            os.unlink(path)
            removed.append(name)
        except OSError:
            continue
        finally:
            os.close(fd)
    return removed
