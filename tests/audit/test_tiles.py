"""C2SP tlog-tiles: paths, bundles, partial tiles, and the hash source over tiles."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers_audit import ListSource, MemoryLog
from otaguard.audit.merkle import CompactRange, range_nodes, root_hash
from otaguard.audit.tiles import (
    TILE_WIDTH,
    TileAppender,
    TileHashSource,
    TilePath,
    encode_bundle,
    entries_path,
    parse_bundle,
    parse_tile_path,
    size_cap,
    tile_hashes,
    tile_path,
    tile_width,
)
from otaguard.errors import AuditTreeError


def test_index_encoding_of_the_spec() -> None:
    assert tile_path(0, 1234067) == "tile/0/x001/x234/067"
    assert tile_path(2, 0, 1) == "tile/2/000.p/1"
    assert entries_path(1000, 17) == "tile/entries/x001/000.p/17"
    assert parse_tile_path("tile/0/x001/x234/067") == TilePath(0, 1234067, 256)
    assert parse_tile_path("tile/entries/005.p/3") == TilePath(None, 5, 3)


@pytest.mark.parametrize(
    "path",
    [
        "tile/0/x000/001",  # leading zero group
        "tile/0/1",
        "tile/0/0001",
        "tile/0/001.p/256",
        "tile/0/001.p/0",
        "tile/0/001.p/05",
        "tile/64/000",
        "tile/01/000",
        "tile/0/x001",
        "tile/0/../000",
        "tile/foo/000",
        "checkpoint",
        "/tile/0/000",
        "tile/0/000/",
    ],
)
def test_non_canonical_paths_are_refused(path: str) -> None:
    with pytest.raises(ValueError):
        parse_tile_path(path)


@given(st.none() | st.integers(0, 63), st.integers(0, 2**56), st.integers(1, 256))
@settings(max_examples=300, deadline=None)
def test_paths_round_trip(level: int | None, index: int, width: int) -> None:
    path = TilePath(level, index, width)
    assert parse_tile_path(str(path)) == path
    assert size_cap(str(path)) >= width * 32


@given(st.text(alphabet="tilex/0123456789.pe", max_size=30))
@settings(max_examples=300, deadline=None)
def test_path_parser_fails_cleanly(text: str) -> None:
    try:
        parsed = parse_tile_path(text)
    except ValueError:
        return
    assert str(parsed) == text


def test_partial_tile_widths_of_the_spec_example() -> None:
    """A tree of 70,000: 273 full level-0 tiles and one of width 112; one full level-1
    tile and one of width 17; one level-2 tile of width 1."""
    size = 70_000
    assert [tile_width(size, 0, i) for i in (0, 272, 273, 274)] == [256, 256, 112, 0]
    assert [tile_width(size, 1, i) for i in (0, 1, 2)] == [256, 17, 0]
    assert [tile_width(size, 2, i) for i in (0, 1)] == [1, 0]
    assert tile_width(256, 0, 0) == 256 and tile_width(256, 1, 0) == 1


def test_appender_writes_exactly_the_tiles_of_the_spec_example() -> None:
    log = MemoryLog()
    appender = TileAppender(CompactRange.empty(), log.write)
    appender.append(b"%d" % i for i in range(70_000))
    tree = appender.flush()
    level0 = {p for p in log.files if p.startswith("tile/0/")}
    assert len(level0) == 274 and "tile/0/273.p/112" in level0
    assert {p for p in log.files if p.startswith("tile/1/")} == {"tile/1/000", "tile/1/001.p/17"}
    assert {p for p in log.files if p.startswith("tile/2/")} == {"tile/2/000.p/1"}
    assert "tile/entries/273.p/112" in log.files
    assert parse_bundle(log.files["tile/entries/001"])[0] == b"256"
    source = TileHashSource(log.read, tree.size)
    assert root_hash(source, tree.size) == tree.root()


@given(st.integers(1, 1500), st.integers(0, 1500))
@settings(max_examples=40, deadline=None)
def test_incremental_appends_give_the_same_tiles_as_one_export(first: int, more: int) -> None:
    raw = [b"entry %d" % i for i in range(first + more)]
    once = MemoryLog()
    appender = TileAppender(CompactRange.empty(), once.write)
    appender.append(raw)
    appender.flush()
    twice = MemoryLog()
    appender = TileAppender(CompactRange.empty(), twice.write)
    appender.append(raw[:first])
    tree = appender.flush()
    appender = TileAppender(tree, twice.write, twice.read)
    appender.append(raw[first:])
    appender.flush()
    latest = {p: d for p, d in twice.files.items() if p in once.files}
    assert latest == once.files
    reference = ListSource(raw)
    source = TileHashSource(twice.read, first + more)
    for level, index in range_nodes(0, first + more):
        assert source.node(level, index) == reference.node(level, index)


def test_appender_refuses_a_partial_bundle_that_does_not_match_its_tile() -> None:
    log = MemoryLog()
    appender = TileAppender(CompactRange.empty(), log.write)
    appender.append([b"a", b"b", b"c"])
    tree = appender.flush()
    log.files["tile/entries/000.p/3"] = encode_bundle([b"a", b"B", b"c"])
    with pytest.raises(AuditTreeError, match="entry 1"):
        TileAppender(tree, log.write, log.read)


@given(st.lists(st.binary(max_size=300), max_size=20))
@settings(max_examples=200, deadline=None)
def test_bundles_round_trip(entries: list[bytes]) -> None:
    assert parse_bundle(encode_bundle(entries)) == entries


@given(st.binary(max_size=200))
@settings(max_examples=300, deadline=None)
def test_bundle_parser_fails_cleanly(data: bytes) -> None:
    try:
        entries = parse_bundle(data)
    except AuditTreeError as exc:
        assert exc.index is not None
        return
    assert encode_bundle(entries) == data


def test_cut_bundles_name_the_entry_that_is_cut() -> None:
    data = encode_bundle([b"one", b"two", b"three"])
    with pytest.raises(AuditTreeError) as cut:
        parse_bundle(data[:-1])
    assert cut.value.index == 2
    with pytest.raises(AuditTreeError) as prefix:
        parse_bundle(data[:6])
    assert prefix.value.index == 1


def test_hash_source_refuses_incomplete_nodes_and_short_tiles() -> None:
    log = MemoryLog()
    appender = TileAppender(CompactRange.empty(), log.write)
    appender.append(b"%d" % i for i in range(300))
    appender.flush()
    source = TileHashSource(log.read, 300)
    with pytest.raises(ValueError, match="not complete"):
        source.node(0, 300)
    with pytest.raises(ValueError, match="not complete"):
        source.node(6, 4)  # leaves 256..319: only 44 of them exist
    log.files["tile/0/001.p/44"] = log.files["tile/0/001.p/44"][:-1]
    with pytest.raises(AuditTreeError, match="bytes"):
        TileHashSource(log.read, 300).node(0, 299)
    del log.files["tile/0/000"]
    with pytest.raises(AuditTreeError, match="missing"):
        TileHashSource(log.read, 300).node(0, 0)
    assert TILE_WIDTH == 256


def test_tile_hashes_of_an_append_are_what_the_appender_stores() -> None:
    log = MemoryLog()
    appender = TileAppender(CompactRange.empty(), log.write)
    leaves = [b"%d" % i for i in range(70_000)]
    appender.append(leaves[:65_600])
    tree = appender.flush()
    from otaguard.audit.merkle import leaf_hash

    _, nodes = tree.append(leaf_hash(x) for x in leaves[65_600:])
    stored = tile_hashes(nodes)
    assert stored[0] == (0, 65_600 // 256, 65_600 % 256, leaf_hash(leaves[65_600]))
    appender.append(leaves[65_600:])
    appender.flush()
    for level, index, offset, digest in stored:
        width = tile_width(70_000, level, index)
        tile = log.files[tile_path(level, index, width)]
        assert tile[offset * 32 : (offset + 1) * 32] == digest
