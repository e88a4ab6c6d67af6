"""The device-API client's parsing of answers: any body is an answer or a transient failure."""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx
from hypothesis import given, settings
from hypothesis import strategies as st

from otaguard.agent.api import _update_answer, entity_tag
from otaguard.agent.config import Failure
from otaguard.agent.failures import TransientError
from otaguard.protocol.state import canonical_json

BASE = "http://server.example"
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)


def _answer(body: Any, etag: str | None = None) -> Any:
    headers = {"ETag": f'"{etag}"'} if etag else {}
    return _update_answer(body, httpx.Response(200, headers=headers), "ab" * 16, BASE)


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["etag", "director", "repository", "poll_interval_s", "x"]), json_values
    )
)
def test_any_check_in_body_is_an_answer_or_a_bad_response(body: dict[str, Any]) -> None:
    try:
        answer = _answer(body)
    except TransientError as exc:
        assert exc.failure is Failure.BAD_RESPONSE
        return
    assert answer.metadata_url.startswith(("http://", "https://"))
    assert answer.nonce == "ab" * 16


def test_relative_urls_resolve_against_the_server_and_others_are_refused() -> None:
    body = {
        "etag": "e1",
        "director": base64.b64encode(b"{}").decode(),
        "repository": {"metadata_url": "/repo/metadata", "targets_url": "https://cdn.example/t/"},
        "poll_interval_s": 30,
    }
    answer = _answer(body)
    assert answer.metadata_url == f"{BASE}/repo/metadata/"
    assert answer.targets_url == "https://cdn.example/t/"
    assert answer.poll_interval == 30 and answer.director == b"{}"
    for bad in ("file:///etc/passwd", "ftp://x/", ""):
        body["repository"] = {"metadata_url": bad, "targets_url": "/t/"}
        try:
            _answer(body)
        except TransientError:
            continue
        raise AssertionError(bad)
    del body["etag"]
    body["repository"] = {"metadata_url": "/m/", "targets_url": "/t/"}
    assert _answer(body, etag="from-header").etag == '"from-header"'  # the entity tag as sent


def test_canonical_json_is_sorted_compact_utf8() -> None:
    value = {"b": [1, {"é": None}], "a": "x"}
    assert canonical_json(value) == '{"a":"x","b":[1,{"é":null}]}'.encode()
    assert json.loads(canonical_json(value)) == value


def test_entity_tags_are_quoted_once() -> None:
    assert entity_tag("abc") == '"abc"'
    assert entity_tag('"abc"') == '"abc"'
    assert entity_tag('W/"abc"') == 'W/"abc"'
