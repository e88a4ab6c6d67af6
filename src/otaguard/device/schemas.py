"""JSON Schemas of the files in a device directory (``device/store.py`` lists them).

Each file is checked against its schema on load (``otaguard._statefile``),
before any value in it is used. The schemas say what the code that reads the
file relies on -- types, ranges, the shape of hashes -- and leave unknown keys
alone. The constructors the values go to (``Geometry``, ``Otp``, ...) still
check what a schema cannot say (a sector size is a power of two).
"""

from __future__ import annotations

from typing import Any

_HASH = {"type": "string", "pattern": "^[0-9a-fA-F]{64}$"}
_COUNT = {"type": "integer", "minimum": 0}
_NAME = {"type": "string", "minLength": 1, "maxLength": 64}

DEVICE: dict[str, Any] = {
    "type": "object",
    "required": ["format", "geometry", "components", "trial_tries", "strict_counter"],
    "properties": {
        "format": {"const": 1},
        "geometry": {
            "type": "object",
            "required": [
                "name",
                "sector_size",
                "write_align",
                "erased",
                "program_size",
                "slot_size",
            ],
            "properties": {
                "name": {"type": "string"},
                "sector_size": _COUNT,
                "write_align": _COUNT,
                "erased": _COUNT,
                "program_size": _COUNT,
                "slot_size": _COUNT,
            },
        },
        "components": {
            "type": "array",
            "minItems": 1,
            "maxItems": 64,
            "items": {
                "type": "object",
                "required": ["name", "hardware_id"],
                "properties": {"name": _NAME, "hardware_id": _NAME},
            },
        },
        "trial_tries": _COUNT,
        "strict_counter": {"type": "boolean"},
        "region": {"type": ["string", "null"]},
        "counter_backend": {"enum": ["fuses", "rpmb"]},
    },
}

OTP: dict[str, Any] = {
    "type": "object",
    "required": ["anchors", "counters"],
    "properties": {
        "anchors": {"type": "array", "minItems": 1, "maxItems": 4, "items": _HASH},
        "epochs": {"type": "array", "maxItems": 4, "items": {"type": "integer", "minimum": 1}},
        "key_epoch": {"type": "integer", "minimum": 1},
        "counters": {
            "type": "object",
            "required": ["kind"],
            "properties": {
                "kind": {"enum": ["fuses", "rpmb"]},
                "fuses": {
                    "type": "object",
                    "additionalProperties": {"type": "string", "pattern": "^[01]{1,4096}$"},
                },
                "values": {"type": "object", "additionalProperties": _COUNT},
                "limit": _COUNT,
            },
            "allOf": [
                {
                    "if": {"properties": {"kind": {"const": "fuses"}}},
                    "then": {"required": ["fuses"]},
                },
                {
                    "if": {"properties": {"kind": {"const": "rpmb"}}},
                    "then": {"required": ["values"]},
                },
            ],
        },
    },
}

RUNNING: dict[str, Any] = {
    "type": "object",
    "required": ["slot", "image_ids", "trial"],
    "properties": {
        "slot": {"enum": ["a", "b"]},
        "image_ids": {"type": "array", "maxItems": 64, "items": _HASH},
        "trial": {"type": "boolean"},
    },
}

CRLS: dict[str, Any] = {
    "type": "object",
    "required": ["crls"],
    "properties": {
        "crls": {
            "type": "array",
            "items": {"type": "string", "pattern": "^[A-Za-z0-9+/]*={0,2}$"},
        },
    },
}
