"""Differential updates: a signed delta from one image to the next, applied with bounded memory.

``format`` is the container's wire format, ``engine`` creates it (suffix-array
matching + LZMA2), ``apply`` streams the new image out of it, and ``package``
wraps it in a signed envelope of kind DELTA. See ``docs/delta.md``.
"""

from __future__ import annotations

from otaguard.delta.apply import Reconstruction, check_base
from otaguard.delta.engine import DeltaStats
from otaguard.delta.package import OpenedDelta, create, open_delta, reconstruct

__all__ = [
    "DeltaStats",
    "OpenedDelta",
    "Reconstruction",
    "check_base",
    "create",
    "open_delta",
    "reconstruct",
]
