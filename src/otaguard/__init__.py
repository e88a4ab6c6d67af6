"""otaguard: secure over-the-air updates for device fleets.

The package top stays import-light on purpose: the CLI is started once per
verification on small devices and in CI, and start-up time is part of what the
benchmarks measure. Import the layers you need (``otaguard.crypto``,
``otaguard.image``) directly.
"""

from __future__ import annotations

__version__ = "0.1.0"
