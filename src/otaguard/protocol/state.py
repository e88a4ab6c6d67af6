"""The device state report's hash: how the server and a device agree on "what I have installed".

The device POSTs its installed software (``/api/v1/device/state``) whenever it
changes and then checks in with ``?state=<hash>``; the server answers 409 if its
stored state has another hash, so a check-in never acts on stale knowledge of
the device. The hash is the SHA-256 of the report's canonical JSON: keys sorted,
no insignificant white space, UTF-8 (both sides compute it over the parsed JSON
value, so key order and spacing on the wire do not matter).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any


def canonical_json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode(
        "utf-8"
    )


def state_hash(report: Any) -> str:
    """Hex SHA-256 of the canonical JSON of a state report (the parsed body)."""
    return hashlib.sha256(canonical_json(report)).hexdigest()
