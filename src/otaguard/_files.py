"""Reading small files (keys, certificates, metadata) with a size cap.

Why one helper: every file otaguard reads whole comes from the operator or from
the network, and a multi-GiB "key" must cost an error, not the memory. One cap
check and one message, for every caller.
"""

from __future__ import annotations

import os

from otaguard.errors import OtaguardError, StorageError, UsageError


def read_bounded(
    path: str | os.PathLike[str],
    limit: int,
    what: str = "",
    *,
    too_large: type[OtaguardError] = UsageError,
) -> bytes:
    """The whole file, refused with ``too_large`` if it holds more than ``limit`` bytes."""
    name = f"{what} {os.fspath(path)}" if what else os.fspath(path)
    try:
        with open(path, "rb") as handle:
            data = handle.read(limit + 1)
    except OSError as exc:
        raise StorageError(f"cannot read {name}: {exc.strerror or exc}") from exc
    if len(data) > limit:
        raise too_large(f"{name} is larger than {limit} bytes")
    return data
