"""``delta/files.py``'s option values: chunk sizes and the 32-bit load address."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from otaguard.delta.files import CHUNK_SIZES, parse_chunk_size, parse_load_address
from otaguard.errors import UsageError


def test_chunk_sizes_in_bytes() -> None:
    sizes = [parse_chunk_size(name) for name in CHUNK_SIZES]
    assert sizes == [64 << 10, 256 << 10, 1 << 20, 2 << 20, 4 << 20, 8 << 20]


@pytest.mark.parametrize("bad", ["3M", "4m", "4", "16M", ""])
def test_other_chunk_sizes_are_refused(bad: str) -> None:
    with pytest.raises(UsageError, match="chunk size"):
        parse_chunk_size(bad)


@given(st.integers(0, (1 << 32) - 1))
def test_any_32_bit_address_in_decimal_or_hex(value: int) -> None:
    assert parse_load_address(str(value)) == value
    assert parse_load_address(hex(value)) == value


@given(st.one_of(st.integers(max_value=-1), st.integers(min_value=1 << 32)))
def test_addresses_outside_32_bits_are_refused(value: int) -> None:
    with pytest.raises(UsageError, match="not a 32-bit address"):
        parse_load_address(hex(value))


@pytest.mark.parametrize("bad", ["0x", "eight", "1.5", "0x1g"])
def test_what_is_no_number_is_refused(bad: str) -> None:
    with pytest.raises(UsageError, match="not an address"):
        parse_load_address(bad)


def test_no_address_is_none() -> None:
    assert parse_load_address(None) is None
