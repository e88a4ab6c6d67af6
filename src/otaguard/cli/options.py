"""Option values several sub-commands read alike: numbers, the creation time, keys, chains.

No click and no library at import time: ``otaguard verify``'s fast path reads its
trusted keys through :func:`trusted_keys` without loading click, and the library
modules each helper needs are imported when it runs.
"""

from __future__ import annotations

import os
import time
from collections.abc import Hashable, Iterable, Sequence
from typing import TYPE_CHECKING

from otaguard.errors import UsageError

if TYPE_CHECKING:
    from otaguard.crypto.signer import Signer
    from otaguard.image.trust import TrustedKeys


def int_auto(value: str) -> int:
    """Parse decimal or 0x-prefixed hex, as imgtool accepts sizes."""
    try:
        return int(value, 0)
    except ValueError:
        raise UsageError(f"not an integer: {value!r}") from None


def created() -> int:
    """Creation time: SOURCE_DATE_EPOCH for reproducible builds, else now."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if epoch is not None:
        try:
            return int(epoch)
        except ValueError:
            raise UsageError("SOURCE_DATE_EPOCH is not an integer") from None
    return int(time.time())


def ensure_distinct_keys(key_ids: Iterable[Hashable], flag: str | None = None) -> None:
    """Refuse a key given twice (under two file names, or a file and a URI).

    Why: a threshold counts distinct keys, and a repeated key is always a slip
    that would otherwise pass silently. ``flag`` names the option in the message.
    """
    ids = list(key_ids)
    if len(set(ids)) != len(ids):
        where = f" as {flag}" if flag else ""
        raise UsageError(f"the same key was given twice{where}")


def trusted_keys(paths: Sequence[str], flag: str = "--trusted-key") -> TrustedKeys:
    """The public keys in ``paths`` as trust anchors; a file or a key given twice is refused."""
    from otaguard.cli.common import ensure_distinct
    from otaguard.crypto.keys import key_id_bytes
    from otaguard.crypto.loader import load_public_key_file
    from otaguard.image.trust import TrustedKeys

    ensure_distinct(list(paths))
    keys = [load_public_key_file(p) for p in paths]
    ensure_distinct_keys((key_id_bytes(k) for k in keys), flag)
    return TrustedKeys.of(keys)


def signer_chain(path: str | None, signers: Sequence[Signer]) -> list[bytes]:
    """The certificate chain in ``path`` (PEM, leaf first) to embed, as DER; [] without one.

    Its first certificate must be the (first) signing key's.
    """
    if path is None:
        return []
    from otaguard.pki.signer_chain import chain_for_signer
    from otaguard.pki.store import read_certs

    return chain_for_signer(read_certs(path, "certificate chain"), signers[0].public_key)
