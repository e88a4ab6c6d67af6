"""Which installed versions a release may replace, as its release managers declare it.

UNECE R156 asks that an update be installed only over a *software configuration* it was
validated against. The declaration belongs to the release, not to whoever schedules it:
``repo add-target --compatible-with 1.4.0 --compatible-with 1.4.1`` records the versions
in the target's custom field :data:`FIELD`, inside the targets metadata the release
managers sign offline. So:

* the fleet server takes a campaign's compatible versions from there (an operator may
  narrow them, never widen them);
* the vehicle checks them again before it downloads anything (``agent``: an
  ``incompatible`` outcome, never retried), so a server that offers the release to the
  wrong configuration, by mistake or compromised, installs nothing.

A target without the field declares nothing: the vehicle's own check has nothing to refuse,
and a campaign must then name the versions itself.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from tuf.api.metadata import TargetFile

from otaguard.errors import MalformedError, UsageError

FIELD = "compatible_with"
MAX_VERSIONS = 256
#: the version strings an image carries (semantic versions, MCUboot's ``1.2.3+4``)
VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:+~-]{0,63}$")


def check_versions(values: Iterable[str]) -> list[str]:
    """The declared versions, sorted and once each; a bad one is a usage error."""
    out = set()
    for value in values:
        if not VERSION_RE.match(value):
            raise UsageError(f"--compatible-with {value[:70]!r}: not a version")
        out.add(value)
    if len(out) > MAX_VERSIONS:
        raise UsageError(f"--compatible-with: at most {MAX_VERSIONS} versions")
    return sorted(out)


def declared(target: TargetFile) -> frozenset[str] | None:
    """The versions ``target`` may replace; None when it declares none.

    Fails closed: a field that is there but is not a list of versions is malformed, never
    read as "no declaration".
    """
    value = target.unrecognized_fields.get("custom", {})
    if not isinstance(value, dict) or FIELD not in value:
        return None
    versions = value[FIELD]
    if (
        not isinstance(versions, list)
        or not versions
        or len(versions) > MAX_VERSIONS
        or not all(isinstance(v, str) and VERSION_RE.match(v) for v in versions)
    ):
        raise MalformedError(f"{target.path[:200]}: {FIELD} is not a list of versions")
    return frozenset(versions)


def refusal(target: TargetFile, installed: str | None) -> str | None:
    """Why ``target`` may not replace ``installed`` (None: it may)."""
    allowed = declared(target)
    if allowed is None or (installed is not None and installed in allowed):
        return None
    shown = ", ".join(sorted(allowed)[:5]) + (", ..." if len(allowed) > 5 else "")
    return f"{target.path} may replace {shown}, not {installed or 'no image'}"


__all__ = ["FIELD", "MAX_VERSIONS", "check_versions", "declared", "refusal"]
