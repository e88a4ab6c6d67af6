"""JSON state files (device and CA state) read with a size cap, a depth cap and a schema.

Why: these files are ours, but they sit on disk where a careless edit, a
half-restored backup or an attacker with storage access can change them, and
every command that reads one must then fail with a one-line message naming the
file and the bad value, never a ``KeyError`` or a ``RecursionError`` from
deep in the code that used it. So every state file is checked, whole, before
any of it is used:

1. at most ``limit`` bytes (read once, with ``read_bounded``);
2. strict JSON: UTF-8, no ``NaN``/``Infinity``;
3. nested at most ``MAX_DEPTH`` levels (Python's JSON parser and ``repr``
   recurse: a 1 MiB file of brackets would otherwise end in ``RecursionError``);
4. valid against the file's JSON Schema (Draft 2020-12, ``jsonschema``), where
   an "integer" is a JSON number without a fraction or exponent (``3.0`` is not).

Checks that a schema cannot express (a serial number's range, a date) stay
with the code that owns the value, which names the entry it refuses.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from functools import cache
from typing import Any

from otaguard._files import read_bounded
from otaguard.errors import StorageError

#: Deeper than any state file we write (at most 4 levels), far below the parser's recursion.
MAX_DEPTH = 32
#: How much of a schema error message a one-line refusal quotes.
_QUOTE = 100


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _depth(value: object) -> int:
    """Nesting depth of a parsed JSON value, without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        deepest = max(deepest, level)
        if level > MAX_DEPTH:
            break
        if isinstance(item, dict):
            stack.extend((v, level + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, level + 1) for v in item)
    return deepest


def _is_integer(_checker: object, instance: object) -> bool:
    return isinstance(instance, int) and not isinstance(instance, bool)


@cache
def _validator(schema_json: str) -> Any:
    from jsonschema import Draft202012Validator, validators

    # JSON Schema counts 3.0 as an integer; the code reading our files needs an int.
    strict = validators.extend(  # type: ignore[no-untyped-call]  # untyped in the stubs
        Draft202012Validator,
        type_checker=Draft202012Validator.TYPE_CHECKER.redefine("integer", _is_integer),
    )
    schema = json.loads(schema_json)
    strict.check_schema(schema)
    return strict(schema)


def parse_state(data: bytes, schema: Mapping[str, Any], name: str) -> dict[str, Any]:
    """``data`` parsed and checked against ``schema``; StorageError naming ``name`` if not."""
    from jsonschema.exceptions import best_match

    try:
        value = json.loads(data.decode("utf-8"), parse_constant=_no_constants)
    except RecursionError:
        raise StorageError(f"{name} is nested too deeply to be a state file") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise StorageError(f"{name} is not valid JSON") from exc
    if _depth(value) > MAX_DEPTH:
        raise StorageError(f"{name} is nested too deeply to be a state file")
    error = best_match(_validator(json.dumps(schema, sort_keys=True)).iter_errors(value))
    if error is not None:
        message = error.message
        if len(message) > _QUOTE:
            message = message[:_QUOTE] + "..."
        raise StorageError(f"{name}: bad value at {error.json_path}: {message}")
    assert isinstance(value, dict), "every state schema demands an object"
    return value


def load_state(
    path: str | os.PathLike[str], schema: Mapping[str, Any], what: str, *, limit: int
) -> dict[str, Any]:
    """Read and check the state file ``path`` (see the module docstring)."""
    name = f"{what} {os.fspath(path)}"
    return parse_state(read_bounded(path, limit, what, too_large=StorageError), schema, name)
