"""MCUboot branch of the image commands (being written)."""

from __future__ import annotations

from typing import Any

from otaguard.errors import UsageError


def sign(signers: Any, opts: Any) -> None:
    raise UsageError("MCUboot signing is not available yet")


def verify(trusted: Any, opts: Any) -> dict[str, Any]:
    raise UsageError("MCUboot verification is not available yet")


def extract(trusted: Any, opts: Any, sink: Any) -> dict[str, Any]:
    raise UsageError("MCUboot extraction is not available yet")


def inspect(opts: Any) -> dict[str, Any]:
    raise UsageError("MCUboot inspection is not available yet")
