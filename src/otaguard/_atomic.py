"""Atomic file output: a reader sees the old file or the whole new one, never a part.

Everything otaguard writes (keys, signed images, extracted payloads) goes
through :func:`atomic_output` so that a crash, a power cut or a rejected
verification half-way never leaves a truncated file where a good one is
expected.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from otaguard.errors import StorageError


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike[str], *, mode: int = 0o644) -> Iterator[BinaryIO]:
    """Yield a binary file that replaces ``path`` only if the block succeeds.

    The temporary file lives in the destination directory so that the final
    ``os.replace`` is a rename on one filesystem. It is created with ``mode``
    from the start, so a private key is never readable by others, not even
    for a moment. On any exception the temporary file is removed.
    """
    target = Path(path)
    directory = target.parent if str(target.parent) else Path(".")
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=directory)
    except OSError as exc:
        raise StorageError(f"cannot write {target}: {exc.strerror or exc}") from exc
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), mode)
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        if isinstance(exc, OSError) and not isinstance(exc, StorageError):
            raise StorageError(f"cannot write {target}: {exc.strerror or exc}") from exc
        raise


def write_atomic(path: str | os.PathLike[str], data: bytes, *, mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_output(path, mode=mode) as handle:
        handle.write(data)
