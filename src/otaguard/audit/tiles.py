"""C2SP tlog-tiles: the log as static files any web server or CDN can serve.

Layout (c2sp.org/tlog-tiles, "APIs")::

    checkpoint                      the signed tree head (tlog-checkpoint)
    tile/<L>/<N>[.p/<W>]            hash tile: up to 256 hashes of level-8L subtrees
    tile/entries/<N>[.p/<W>]        entry bundle: up to 256 entries, uint16-length-prefixed

``<N>`` is written in zero-padded groups of three digits, all but the last with
an ``x`` (1234067 -> ``x001/x234/067``). A full tile has 256 hashes (8,192
bytes); the rightmost tiles of a tree are *partial* (``.p/<W>``, 1 <= W <= 255),
with W = floor(size / 256**L) mod 256 ("Partial Tiles"). The hash at position
``i`` of tile ``(L, N)`` is the node ``(8L, 256N + i)`` of RFC 9162's tree.

Why here: the verifier and the proof generator read hashes through
:class:`TileHashSource`, which turns any ``read(path) -> bytes`` (a directory, a
URL, a database) into the :class:`~otaguard.audit.merkle.HashSource` of
:mod:`merkle`; :class:`TileAppender` writes the same layout incrementally, for a
static export and for the file-backed local log alike. Readers raise
``FileNotFoundError`` for an absent resource; every read is capped by
:func:`size_cap`, derived from the path alone.
"""

from __future__ import annotations

import os
import re
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from otaguard._atomic import write_atomic
from otaguard.audit.entry import MAX_ENTRY_SIZE
from otaguard.audit.merkle import HASH_SIZE, CompactRange, Node, leaf_hash, node_hash
from otaguard.errors import AuditCheckpointError, AuditTreeError, StorageError

TILE_HEIGHT = 8
TILE_WIDTH = 1 << TILE_HEIGHT
TILE_BYTES = TILE_WIDTH * HASH_SIZE
MAX_LEVEL = 63
CHECKPOINT = "checkpoint"
MAX_CHECKPOINT_SIZE = 1 << 20
MAX_BUNDLE_SIZE = TILE_WIDTH * (2 + MAX_ENTRY_SIZE)

#: ``read(path)``: the bytes at a log-relative path; ``FileNotFoundError`` if absent.
LogReader = Callable[[str], bytes]
#: ``write(path, data)``: store the bytes at a log-relative path (atomically).
LogWriter = Callable[[str, bytes], None]

_PATH = re.compile(
    r"tile/(0|[1-9][0-9]?|entries)/((?:x[0-9]{3}/)*[0-9]{3})(?:\.p/([1-9][0-9]{0,2}))?"
)


@dataclass(frozen=True)
class TilePath:
    """A parsed tile path: ``level`` None for an entry bundle; ``width`` 256 when full."""

    level: int | None
    index: int
    width: int

    def __str__(self) -> str:
        if self.level is None:
            return entries_path(self.index, self.width)
        return tile_path(self.level, self.index, self.width)


def _encode_index(index: int) -> str:
    if index < 0:
        raise ValueError("tile index must be non-negative")
    groups = [f"{index % 1000:03d}"]
    index //= 1000
    while index:
        groups.append(f"x{index % 1000:03d}")
        index //= 1000
    return "/".join(reversed(groups))


def _suffix(width: int) -> str:
    if not 1 <= width <= TILE_WIDTH:
        raise ValueError(f"tile width {width} out of range")
    return "" if width == TILE_WIDTH else f".p/{width}"


def tile_path(level: int, index: int, width: int = TILE_WIDTH) -> str:
    if not 0 <= level <= MAX_LEVEL:
        raise ValueError(f"tile level {level} out of range")
    return f"tile/{level}/{_encode_index(index)}{_suffix(width)}"


def entries_path(index: int, width: int = TILE_WIDTH) -> str:
    return f"tile/entries/{_encode_index(index)}{_suffix(width)}"


def parse_tile_path(path: str) -> TilePath:
    """Strict: only the canonical spelling of a tile or bundle path is accepted."""
    match = _PATH.fullmatch(path)
    if match is None:
        raise ValueError(f"not a tile path: {path!r}")
    level_text, index_text, width_text = match.groups()
    level = None if level_text == "entries" else int(level_text)
    index = int(index_text.replace("x", "").replace("/", ""))
    width = int(width_text) if width_text else TILE_WIDTH
    if (width > TILE_WIDTH - 1 and width_text) or (level is not None and level > MAX_LEVEL):
        raise ValueError(f"not a tile path: {path!r}")
    parsed = TilePath(level, index, width)
    if str(parsed) != path:  # e.g. a leading x000 group
        raise ValueError(f"not a canonical tile path: {path!r}")
    return parsed


