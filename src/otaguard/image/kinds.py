"""Payload kinds, apart from the envelope format (policy and MCUboot need not load it)."""

from __future__ import annotations

import enum


class PayloadKind(enum.IntEnum):
    """What an image's payload is; values are stable on disk."""

    FULL = 0
    DELTA = 1
