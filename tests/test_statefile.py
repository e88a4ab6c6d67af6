"""``otaguard._statefile``: any bytes give a checked object or one StorageError."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from otaguard._statefile import MAX_DEPTH, load_state, parse_state
from otaguard.errors import StorageError

SCHEMA = {
    "type": "object",
    "required": ["n"],
    "properties": {"n": {"type": "integer", "minimum": 0}, "tags": {"type": "array"}},
}


def test_a_valid_document_is_returned() -> None:
    assert parse_state(b'{"n": 3, "tags": [[1]]}', SCHEMA, "f") == {"n": 3, "tags": [[1]]}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\xff{}", "f is not valid JSON"),
        (b'{"n": NaN}', "f is not valid JSON"),
        (b'{"n": -Infinity}', "f is not valid JSON"),
        (b"[]", r"f: bad value at \$: \[\] is not of type 'object'"),
        (b'{"n": -1}', r"f: bad value at \$\.n: -1 is less than the minimum of 0"),
        (b'{"n": 3.0}', r"f: bad value at \$\.n: 3\.0 is not of type 'integer'"),
        (b'{"n": 3e0}', r"f: bad value at \$\.n: 3\.0 is not of type 'integer'"),
        (b'{"n": true}', r"f: bad value at \$\.n: True is not of type 'integer'"),
        (b"{}", r"f: bad value at \$: 'n' is a required property"),
        (b"[" * 5000 + b"]" * 5000, "f is nested too deeply"),
        (b'{"n": 1, "tags": ' + b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1) + b"}", "deeply"),
    ],
)
def test_refusals_are_one_line_storage_errors(data: bytes, message: str) -> None:
    with pytest.raises(StorageError, match=message) as refused:
        parse_state(data, SCHEMA, "f")
    assert "\n" not in str(refused.value)


def test_a_long_offending_value_is_quoted_short() -> None:
    data = json.dumps({"n": "x" * 10_000}).encode()
    with pytest.raises(StorageError) as refused:
        parse_state(data, SCHEMA, "f")
    assert len(str(refused.value)) < 200 and str(refused.value).endswith("...")


def test_load_state_caps_the_size(tmp_path: Path) -> None:
    file = tmp_path / "state.json"
    file.write_bytes(b'{"n": 1}' + b" " * 100)
    assert load_state(file, SCHEMA, "state", limit=200) == {"n": 1}
    with pytest.raises(StorageError, match="larger than 50 bytes"):
        load_state(file, SCHEMA, "state", limit=50)
    with pytest.raises(StorageError, match="cannot read state"):
        load_state(tmp_path / "missing.json", SCHEMA, "state", limit=50)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300) | st.text(alphabet='[]{}":,0123456789n aeNI-.', max_size=300))
def test_any_input_is_an_object_or_a_storage_error(data: bytes | str) -> None:
    raw = data.encode() if isinstance(data, str) else data
    try:
        value = parse_state(raw, SCHEMA, "f")
    except StorageError as exc:
        assert "\n" not in str(exc)
    else:
        assert isinstance(value, dict) and isinstance(value["n"], int)