def size_cap(path: str) -> int:
    """The most bytes a reader may accept at ``path`` (a hostile server gets no more)."""
    if path == CHECKPOINT:
        return MAX_CHECKPOINT_SIZE
    parsed = parse_tile_path(path)
    if parsed.level is None:
        return parsed.width * (2 + MAX_ENTRY_SIZE)
    return parsed.width * HASH_SIZE


def tile_hashes(nodes: Iterable[Node]) -> list[tuple[int, int, int, bytes]]:
    """What a tiles layout stores of freshly appended nodes (``CompactRange.append``):
    ``(tile level, tile index, position in the tile, hash)`` for each level-8L node."""
    stored = []
    for node in nodes:
        level, rest = divmod(node.level, TILE_HEIGHT)
        if not rest:
            index, offset = divmod(node.index, TILE_WIDTH)
            stored.append((level, index, offset, node.hash))
    return stored


def tile_width(size: int, level: int, index: int) -> int:
    """How many hashes tile ``(level, index)`` holds in a tree of ``size`` (0: none)."""
    count = size >> (TILE_HEIGHT * level)
    full = count >> TILE_HEIGHT
    if index < full:
        return TILE_WIDTH
    return count % TILE_WIDTH if index == full else 0


def encode_bundle(entries: Iterable[bytes]) -> bytes:
    out = bytearray()
    for entry in entries:
        if len(entry) > MAX_ENTRY_SIZE:
            raise ValueError("an entry is at most 65535 bytes")
        out += len(entry).to_bytes(2, "big") + entry
    return bytes(out)


def parse_bundle(data: bytes) -> list[bytes]:
    """The entries of a bundle; structure only (the caller checks the count).

    Raises :class:`AuditTreeError` with ``index`` set to the position *within the
    bundle* of an entry whose length prefix or bytes are cut short.
    """
    entries: list[bytes] = []
    view = memoryview(data)
    offset = 0
    while offset < len(view):
        if offset + 2 > len(view):
            raise AuditTreeError("entry bundle ends inside a length prefix", index=len(entries))
        length = int.from_bytes(view[offset : offset + 2], "big")
        offset += 2
        if offset + length > len(view):
            raise AuditTreeError("entry bundle ends inside an entry", index=len(entries))
        entries.append(bytes(view[offset : offset + length]))
        offset += length
    return entries


def read_tile(read: LogReader, level: int, index: int, width: int) -> bytes:
    path = tile_path(level, index, width)
    try:
        data = read(path)
    except FileNotFoundError:
        raise AuditTreeError(
            f"hash tile {path} is missing", index=index << (TILE_HEIGHT * (level + 1))
        ) from None
    if len(data) != width * HASH_SIZE:
        raise AuditTreeError(
            f"hash tile {path} holds {len(data)} bytes, not {width * HASH_SIZE}",
            index=index << (TILE_HEIGHT * (level + 1)),
        )
    return data


class TileHashSource:
    """Complete-subtree hashes of a tree of ``size`` leaves, read from its hash tiles.

    Node ``(8L + r, i)`` is folded from 2**r consecutive hashes of one tile at
    level L, so each node costs one tile read (cached: proofs revisit tiles).
    """

    def __init__(self, read: LogReader, size: int, *, cache_tiles: int = 64) -> None:
        self._read = read
        self.size = size
        self._cache: OrderedDict[tuple[int, int], bytes] = OrderedDict()
        self._cache_tiles = cache_tiles

    def _tile(self, level: int, index: int) -> bytes:
        key = (level, index)
        data = self._cache.get(key)
        if data is None:
            width = tile_width(self.size, level, index)
            data = read_tile(self._read, level, index, width)
            self._cache[key] = data
            if len(self._cache) > self._cache_tiles:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(key)
        return data

    def node(self, level: int, index: int) -> bytes:
        tile_level, height = divmod(level, TILE_HEIGHT)
        first = index << height
        count = 1 << height
        tile_index, offset = divmod(first, TILE_WIDTH)
        if offset + count > tile_width(self.size, tile_level, tile_index):
            raise ValueError(f"node ({level}, {index}) is not complete in a tree of {self.size}")
        data = self._tile(tile_level, tile_index)
        hashes = [data[i * HASH_SIZE : (i + 1) * HASH_SIZE] for i in range(offset, offset + count)]
        while len(hashes) > 1:
            hashes = [node_hash(hashes[i], hashes[i + 1]) for i in range(0, len(hashes), 2)]
        return hashes[0]


