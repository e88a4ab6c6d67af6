"""Test helpers: keys of every supported type (made once per session), in-memory signing.

RSA key generation is slow, so keys are cached per session; tests that need
distinct keys ask for ``fresh_key``.
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence

from otaguard.crypto.keys import KeyType, PrivateKey, generate_private_key
from otaguard.crypto.signer import KeySigner
from otaguard.image import ImagePolicy, TrustedKeys, sign_stream, verify_stream

ALL_KEY_TYPES = list(KeyType)
_CACHE: dict[tuple[KeyType, int], PrivateKey] = {}


def cached_key(key_type: KeyType, index: int = 0) -> PrivateKey:
    """The ``index``-th session key of ``key_type`` (distinct indexes, distinct keys)."""
    if (key_type, index) not in _CACHE:
        _CACHE[(key_type, index)] = generate_private_key(key_type)
    return _CACHE[(key_type, index)]


def make_image(
    payload: bytes,
    keys: Sequence[PrivateKey],
    *,
    version: str = "1.4.0",
    security_counter: int = 7,
    hardware_ids: Sequence[str] = ("acme-ecu-v2",),
    **extra: object,
) -> bytes:
    """Sign ``payload`` in memory with every key in ``keys``."""
    out = io.BytesIO()
    sign_stream(
        io.BytesIO(payload),
        out,
        [KeySigner(k) for k in keys],
        version=version,
        security_counter=security_counter,
        hardware_ids=hardware_ids,
        created=1_790_000_000,
        **extra,  # type: ignore[arg-type]
    )
    return out.getvalue()


def verify_bytes(
    image: bytes,
    keys: Sequence[PrivateKey],
    *,
    threshold: int = 1,
    policy: ImagePolicy | None = None,
) -> object:
    trusted = TrustedKeys.of(k.public_key() for k in keys)
    return verify_stream(
        io.BytesIO(image), trusted, threshold=threshold, policy=policy or ImagePolicy()
    )


class CliResult:
    """What one in-process ``otaguard`` run gave: exit code, stdout, stderr."""

    def __init__(self, code: int, out: str, err: str) -> None:
        self.code, self.out, self.err = code, out, err

    @property
    def json(self) -> dict:  # type: ignore[type-arg]
        return json.loads(self.out)  # type: ignore[no-any-return]


def assert_one_line(err: str) -> None:
    """An otaguard error: exactly one line on stderr, never a traceback."""
    assert err.count("\n") == 1 and err.startswith("otaguard: ") and "Traceback" not in err, err
