"""``parse_annotations``: what a signed image's KEY=VALUE annotations may be."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from otaguard.errors import UsageError
from otaguard.image.envelope_sign import parse_annotations


def test_pairs_are_sorted_and_a_value_may_hold_equals_signs() -> None:
    assert parse_annotations(["b=2", "a=x=y", "c="]) == [("a", "x=y"), ("b", "2"), ("c", "")]


@pytest.mark.parametrize("bad", ["novalue", "=value", ""])
def test_a_pair_without_a_key_is_refused(bad: str) -> None:
    with pytest.raises(UsageError, match="KEY=VALUE"):
        parse_annotations([bad])


def test_a_key_given_twice_is_refused_even_with_the_same_value() -> None:
    with pytest.raises(UsageError, match="'a' given twice"):
        parse_annotations(["a=1", "b=2", "a=1"])


@given(st.dictionaries(st.text(min_size=1).filter(lambda k: "=" not in k), st.text()))
def test_distinct_keys_round_trip(pairs: dict[str, str]) -> None:
    assert parse_annotations([f"{k}={v}" for k, v in pairs.items()]) == sorted(pairs.items())
