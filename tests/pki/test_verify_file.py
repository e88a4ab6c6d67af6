"""``otaguard.image.verify_file`` (bare keys), ``otaguard.pki.verify_file`` (roots) and the
policy options they check (``image.policy.policy_for``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from helpers import cached_key, make_image
from otaguard.crypto.keys import KeyType
from otaguard.errors import RejectedError, UsageError
from otaguard.image import TrustedKeys
from otaguard.image.describe import inspect_file
from otaguard.image.policy import policy_for
from otaguard.image.verify_file import key_verifier, verify_file

KEY = cached_key(KeyType.ECDSA_P256, 5)
OTHER = cached_key(KeyType.ECDSA_P256, 6)


def _keys(key: Any) -> Any:
    return key_verifier(TrustedKeys.of([key.public_key()]), 1)


@pytest.fixture
def image(tmp_path: Path) -> Path:
    path = tmp_path / "fw.img"
    path.write_bytes(make_image(b"firmware" * 100, [KEY], version="2.1.0", security_counter=4))
    return path


def test_verify_file_reports_what_it_verified(image: Path) -> None:
    report = verify_file(str(image), _keys(KEY), min_version="2.0.0")
    assert report["verified"] is True and report["format"] == "native"
    assert report["version"] == "2.1.0" and report["security_counter"] == 4
    assert "certificate_chain" not in report  # bare keys: no chain to report


def test_verify_file_refuses_another_key_and_a_policy_it_fails(image: Path) -> None:
    with pytest.raises(RejectedError):
        verify_file(str(image), _keys(OTHER))
    with pytest.raises(RejectedError):
        verify_file(str(image), _keys(KEY), min_security_counter=5)


def test_policy_options_are_checked_by_the_format() -> None:
    with pytest.raises(UsageError, match="must not be negative"):
        policy_for("native", min_security_counter=-1)
    with pytest.raises(UsageError, match="--min-version"):
        policy_for("native", min_version="not-semver")
    assert policy_for("native", min_version="1.2.3-rc.1").min_version == "1.2.3-rc.1"
    assert policy_for("mcuboot", hardware_id="hw").hardware_id == "hw"


def test_inspect_file_claims_without_verifying(image: Path) -> None:
    report = inspect_file(str(image))
    assert report["verified"] is False and report["version"] == "2.1.0"


def test_root_verifier_reports_the_chain_and_refuses_another_root(tmp_path: Path) -> None:

    from cryptography.hazmat.primitives.serialization import Encoding

    from helpers_pki import HW, der, make_pki, sign_image
    from otaguard.errors import CertificateError
    from otaguard.pki.verify_file import root_verifier, trusted_roots_from_files

    pki, other = make_pki(), make_pki(root_index=1)
    path = tmp_path / "signed.img"
    path.write_bytes(sign_image(pki.leaf.signer, der(pki.leaf.cert, pki.inter.cert)))
    roots = tmp_path / "root.pem"
    roots.write_bytes(pki.root.cert.public_bytes(Encoding.PEM))
    trusted = trusted_roots_from_files((str(roots),), (), "eu")
    report = verify_file(str(path), root_verifier(trusted), hardware_id=HW)
    assert report["certificate_chain"][0] == pki.leaf.cert.subject.rfc4514_string()
    assert report["certificate_chain"][-1] == pki.root.cert.subject.rfc4514_string()
    roots.write_bytes(other.root.cert.public_bytes(Encoding.PEM))
    with pytest.raises((CertificateError, RejectedError)):
        verify_file(str(path), root_verifier(trusted_roots_from_files((str(roots),), (), "eu")))
