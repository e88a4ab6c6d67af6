"""C2SP signed notes and checkpoints: the Go reference vectors, the signature rules,
strict parsing, sigstore-python's checkpoint parser, and a SoftHSM2 audit key."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from hypothesis import given, settings
from hypothesis import strategies as st
from sigstore._internal.rekor.checkpoint import SignedCheckpoint

from conftest import hsm_uri
from helpers import cached_key
from helpers_audit import ORIGIN, audit_signer
from otaguard.audit.checkpoint import Checkpoint, open_checkpoint, parse_checkpoint, sign_checkpoint
from otaguard.audit.merkle import EMPTY_ROOT
from otaguard.audit.note import VerifierKey, open_note, parse_note, sign_note
from otaguard.crypto.keys import KeyType
from otaguard.crypto.pkcs11 import Pkcs11Signer, generate_pkcs11_key
from otaguard.crypto.signer import KeySigner
from otaguard.errors import AuditCheckpointError, AuditSignatureError, KeyLoadError, UsageError

# golang.org/x/mod/sumdb/note (note_test.go, example_test.go): a key, a text, its note.
GO_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
GO_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_TEXT = (
    b"If you think cryptography is the answer to your problem,\n"
    b"then you don't know what your problem is.\n"
)
GO_NOTE = (
    GO_TEXT
    + "\n\u2014 PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNX"
    "gKvqfqdngotpRZb6KE6RyyBwJnAM=\n".encode()
)
# transparency-dev/witness note_verifier_test.go: the Pixel 6 log's ECDSA key and its id.
PIXEL_VKEY = (
    "pixel6_transparency_log+91c16e30+AjBZMBMGByqGSM49AgEGCCqGSM49AwEHA0IABN+4x0Jk1yTwvLFI9A4NDd"
    "GZcX0aiWVdWM5XJVy0M4VWD3AvyW5Q6Hs9A0mcDkpUoYgn+KKPNzFC0H3nN3q6JQ8="
)


def _go_signer() -> KeySigner:
    seed = base64.b64decode(GO_SKEY.split("+", 4)[4])[1:]
    return KeySigner(ed25519.Ed25519PrivateKey.from_private_bytes(seed))


def test_go_reference_note_is_reproduced_byte_for_byte() -> None:
    signer = _go_signer()
    assert VerifierKey.for_public_key("PeterNeumann", signer.public_key).encode() == GO_VKEY
    assert sign_note(GO_TEXT, signer, "PeterNeumann") == GO_NOTE
    text, keys = open_note(GO_NOTE, [VerifierKey.parse(GO_VKEY)])
    assert text == GO_TEXT and keys[0].name == "PeterNeumann"
    with pytest.raises(AuditSignatureError, match="does not verify"):
        open_note(GO_NOTE.replace(b"cryptography", b"cryptographY"), [VerifierKey.parse(GO_VKEY)])


def test_ecdsa_key_id_is_the_hash_of_the_spki_as_in_transparency_dev_witness() -> None:
    key = VerifierKey.parse(PIXEL_VKEY)
    assert key.alg == 0x02 and key.key_id.hex() == "91c16e30"
    assert key.encode() == PIXEL_VKEY


@pytest.mark.parametrize(
    "text",
    [
        GO_VKEY.replace("c74f20a3", "c74f20a4"),  # id does not match the key
        GO_VKEY.replace("c74f20a3", "C74F20A3"),
        GO_VKEY.replace("Peter", "Pe ter"),
        "PeterNeumann+c74f20a3",
        GO_VKEY + "=",
        GO_VKEY[:-4],
        "n+00000000+" + base64.b64encode(b"\x03" + bytes(32)).decode(),  # unknown type
        "",
    ],
)
def test_malformed_verifier_keys_are_usage_errors(text: str) -> None:
    with pytest.raises(UsageError):
        VerifierKey.parse(text)


@pytest.mark.parametrize("key_type", [KeyType.ED25519, KeyType.ECDSA_P256])
def test_checkpoint_round_trip_with_each_supported_key_type(key_type: KeyType) -> None:
    signer = KeySigner(cached_key(key_type))
    checkpoint = Checkpoint(ORIGIN, 20852163, hashlib.sha256(b"root").digest())
    note = sign_checkpoint(checkpoint, signer)
    assert open_checkpoint(note, [signer.public_key]) == checkpoint
    vkey = VerifierKey.for_public_key(ORIGIN, signer.public_key)
    assert open_checkpoint(note, [VerifierKey.parse(vkey.encode())]) == checkpoint
    # an independent parser: sigstore-python's Rekor checkpoint reader
    theirs = SignedCheckpoint.from_text(note.decode())
    assert theirs.checkpoint.log_size == checkpoint.size
    assert theirs.checkpoint.log_hash == checkpoint.root.hex()
    sig = theirs.signed_note.signatures[0]
    assert sig.sig_hash == vkey.key_id
    assert vkey.verify(theirs.signed_note.note.encode(), base64.b64decode(sig.signature))


@pytest.mark.parametrize("key_type", [KeyType.ECDSA_P384, KeyType.RSA_3072])
def test_keys_without_a_signed_note_type_are_refused(key_type: KeyType) -> None:
    signer = KeySigner(cached_key(key_type))
    with pytest.raises(UsageError, match="Ed25519"):
        sign_checkpoint(Checkpoint(ORIGIN, 0, EMPTY_ROOT), signer)


def test_signature_rules_of_the_spec() -> None:
    good, other = audit_signer(0), audit_signer(1)
    checkpoint = Checkpoint(ORIGIN, 3, hashlib.sha256(b"r").digest())
    note = sign_checkpoint(checkpoint, good)
    # no signature by a trusted key
    with pytest.raises(AuditSignatureError, match="no signature by a trusted"):
        open_checkpoint(note, [other.public_key])
    # an unknown signer's line is ignored, the trusted one still counts
    cosigned = note + sign_note(checkpoint.text(), other, "witness.example/w1").split(b"\n\n")[1]
    assert open_checkpoint(cosigned, [good.public_key]) == checkpoint
    # a trusted key's failing signature rejects the whole note, even beside a good one
    forged = note.replace(
        note.split(b" ")[-1], base64.b64encode(note_key_id(note) + bytes(64)) + b"\n"
    )
    with pytest.raises(AuditSignatureError, match="does not verify"):
        open_checkpoint(forged + note.split(b"\n\n")[1], [good.public_key])
    # the key of another log does not vouch for this one
    elsewhere = sign_note(checkpoint.text(), good, "other.example/log")
    with pytest.raises(AuditSignatureError):
        open_checkpoint(
            elsewhere, [VerifierKey.for_public_key("other.example/log", good.public_key)]
        )


def note_key_id(note: bytes) -> bytes:
    return base64.b64decode(note.split(b" ")[-1])[:4]


@pytest.mark.parametrize(
    ("text", "why"),
    [
        (b"log\n5\n", "three"),
        (b"log\n05\n" + base64.b64encode(bytes(32)) + b"\n", "decimal"),
        (b"log\n-1\n" + base64.b64encode(bytes(32)) + b"\n", "decimal"),
        (b"log\n99999999999999999999\n" + base64.b64encode(bytes(32)) + b"\n", "decimal"),
        (b"log\n5\n" + base64.b64encode(bytes(31)) + b"\n", "32 bytes"),
        (b"log\n5\n" + base64.b64encode(bytes(32))[:-1] + b"\n", "base64"),
        (b"log\n0\n" + base64.b64encode(bytes(32)) + b"\n", "empty tree"),
        (b"log\n5\n" + base64.b64encode(bytes(32)) + b"\n\next\n", "non-empty"),
        (b"log\n5\n" + base64.b64encode(bytes(32)), "newline"),
        (b"\n5\n" + base64.b64encode(bytes(32)) + b"\n", "non-empty"),
        (b"lo\tg\n5\n" + base64.b64encode(bytes(32)) + b"\n", "control"),
        (b"\xfflog\n5\n" + base64.b64encode(bytes(32)) + b"\n", "UTF-8"),
    ],
)
def test_malformed_checkpoints_are_refused(text: bytes, why: str) -> None:
    with pytest.raises(AuditCheckpointError, match=why):
        parse_checkpoint(text)


def test_checkpoint_with_extension_lines_parses() -> None:
    root = hashlib.sha256(b"x").digest()
    text = b"log\n5\n" + base64.b64encode(root) + b"\nTimestamp: 1\n"
    assert parse_checkpoint(text) == Checkpoint("log", 5, root, ("Timestamp: 1",))


@pytest.mark.parametrize(
    "note",
    [
        GO_TEXT,  # no signatures
        GO_TEXT + b"\n",
        GO_NOTE.replace("\u2014".encode(), b"--"),
        GO_NOTE.replace(b"PeterNeumann ", b"Peter+Neumann "),
        GO_NOTE.replace(b"AM=", b"AM"),
        GO_NOTE[:-1],
        GO_TEXT + "\n\u2014 PeterNeumann AAAA\n".encode(),  # shorter than a key id + 1
        GO_NOTE.replace(b"answer", b"ans\x01wer"),
        b"\xff" + GO_NOTE,
        GO_TEXT + b"\n" + b"".join([GO_NOTE.split(b"\n\n")[1]] * 101),
    ],
)
def test_malformed_notes_are_refused(note: bytes) -> None:
    with pytest.raises(AuditCheckpointError):
        parse_note(note)


@given(st.binary(max_size=300))
@settings(max_examples=400, deadline=None)
def test_note_and_checkpoint_parsers_fail_cleanly(data: bytes) -> None:
    try:
        note = parse_note(data)
    except AuditCheckpointError:
        return
    try:
        parse_checkpoint(note.text)
    except AuditCheckpointError:
        pass


@given(st.text(max_size=120))
@settings(max_examples=300, deadline=None)
def test_verifier_key_parser_fails_cleanly(text: str) -> None:
    try:
        key = VerifierKey.parse(text)
    except UsageError:
        return
    assert VerifierKey.parse(key.encode()) == key


@given(
    st.text(min_size=1, max_size=30).filter(lambda s: "\n" not in s),
    st.integers(1, 2**63 - 1),
    st.binary(min_size=32, max_size=32),
    st.lists(st.text(min_size=1, max_size=20).filter(lambda s: "\n" not in s), max_size=3),
)
@settings(max_examples=300, deadline=None)
def test_checkpoint_text_round_trips(origin: str, size: int, root: bytes, ext: list[str]) -> None:
    checkpoint = Checkpoint(origin, size, root, tuple(ext))
    try:
        parsed = parse_checkpoint(checkpoint.text())
    except AuditCheckpointError:  # control characters in the drawn text
        assert any(c < " " for line in (origin, *ext) for c in line)
        return
    assert parsed == checkpoint


@pytest.mark.parametrize("key_type", [KeyType.ED25519, KeyType.ECDSA_P256])
def test_checkpoint_signed_by_a_softhsm2_key(softhsm: dict[str, str], key_type: KeyType) -> None:
    uri = hsm_uri(softhsm, f"audit-{key_type.value}")
    public = generate_pkcs11_key(uri, key_type)
    checkpoint = Checkpoint(ORIGIN, 42, hashlib.sha256(b"hsm").digest())
    with Pkcs11Signer(uri) as signer:
        note = sign_checkpoint(checkpoint, signer)
    assert open_checkpoint(note, [public]) == checkpoint
    assert isinstance(public, ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey)
    with pytest.raises(AuditSignatureError):
        open_checkpoint(note.replace(b"\n42\n", b"\n43\n"), [public])


def test_load_trusted_key_takes_a_pem_file_a_verifier_key_file_or_string(tmp_path: Path) -> None:
    from otaguard.audit.note import load_trusted_key
    from otaguard.crypto.keys import generate_private_key, public_key_pem

    public = generate_private_key(KeyType.ED25519).public_key()
    pem = tmp_path / "audit.pub"
    pem.write_bytes(public_key_pem(public))
    assert load_trusted_key(str(pem)) == public
    vkey = VerifierKey.for_public_key("example.com/log", public)
    text = tmp_path / "audit.vkey"
    text.write_text(vkey.encode())
    assert load_trusted_key(str(text)) == vkey == load_trusted_key(vkey.encode())
    with pytest.raises(UsageError, match="not a file"):
        load_trusted_key(str(tmp_path / "missing"))
    junk = tmp_path / "junk.pem"
    junk.write_bytes(b"-----BEGIN PUBLIC KEY-----\nnot base64\n-----END PUBLIC KEY-----\n")
    with pytest.raises(KeyLoadError, match=r"junk\.pem"):
        load_trusted_key(str(junk))
