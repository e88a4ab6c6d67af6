"""Deltas between files: what ``otaguard delta create|apply`` do, with their paths.

Why apart from ``package``: the container works on bytes and streams; this module
decides how files become those (the old and new images memory-mapped, the delta read
in place, the output written atomically or to stdout for ``-``, nothing written before
every check passed) so that the CLI only parses and prints, and another caller (the
fleet server making deltas for a release) gets the same rules.
"""

from __future__ import annotations

import contextlib
import mmap
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from otaguard._stdio import open_input, output_file
from otaguard.crypto.signer import Signer
from otaguard.delta.engine import DeltaStats
from otaguard.delta.package import OpenedDelta, create, open_delta, reconstruct
from otaguard.errors import UsageError
from otaguard.image import ImageMetadata, TrustedKeys

#: The chunk sizes ``create_file`` is offered by name: the applier holds about 3 chunks.
CHUNK_SIZES = ("64K", "256K", "1M", "2M", "4M", "8M")


def parse_chunk_size(text: str) -> int:
    """One of :data:`CHUNK_SIZES` in bytes (``K`` is 2**10, ``M`` 2**20)."""
    if text not in CHUNK_SIZES:
        raise UsageError(f"chunk size {text!r} is not one of {', '.join(CHUNK_SIZES)}")
    return int(text[:-1]) << (10 if text.endswith("K") else 20)


def parse_load_address(text: str | None) -> int | None:
    """A raw payload's load address (decimal or 0x hex), a 32-bit address; None if not given.

    Why checked here: the predictor reads 32-bit pointers relative to it, so an address
    outside 32 bits is a slip that would silently make every prediction miss.
    """
    if text is None:
        return None
    try:
        value = int(text, 0)
    except ValueError:
        raise UsageError(f"--load-address: not an address: {text!r}") from None
    if not 0 <= value < 1 << 32:
        raise UsageError(f"--load-address: {text} is not a 32-bit address")
    return value


@contextlib.contextmanager
def mapped(path: str) -> Iterator[bytes | mmap.mmap]:
    """The whole file, memory-mapped (page cache, not heap); empty files as b"".

    Unmapped when the block ends, but not when an error (Ctrl-C included) leaves it:
    the library's frames in that error's traceback still hold views of the mapping, so
    closing it would raise BufferError in place of the error; the mapping goes when
    they do.
    """
    with open_input(path) as handle:
        if os.fstat(handle.fileno()).st_size == 0:
            yield b""
            return
        view = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
        yield view
        view.close()


@dataclass(frozen=True)
class Created:
    """What ``create_file`` wrote and decided."""

    meta: ImageMetadata
    stats: DeltaStats
    old_bytes: int
    new_bytes: int
    out_bytes: int

    @property
    def percent_of_new(self) -> float:
        return 100.0 * self.out_bytes / max(self.new_bytes, 1)

    def to_json(self) -> dict[str, Any]:
        base = self.meta.delta_base
        return {
            "version": self.meta.version,
            "base_sha256": base.value.hex() if base else None,
            "old_bytes": self.old_bytes,
            "new_bytes": self.new_bytes,
            "delta_bytes": self.out_bytes,
            "percent_of_new": round(self.percent_of_new, 3),
            "full_fallback": self.stats.full_fallback,
            "chunks": self.stats.chunks,
            "literal_chunks": self.stats.literal_chunks,
        }


def create_file(
    old_path: str,
    new_path: str,
    out_path: str,
    signers: Sequence[Signer],
    *,
    chunk_size: int,
    load_address: int | None = None,
    inputs: Iterable[str] = (),
) -> Created:
    """A signed delta from the image at ``old_path`` to the one at ``new_path``, to ``out_path``.

    ``-`` is stdin (for one of the images) or stdout; ``inputs`` are further files the
    output must not replace (the keys). Nothing is written unless every check of
    ``otaguard.delta.create`` passed.
    """
    with (
        mapped(old_path) as old,
        mapped(new_path) as new,
        output_file(out_path, inputs=[old_path, new_path, *inputs]) as dest,
    ):
        meta, stats = create(
            old, new, dest, signers, chunk_size=chunk_size, load_address=load_address
        )
        out_bytes = dest.seek(0, os.SEEK_END)  # the whole delta, wherever create left off
        return Created(meta, stats, len(old), len(new), out_bytes)


def applied_report(opened: OpenedDelta, out_path: str) -> dict[str, Any]:
    """What ``delta apply --json`` reports of a delta applied to ``out_path``."""
    return {
        "out": out_path,
        "version": opened.inner.version,
        "security_counter": opened.inner.security_counter,
        "bytes": opened.header.target_length,
        "chunks": opened.header.chunk_count,
        "base_sha256": opened.header.base_sha256.hex(),
        "signatures_verified": opened.authenticated,
    }


def apply_file(
    old_path: str,
    delta_path: str,
    out_path: str,
    trusted: TrustedKeys | None,
    *,
    inputs: Iterable[str] = (),
) -> OpenedDelta:
    """Rebuild the new image from the old one and a delta into ``out_path`` (or stdout).

    The delta is checked (with ``trusted``: its signatures and the new image's) and so
    is its base before anything is written; every chunk and the final digest are
    checked while writing, and the output appears only if all of them held.
    """
    with open_input(delta_path) as stream, open_input(old_path) as old:
        opened = open_delta(stream, trusted)
        old_length = os.fstat(old.fileno()).st_size

        def read_at(offset: int, n: int) -> bytes:
            return os.pread(old.fileno(), n, offset)

        image = reconstruct(opened, stream, old_length, read_at)  # base checked: no write yet
        with output_file(out_path, inputs=[old_path, delta_path, *inputs]) as dest:
            image.readall_into(dest)
    return opened