class TileAppender:
    """Appends entries to a tiles layout: full tiles are written as they fill,
    :meth:`flush` writes the partial ones of the current size.

    Started from a tree of size n > 0, it loads that tree's partial bundle and
    tiles through ``read`` and checks the bundle's entries against the level-0
    tile; the caller must have checked ``tree`` against a signed checkpoint (its
    hashes cover every partial tile).
    """

    def __init__(self, tree: CompactRange, write: LogWriter, read: LogReader | None = None):
        self.tree = tree
        self._write = write
        self._bundle: list[bytes] = []
        self._tiles: list[bytearray] = []
        size = tree.size
        level = 0
        while size >> (TILE_HEIGHT * level):
            width = (size >> (TILE_HEIGHT * level)) % TILE_WIDTH
            index = size >> (TILE_HEIGHT * (level + 1))
            if width and read is None:
                raise ValueError("appending to a non-empty tree needs a reader")
            tile = read_tile(read, level, index, width) if width and read else b""
            self._tiles.append(bytearray(tile))
            level += 1
        if size % TILE_WIDTH and read is not None:
            self._load_bundle(read, size)

    def _load_bundle(self, read: LogReader, size: int) -> None:
        width = size % TILE_WIDTH
        path = entries_path(size // TILE_WIDTH, width)
        try:
            entries = parse_bundle(read(path))
        except FileNotFoundError:
            raise AuditTreeError(f"entry bundle {path} is missing", index=size - width) from None
        if len(entries) != width:
            raise AuditTreeError(f"entry bundle {path} holds {len(entries)} entries")
        level0 = self._tiles[0]
        for i, entry in enumerate(entries):
            if leaf_hash(entry) != level0[i * HASH_SIZE : (i + 1) * HASH_SIZE]:
                raise AuditTreeError(
                    f"entry {size - width + i} does not match its leaf hash",
                    index=size - width + i,
                )
        self._bundle = entries

    def append(self, entries: Iterable[bytes]) -> None:
        for entry in entries:
            if len(entry) > MAX_ENTRY_SIZE:
                raise ValueError("an entry is at most 65535 bytes")
            self._bundle.append(entry)
            self.tree, nodes = self.tree.append([leaf_hash(entry)])
            for node in nodes:
                level, rest = divmod(node.level, TILE_HEIGHT)
                if rest:
                    continue
                if level == len(self._tiles):
                    self._tiles.append(bytearray())
                tile = self._tiles[level]
                tile += node.hash
                if len(tile) == TILE_BYTES:
                    self._write(tile_path(level, node.index // TILE_WIDTH), bytes(tile))
                    tile.clear()
            if len(self._bundle) == TILE_WIDTH:
                index = (self.tree.size - 1) // TILE_WIDTH
                self._write(entries_path(index), encode_bundle(self._bundle))
                self._bundle.clear()

    def flush(self) -> CompactRange:
        """Write the partial bundle and tiles of the current size; the tree written."""
        size = self.tree.size
        if self._bundle:
            path = entries_path(size // TILE_WIDTH, len(self._bundle))
            self._write(path, encode_bundle(self._bundle))
        for level, tile in enumerate(self._tiles):
            if tile:
                index = size >> (TILE_HEIGHT * (level + 1))
                self._write(tile_path(level, index, len(tile) // HASH_SIZE), bytes(tile))
        return self.tree


class DirectoryReader:
    """A :data:`LogReader` over a directory (a local log or a copied export)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def __call__(self, path: str) -> bytes:
        cap = size_cap(path)  # also refuses anything but a checkpoint or tile path
        full = self.root / path
        try:
            with open(full, "rb") as handle:
                data = handle.read(cap + 1)
        except FileNotFoundError:
            raise
        except OSError as exc:
            raise StorageError(f"cannot read {full}: {exc.strerror or exc}") from exc
        if len(data) > cap:
            error = AuditCheckpointError if path == CHECKPOINT else AuditTreeError
            raise error(f"{path} is larger than {cap} bytes")
        return data


class DirectoryWriter:
    """A :data:`LogWriter` into a directory; :meth:`sync` makes the new names durable.

    Each file is written atomically (``otaguard._atomic``); the directories that got
    new names are fsynced by :meth:`sync` before a checkpoint is published over them.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self._dirs: set[Path] = set()

    def __call__(self, path: str, data: bytes) -> None:
        if path != CHECKPOINT:
            parse_tile_path(path)
        full = self.root / path
        try:
            full.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot create {full.parent}: {exc.strerror or exc}") from exc
        write_atomic(full, data)
        directory = full.parent
        while directory not in self._dirs:  # and every parent: a new directory is a new name
            self._dirs.add(directory)
            if directory == self.root:
                break
            directory = directory.parent

    def sync(self) -> None:
        for directory in sorted(self._dirs, key=lambda p: len(p.parts), reverse=True):
            fsync_directory(directory)
        self._dirs.clear()


def fsync_directory(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        raise StorageError(f"cannot sync {directory}: {exc.strerror or exc}") from exc
