"""What ``repo add-target`` records about an image: verified first, then described.

An image is only recorded if it verifies (an otaguard envelope or an MCUboot
image, by :func:`otaguard.image.verify_any`) against the release keys given;
the custom fields of its :class:`TargetFile` come from the *verified*
metadata, never from the command line. The one exception is what only the release
managers can say and their signature over the targets metadata covers: the versions the
image may replace (``compatible_with``, :mod:`otaguard.repo.compat`).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO

from tuf.api.metadata import TargetFile

from otaguard.crypto.keys import PublicKey
from otaguard.errors import StorageError, TruncatedError, UsageError

#: Largest image add-target accepts (a target must also fit a device slot).
MAX_IMAGE_SIZE = 4 * 1024**3
CHUNK = 1 << 20


def verified_custom(
    stream: BinaryIO, keys: Sequence[PublicKey], threshold: int = 1
) -> dict[str, Any]:
    """Verify the image in ``stream`` (seekable, at 0); return its custom fields."""
    from otaguard.image import ImagePolicy, TrustedKeys, verify_any

    if not keys:
        raise UsageError("give at least one --trusted-key: verifying against no key proves nothing")
    result = verify_any(stream, TrustedKeys.of(keys), threshold=threshold, policy=ImagePolicy())
    if result.format == "native":
        meta = result.metadata
        return {
            "format": "otaguard",
            "version": meta.version,
            "security_counter": meta.security_counter,
            "hardware_ids": list(meta.hardware_ids),
            "payload_kind": meta.payload_kind.name.lower(),
            "delta_base": str(meta.delta_base) if meta.delta_base else None,
        }
    image = result.image
    return {
        "format": "mcuboot",
        "version": str(image.header.version),
        "security_counter": image.security_counter,
        "hardware_ids": list(image.hardware_ids),
        "payload_kind": "full",
        "delta_base": None,
    }


def copy_capped(
    source: str | os.PathLike[str], directory: Path, limit: int
) -> tuple[Path, int, str]:
    """Copy ``source`` into a temporary file in ``directory``; return it, its length, sha256.

    Everything after this works on the private copy, so the image cannot change
    between verification and publication.
    """
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=".add-target.", suffix=".tmp", dir=directory)
    tmp = Path(tmp_name)
    digest = hashlib.sha256()
    length = 0
    try:
        with open(source, "rb") as src, os.fdopen(fd, "wb") as dst:
            while chunk := src.read(CHUNK):
                length += len(chunk)
                if length > limit:
                    raise UsageError(f"{source}: image is larger than {limit} bytes")
                digest.update(chunk)
                dst.write(chunk)
            dst.flush()
            os.fsync(dst.fileno())
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise StorageError(f"cannot copy {source}: {exc.strerror or exc}") from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if length == 0:
        tmp.unlink(missing_ok=True)
        raise TruncatedError(f"{source}: empty file")
    return tmp, length, digest.hexdigest()


def store_target(
    image: str | os.PathLike[str],
    name: str,
    targets_dir: Path,
    keys: Sequence[PublicKey],
    *,
    threshold: int = 1,
    max_size: int = MAX_IMAGE_SIZE,
    compatible_with: Sequence[str] = (),
) -> TargetFile:
    """Verify ``image``, store it as ``targets/<dir>/<sha256>.<base>`` and describe it."""
    from otaguard.repo.compat import FIELD, check_versions

    replaces = check_versions(compatible_with)
    tmp, length, sha256 = copy_capped(image, targets_dir, max_size)
    try:
        with open(tmp, "rb") as handle:
            custom = verified_custom(handle, keys, threshold)
        if replaces:
            custom[FIELD] = replaces
        directory, sep, base = name.rpartition("/")
        final = targets_dir / f"{directory}{sep}{sha256}.{base}"
        final.parent.mkdir(parents=True, exist_ok=True)
        if final.exists():
            tmp.unlink()
        else:
            os.chmod(tmp, 0o644)
            shutil.move(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return TargetFile(length, {"sha256": sha256}, name, unrecognized_fields={"custom": custom})
