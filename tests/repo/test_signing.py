"""RepoSigner through securesystemslib's loader hook: the right key or an error."""

from __future__ import annotations

from pathlib import Path

import pytest
from tuf.api.metadata import Metadata, Root

from helpers import cached_key
from otaguard.crypto.keys import KeyType, private_key_pem
from otaguard.errors import KeyLoadError
from otaguard.repo.signing import RepoSigner, tuf_key


def test_loader_hook_signs_with_the_named_key(tmp_path: Path) -> None:
    key = cached_key(KeyType.ECDSA_P256)
    path = tmp_path / "k.pem"
    path.write_bytes(private_key_pem(key, b"s3cret"))
    public = tuf_key(key.public_key())
    signer = RepoSigner.from_priv_key_uri(str(path), public, lambda _: "s3cret")
    root = Root()
    root.add_key(public, "root")
    metadata = Metadata(root)
    metadata.sign(signer)
    root.verify_delegate("root", metadata.signed_bytes, metadata.signatures)


def test_loader_hook_refuses_another_key(tmp_path: Path) -> None:
    path = tmp_path / "k.pem"
    path.write_bytes(private_key_pem(cached_key(KeyType.ED25519), None))
    other = tuf_key(cached_key(KeyType.ED25519, 1).public_key())
    with pytest.raises(KeyLoadError, match="is not the key"):
        RepoSigner.from_priv_key_uri(str(path), other)


def test_loader_hook_wrong_passphrase(tmp_path: Path) -> None:
    key = cached_key(KeyType.ED25519)
    path = tmp_path / "k.pem"
    path.write_bytes(private_key_pem(key, b"right"))
    with pytest.raises(KeyLoadError):
        RepoSigner.from_priv_key_uri(str(path), tuf_key(key.public_key()), lambda _: "wrong")
