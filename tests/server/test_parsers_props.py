"""Property tests: hostile bytes in an upload, hostile headers in a check-in, never a crash."""

from __future__ import annotations

import datetime as dt

from hypothesis import given, settings
from hypothesis import strategies as st

from otaguard.server.errors import ApiError
from otaguard.server.nonces import NonceCache
from otaguard.server.services import checkin, release_checks

NOW = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
KEYS = {"snapshot": "a" * 64, "timestamp": "b" * 64}
JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


def _refused_only(action: object) -> None:
    try:
        action()  # type: ignore[operator]
    except ApiError as exc:
        assert exc.status == 422
        assert exc.error in {
            "malformed",
            "root-chain",
            "unsigned",
            "threshold",
            "inconsistent",
            "expired",
            "online-keys",
        }


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=300), min_size=1, max_size=3))
def test_garbage_roots_are_refused_as_such(roots: list[bytes]) -> None:
    _refused_only(
        lambda: release_checks.check_roots(
            roots, None, now=NOW, online_keyids=KEYS, published_root=lambda v: None
        )
    )


@settings(max_examples=200, deadline=None)
@given(JSONISH)
def test_json_that_is_not_metadata_is_refused_as_such(value: object) -> None:
    import json

    data = json.dumps({"signed": value, "signatures": []}).encode()
    _refused_only(
        lambda: release_checks.check_roots(
            [data], None, now=NOW, online_keyids=KEYS, published_root=lambda v: None
        )
    )


@given(st.text(max_size=200))
def test_if_none_match_parsing_never_fails(header: str) -> None:
    tag = '"' + "0" * 32 + '"'
    assert checkin.matches(header, tag) in (True, False)
    assert checkin.matches(f"W/{tag}, {header}", tag)


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["a", "b"]), st.sampled_from(["n1", "n2", "n3"]), st.integers(0, 2000)
        )
    )
)
def test_nonce_cache_refuses_every_reuse_within_the_window(
    uses: list[tuple[str, str, int]],
) -> None:
    cache = NonceCache(window=600)
    first: dict[tuple[str, str], int] = {}
    clock = 0
    for device, nonce, step in uses:
        clock += step % 50
        fresh = cache.first_use(device, nonce, clock)
        seen = first.get((device, nonce))
        if seen is not None and clock < seen + 600:
            assert not fresh
        if fresh:
            first[(device, nonce)] = clock
