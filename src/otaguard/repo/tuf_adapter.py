"""The one place otaguard uses python-tuf's private API: ``TrustedMetadataSet``.

Why a private class: python-tuf's public client, ``tuf.ngclient.Updater``, does
its own network and file I/O and reads the clock. otaguard needs the
verification alone (bytes in, verdict out, the reference time passed in), for
``otaguard tuf-client`` and for the device agent, whose fetcher and storage
are its own. That part of python-tuf is ``TrustedMetadataSet`` in
``tuf.ngclient._internal``, which python-tuf may change in any release.

So: tuf is pinned to an exact version in pyproject.toml, nothing else imports
``tuf.ngclient._internal``, and ``tests/repo/test_private_apis.py`` checks
that every method listed in :data:`USED_API` exists with these parameters
(and that ``reference_time`` still decides expiry): an upgrade that changes
them fails there, loudly, instead of in a client in the field.
"""

from __future__ import annotations

import datetime

from tuf.ngclient._internal.trusted_metadata_set import TrustedMetadataSet
from tuf.ngclient.config import EnvelopeType

__all__ = ["USED_API", "USED_PROPERTIES", "TrustedMetadataSet", "trusted_set"]

#: Every method of TrustedMetadataSet that otaguard calls, with its parameter names.
USED_API: dict[str, tuple[str, ...]] = {
    "__init__": ("self", "root_data", "envelope_type"),
    "update_root": ("self", "data"),
    "update_timestamp": ("self", "data"),
    "update_snapshot": ("self", "data", "trusted"),
    "update_delegated_targets": ("self", "data", "role_name", "delegator_name"),
    "contains": ("self", "role", "delegator"),
    "__getitem__": ("self", "role"),
    "__contains__": ("self", "key"),
}
#: Properties otaguard reads.
USED_PROPERTIES = ("root", "timestamp", "snapshot")


def trusted_set(root_bytes: bytes, now: datetime.datetime) -> TrustedMetadataSet:
    """A set trusting ``root_bytes`` (verified by itself), judging expiry at ``now``."""
    trusted = TrustedMetadataSet(root_bytes, EnvelopeType.METADATA)
    trusted.reference_time = now
    return trusted
