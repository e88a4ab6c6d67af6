"""PKI test helpers: a root -> EU intermediate -> signer hierarchy with fixed times."""

from __future__ import annotations

import datetime as dt
import io
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from helpers import cached_key
from otaguard.crypto.keys import KeyType
from otaguard.crypto.signer import KeySigner, Signer
from otaguard.image import sign_stream
from otaguard.pki.constraints import CODE_SIGNING, Constraints
from otaguard.pki.issue import Issuer, build_intermediate, build_root, build_signer, parse_subject

NOW = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
DAY = dt.timedelta(days=1)
HW = "acme-ecu-v2"


def _signer(kind: KeyType, index: int) -> KeySigner:
    return KeySigner(cached_key(kind, index))


@dataclass
class Pki:
    root: Issuer
    inter: Issuer
    leaf: Issuer


def make_pki(
    *,
    leaf_from: dt.datetime = NOW - 10 * DAY,
    leaf_days: int = 90,
    regions: frozenset[str] | None = frozenset({"eu"}),
    root_index: int = 10,
) -> Pki:
    root_signer = _signer(KeyType.ECDSA_P384, root_index)
    root = Issuer(
        build_root(
            root_signer,
            parse_subject("CN=Test Root"),
            not_before=NOW - 400 * DAY,
            not_after=NOW + 3650 * DAY,
        ),
        root_signer,
    )
    inter_signer = _signer(KeyType.ECDSA_P256, root_index)
    inter = Issuer(
        build_intermediate(
            root,
            inter_signer.public_key,
            parse_subject("CN=Test EU CA"),
            Constraints(CODE_SIGNING, regions, frozenset({HW})),
            not_before=NOW - 300 * DAY,
            not_after=NOW + 1000 * DAY,
        ),
        inter_signer,
    )
    leaf_signer = _signer(KeyType.ED25519, root_index)
    leaf = Issuer(
        build_signer(
            inter,
            leaf_signer.public_key,
            "release-1",
            not_before=leaf_from,
            not_after=leaf_from + leaf_days * DAY,
        ),
        leaf_signer,
    )
    return Pki(root, inter, leaf)


def der(*certs: x509.Certificate) -> list[bytes]:
    return [c.public_bytes(Encoding.DER) for c in certs]


def sign_image(
    signer: Signer,
    chain: list[bytes],
    *,
    created: dt.datetime = NOW,
    hardware_ids: tuple[str, ...] = (HW,),
) -> bytes:
    out = io.BytesIO()
    sign_stream(
        io.BytesIO(b"firmware" * 50),
        out,
        [signer],
        version="1.0.0",
        security_counter=1,
        hardware_ids=hardware_ids,
        created=int(created.timestamp()),
        cert_chain=chain,
    )
    return out.getvalue()


def cli_hierarchy(base: object, name: str, *, region: str = "eu") -> dict[str, object]:
    """root -> regional intermediate -> signer through the real CLI; their directories."""
    from pathlib import Path

    from otaguard.cli.main import run

    base = Path(str(base))
    dirs = {"root": base / name, "ca": base / f"{name}-{region}", "signer": base / f"{name}-signer"}
    steps = [
        ["pki", "init-root", "--out-dir", dirs["root"], "--subject", f"CN=Acme {name}"],
        ["pki", "issue-intermediate", "--ca", dirs["root"], "--out-dir", dirs["ca"],
         "--region", region, "--hardware-id", HW],
        ["pki", "issue-signer", "--ca", dirs["ca"], "--out-dir", dirs["signer"],
         "--name", "release"],
    ]  # fmt: skip
    for step in steps:
        assert run([str(a) for a in step]) == 0, step
    return dirs  # type: ignore[return-value]
