"""Helpers for MCUboot tests: in-memory signing and verification, imgtool on the command line."""

from __future__ import annotations

import io
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import rsa

from otaguard.crypto.keys import PrivateKey, private_key_pem
from otaguard.crypto.signer import KeySigner
from otaguard.image import ImagePolicy, TrustedKeys
from otaguard.image.mcuboot import (
    McubootSignOptions,
    VerifiedMcuboot,
    parse_version,
    sign_mcuboot,
    verify_mcuboot,
)

_RSA2048: list[PrivateKey] = []


def rsa2048() -> PrivateKey:
    """RSA-2048: not a type ``otaguard key generate`` offers, but MCUboot's most deployed."""
    if not _RSA2048:
        _RSA2048.append(rsa.generate_private_key(65537, 2048))
    return _RSA2048[0]


def sign_bytes(
    payload: bytes,
    keys: Sequence[PrivateKey],
    tmp: Path,
    *,
    version: str = "1.2.3+4",
    header_size: int = 0x200,
    **options: object,
) -> bytes:
    """MCUboot-sign ``payload`` (header room added, as --pad-header does)."""
    src = tmp / "in.bin"
    src.write_bytes(payload)
    out = io.BytesIO()
    opts = McubootSignOptions(
        version=parse_version(version),
        header_size=header_size,
        pad_header=True,
        **options,  # type: ignore[arg-type]
    )
    with src.open("rb") as handle:
        sign_mcuboot(handle, out, [KeySigner(k) for k in keys], opts)
    return out.getvalue()


def verify_image(
    image: bytes,
    keys: Sequence[PrivateKey],
    *,
    threshold: int = 1,
    policy: ImagePolicy | None = None,
    max_image_size: int | None = None,
) -> VerifiedMcuboot:
    trusted = TrustedKeys.of(k.public_key() for k in keys)
    return verify_mcuboot(
        io.BytesIO(image),
        trusted,
        threshold=threshold,
        policy=policy or ImagePolicy(),
        max_image_size=max_image_size,
    )


def imgtool() -> list[str]:
    exe = Path(sys.executable).with_name("imgtool")
    assert exe.exists() or shutil.which("imgtool"), "imgtool is a test dependency"
    return [str(exe) if exe.exists() else "imgtool"]


def run_imgtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*imgtool(), *map(str, args)], capture_output=True, text=True, check=False
    )


def write_key(key: PrivateKey, path: Path) -> Path:
    path.write_bytes(private_key_pem(key, None))
    return path
