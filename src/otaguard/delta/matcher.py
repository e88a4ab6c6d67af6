"""bsdiff matching of new chunks against the whole old image (one suffix array, built once)."""

from __future__ import annotations

import contextlib
import mmap
import os
import tempfile
from typing import Any

from otaguard.delta.runs import MAX_RUN_SEARCHES, RUN_WINDOW, periodic_pieces, periodic_runs

#: Old images up to this size keep their suffix array on the heap; larger ones in a file.
HEAP_LIMIT = 64 << 20


def _varint(data: bytes) -> int:
    """detools' size encoding: 6 bits + sign in the first byte, then 7 bits per byte."""
    byte = data[0]
    value = byte & 0x3F
    shift = 6
    i = 1
    while byte & 0x80:
        byte = data[i]
        value |= (byte & 0x7F) << shift
        shift += 7
        i += 1
    return -value if data[0] & 0x40 else value


def _detools_extension(name: str) -> Any:
    """One of detools' C extensions, loaded without running its package's ``__init__``.

    Why: that imports detools' whole Python side (elftools, humanfriendly, its
    compressors), ~50 ms of a ~250 ms ``delta create`` of a firmware image; only the
    suffix sort and the matcher are used here.
    """
    import importlib.machinery
    import importlib.util

    package = importlib.util.find_spec("detools")
    for folder in (package and package.submodule_search_locations) or ():
        for suffix in importlib.machinery.EXTENSION_SUFFIXES:
            path = os.path.join(folder, name + suffix)
            if os.path.isfile(path):
                loader = importlib.machinery.ExtensionFileLoader(f"detools.{name}", path)
                spec = importlib.util.spec_from_file_location(loader.name, path, loader=loader)
                if spec is not None:
                    module = importlib.util.module_from_spec(spec)
                    loader.exec_module(module)
                    return module
    return importlib.import_module(f"detools.{name}")  # pragma: no cover - unusual layouts


def _last(data: bytes | mmap.mmap, needle: bytes, start: int, end: int) -> int:
    """``data.rfind(needle, start, end)`` in linear time.

    Why: CPython's ``rfind`` has no worst-case guard, and a long periodic run looked for in a
    mostly periodic region (an ext4 image's zeroed blocks) made it quadratic: 8 s a call,
    131 s for one 13 MiB image. ``find`` switches to the two-way algorithm; it runs here on
    the reversed window, whose first hit is the window's last.
    """
    end = min(end, len(data))
    if end - start < len(needle):
        return -1
    window = bytes(data[start:end])[::-1]
    at = window.find(needle[::-1])
    return -1 if at < 0 else end - len(needle) - at


class Matcher:
    """The whole old image and its suffix array, built once."""

    def __init__(self, old: bytes | mmap.mmap) -> None:
        self._bsdiff = _detools_extension("bsdiff")
        divsufsort = _detools_extension("suffix_array").divsufsort
        self.old = old
        # unit -> (where runs of it were found, shortest length not found)
        self._run_cache: dict[bytes, tuple[list[int], int]] = {}
        self._searches = 0
        self._stack = contextlib.ExitStack()
        size = 4 * (len(old) + 1)
        if len(old) > HEAP_LIMIT:
            backing = self._stack.enter_context(tempfile.TemporaryFile())  # noqa: SIM115
            backing.truncate(size)
            self.sa: bytearray | mmap.mmap = self._stack.enter_context(
                mmap.mmap(backing.fileno(), size)
            )
        else:  # anonymous pages, zeroed by the kernel as divsufsort touches them (no memset)
            self.sa = self._stack.enter_context(mmap.mmap(-1, size))
        if old:
            divsufsort(old, self.sa)

    def close(self) -> None:
        self._stack.close()

    def _segment(self, new: bytes) -> list[tuple[bytes, bytes, int]]:
        if not self.old or not new:
            return [(b"", new, 0)]
        parts = self._bsdiff.create_patch(self.sa, self.old, new, bytearray(len(new) + 1))
        out = []
        for i in range(0, len(parts) - 4, 5):
            out.append((bytes(parts[i + 1]), bytes(parts[i + 3]), _varint(parts[i + 4])))
        if sum(len(d) + len(e) for d, e, _ in out) != len(new):  # pragma: no cover
            raise RuntimeError("detools produced a patch that does not cover the chunk")
        return out

    def _find_run(self, run: bytes, near: int) -> int | None:
        """Where the old image holds ``run``: at ``near``, else the closest within
        ``RUN_WINDOW`` (two small seeks instead of two large ones), else anywhere."""
        old = self.old
        n = len(run)
        if old[near : near + n] == run:
            return near
        after = old.find(run, near, near + RUN_WINDOW + n)
        before = _last(old, run, max(0, near - RUN_WINDOW), near + n - 1)
        close = [at for at in (after, before) if at >= 0]
        if close:
            return min(close, key=lambda at: abs(at - near))
        key = run[:8]  # a periodic run: its first bytes name its unit (and phase)
        found, missing = self._run_cache.get(key, ([], 0))
        for at in found:
            if old[at : at + n] == run:
                return at
        if missing and n >= missing:
            return None  # a run like it, no longer, was not in the old image
        if self._searches >= MAX_RUN_SEARCHES:  # each search scans the old image
            return None
        self._searches += 1
        at = old.find(run)
        if at >= 0:
            self._run_cache[key] = ([*found, at], missing)
            return at
        self._run_cache[key] = (found, min(missing, n) if missing else n)
        return None

    def triples(self, new: bytes, start: int = 0) -> list[tuple[bytes, bytes, int]]:
        """(diff bytes, extra bytes, seek) per bsdiff step; old position starts at 0.

        bsdiff's approximate matching is quadratic on long periodic runs (an ext4 image's
        zeroed blocks, erased flash): 7 s for 256 KiB of zeros. Such runs are cut out and
        sent as extra bytes, which LZMA2 shrinks to almost nothing; the rest is matched.
        """
        steps: list[tuple[int, bytes, bytes]] = []  # (absolute old start, diff, extra)
        pos = 0
        for begin, end in [*periodic_runs(new), (len(new), len(new))]:
            relative = 0
            for diff, extra, seek in self._segment(new[pos:begin]) if begin > pos else []:
                # bsdiff puts a step that reads nothing (an unmatched piece) at old 0: keep
                # it where the old position stands, so that what follows seeks from there
                here = steps[-1][0] + len(steps[-1][1]) if steps else start
                steps.append((relative if diff else here, diff, extra))
                relative += len(diff) + seek
            if end > begin:
                old_pos = steps[-1][0] + len(steps[-1][1]) if steps else start
                run = new[begin:end]
                for piece in periodic_pieces(run):
                    found = self._find_run(piece, old_pos)
                    if found is None:
                        steps.append((old_pos, b"", piece))
                    else:  # the old image has the run too: an all-zero diff, a few bytes coded
                        steps.append((found, bytes(len(piece)), b""))
                    old_pos = steps[-1][0] + len(steps[-1][1])
            pos = end
        if steps and steps[0][0]:
            steps.insert(0, (0, b"", b""))
        out = []
        for i, (old_start, diff, extra) in enumerate(steps):
            following = steps[i + 1][0] if i + 1 < len(steps) else old_start + len(diff)
            out.append((diff, extra, following - old_start - len(diff)))
        return out
