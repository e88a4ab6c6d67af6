"""Keys held in an HSM, reached through PKCS#11 and named by RFC 7512 URIs.

A URI names the module, the token, the key and where the PIN comes from::

    pkcs11:token=ota;object=release-key?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=env:PIN

* path attributes (``;``-separated): ``token`` (label), ``object`` (key label),
  ``id`` (percent-encoded CKA_ID), ``serial``, ``slot-id``;
* query attributes (``&``-separated): ``module-path`` (else the environment
  variable ``OTAGUARD_PKCS11_MODULE``), ``pin-source`` (``env:VAR`` or
  ``file:/path``; RFC 7512 defines it as a URI), ``pin-value`` (discouraged:
  URIs end up in logs and shell history).

The private key never leaves the token: keys generated here are created with
CKA_SENSITIVE=true and CKA_EXTRACTABLE=false, and signing sends only the
message (Ed25519) or its digest (ECDSA, RSA-PSS) to the token. The signer
implements :class:`otaguard.crypto.signer.Signer`, so every format signs with
HSM keys exactly as with key files.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any
from urllib.parse import unquote

from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from otaguard.crypto.keys import KeyType, PublicKey, check_supported
from otaguard.crypto.schemes import SignatureScheme, scheme_for_key
from otaguard.errors import KeyLoadError, UsageError

_CURVE_OIDS = {
    bytes.fromhex("06082a8648ce3d030107"): ec.SECP256R1(),
    bytes.fromhex("06052b81040022"): ec.SECP384R1(),
}
_ED25519_PARAMS = (bytes.fromhex("06032b6570"), bytes.fromhex("130c656477617264733235353139"))
_PATH_ATTRS = {"token", "object", "id", "serial", "slot-id", "manufacturer", "model", "type"}
_QUERY_ATTRS = {"module-path", "pin-source", "pin-value", "module-name"}


@dataclass(frozen=True)
class Pkcs11Uri:
    """A parsed RFC 7512 URI (only the attributes otaguard uses)."""

    path: dict[str, str] = field(default_factory=dict)
    query: dict[str, str] = field(default_factory=dict)

    @property
    def token(self) -> str | None:
        return self.path.get("token")

    @property
    def object(self) -> str | None:
        return self.path.get("object")

    def without_pin(self) -> str:
        """The URI with any pin-value removed, safe to store and print."""
        path = ";".join(f"{k}={v}" for k, v in self.path.items())
        query = "&".join(f"{k}={v}" for k, v in self.query.items() if k != "pin-value")
        return f"pkcs11:{path}" + (f"?{query}" if query else "")


def is_pkcs11_uri(text: str) -> bool:
    return text.startswith("pkcs11:")


def parse_pkcs11_uri(text: str) -> Pkcs11Uri:
    """Parse ``text``; unknown attributes are refused rather than silently ignored."""
    if not is_pkcs11_uri(text):
        raise UsageError("a PKCS#11 URI starts with 'pkcs11:'")
    body = text[len("pkcs11:") :]
    path_part, _, query_part = body.partition("?")
    path: dict[str, str] = {}
    query: dict[str, str] = {}
    for part, target, allowed, sep in (
        (path_part, path, _PATH_ATTRS, ";"),
        (query_part, query, _QUERY_ATTRS, "&"),
    ):
        for item in filter(None, part.split(sep)):
            name, eq, value = item.partition("=")
            if not eq or name not in allowed:
                raise UsageError(f"unsupported PKCS#11 URI attribute {name!r}")
            if name in target:
                raise UsageError(f"PKCS#11 URI attribute {name!r} given twice")
            target[name] = unquote(value)
    if "token" not in path and "serial" not in path:
        raise UsageError("the PKCS#11 URI must name the token (token=LABEL)")
    return Pkcs11Uri(path, query)


def _pin(uri: Pkcs11Uri) -> str:
    source = uri.query.get("pin-source")
    if source is not None:
        kind, _, where = source.partition(":")
        if kind == "env":
            value = os.environ.get(where)
            if value is None:
                raise UsageError(f"PIN environment variable {where} is not set")
            return value
        if kind == "file":
            try:
                with open(where, encoding="utf-8") as handle:
                    return handle.readline().rstrip("\n")
            except OSError as exc:
                raise UsageError(f"cannot read PIN file {where}: {exc.strerror}") from exc
        raise UsageError("pin-source must be env:VAR or file:PATH")
    if "pin-value" in uri.query:
        return uri.query["pin-value"]
    raise UsageError("the PKCS#11 URI gives no PIN (pin-source=env:VAR or file:PATH)")


def _module_path(uri: Pkcs11Uri) -> str:
    path = uri.query.get("module-path") or os.environ.get("OTAGUARD_PKCS11_MODULE")
    if not path:
        raise UsageError(
            "no PKCS#11 module: add module-path= to the URI or set OTAGUARD_PKCS11_MODULE"
        )
    return path


def _der_octets(raw: bytes) -> bytes:
    """Unwrap a DER OCTET STRING (CKA_EC_POINT is one); raw points pass through."""
    if len(raw) >= 2 and raw[0] == 0x04:
        if raw[1] < 0x80 and raw[1] == len(raw) - 2:
            return raw[2:]
        if raw[1] == 0x81 and len(raw) > 3 and raw[2] == len(raw) - 3:
            return raw[3:]
    return raw


def public_key_from_object(obj: Any) -> PublicKey:
    """Rebuild a ``cryptography`` public key from a PKCS#11 public key object."""
    import pkcs11

    key_type = obj.key_type
    if key_type == pkcs11.KeyType.RSA:
        n = int.from_bytes(obj[pkcs11.Attribute.MODULUS], "big")
        e = int.from_bytes(obj[pkcs11.Attribute.PUBLIC_EXPONENT], "big")
        return check_supported(rsa.RSAPublicNumbers(e, n).public_key())
    params = bytes(obj[pkcs11.Attribute.EC_PARAMS])
    point = _der_octets(bytes(obj[pkcs11.Attribute.EC_POINT]))
    if key_type == pkcs11.KeyType.EC_EDWARDS:
        if params not in _ED25519_PARAMS or len(point) != 32:
            raise KeyLoadError("unsupported Edwards curve in the token (only Ed25519)")
        return ed25519.Ed25519PublicKey.from_public_bytes(point)
    if key_type == pkcs11.KeyType.EC:
        curve = _CURVE_OIDS.get(params)
        if curve is None:
            raise KeyLoadError("unsupported elliptic curve in the token (P-256 or P-384)")
        return ec.EllipticCurvePublicKey.from_encoded_point(curve, point)
    raise KeyLoadError(f"unsupported key type in the token: {key_type}")


class Pkcs11Signer:
    """A :class:`~otaguard.crypto.signer.Signer` whose private key stays in the token.

    Holds a logged-in session until :meth:`close` (or the end of a ``with`` block).
    """

    def __init__(self, uri: str) -> None:
        import pkcs11
        from pkcs11.exceptions import PKCS11Error

        self.uri = parse_pkcs11_uri(uri)
        label = self.uri.object
        key_id = self.uri.path.get("id")
        if label is None and key_id is None:
            raise UsageError("the PKCS#11 URI must name the key (object=LABEL or id=...)")
        try:
            lib = pkcs11.lib(_module_path(self.uri))
            token = lib.get_token(token_label=self.uri.token, token_serial=self._serial())
            self._session: Any = _open_session(token, _pin(self.uri), rw=False)
        except PKCS11Error as exc:
            raise KeyLoadError(f"cannot open PKCS#11 token: {type(exc).__name__}") from exc
        except RuntimeError as exc:  # python-pkcs11 raises this for a missing module
            raise KeyLoadError(f"cannot load PKCS#11 module: {exc}") from exc
        try:
            attrs: dict[Any, Any] = {}
            if label is not None:
                attrs[pkcs11.Attribute.LABEL] = label
            if key_id is not None:
                attrs[pkcs11.Attribute.ID] = key_id.encode("latin-1")
            self._private: Any = self._session.get_key(
                object_class=pkcs11.ObjectClass.PRIVATE_KEY, **_key_args(attrs)
            )
            public = self._session.get_key(
                object_class=pkcs11.ObjectClass.PUBLIC_KEY, **_key_args(attrs)
            )
            self._public = public_key_from_object(public)
        except pkcs11.NoSuchKey as exc:
            self.close()
            raise KeyLoadError(f"no key {label or key_id!r} in token {self.uri.token!r}") from exc
        except pkcs11.MultipleObjectsReturned as exc:
            self.close()
            raise KeyLoadError(f"several keys match {label or key_id!r}: use id=") from exc
        except (PKCS11Error, KeyLoadError):
            self.close()
            raise
        self._scheme = scheme_for_key(self._public)

    def _serial(self) -> bytes | None:
        serial = self.uri.path.get("serial")
        return serial.encode() if serial else None

    @property
    def public_key(self) -> PublicKey:
        return self._public

    @property
    def scheme(self) -> SignatureScheme:
        return self._scheme

    def sign(self, message: bytes) -> bytes:
        import pkcs11

        if self._scheme is SignatureScheme.ED25519:
            return bytes(self._private.sign(message, mechanism=pkcs11.Mechanism.EDDSA))
        name = "sha384" if self._scheme is SignatureScheme.ECDSA_P384_SHA384 else "sha256"
        return self.sign_prehashed(hashlib.new(name, message).digest())

    def sign_prehashed(self, digest: bytes) -> bytes:
        import pkcs11

        if self._scheme is SignatureScheme.ED25519:
            raise ValueError("Ed25519 cannot sign a prehashed message")
        if self._scheme is SignatureScheme.RSA_PSS_SHA256:
            return bytes(
                self._private.sign(
                    digest,
                    mechanism=pkcs11.Mechanism.RSA_PKCS_PSS,
                    mechanism_param=(pkcs11.Mechanism.SHA256, pkcs11.MGF.SHA256, 32),
                )
            )
        raw = bytes(self._private.sign(digest, mechanism=pkcs11.Mechanism.ECDSA))
        half = len(raw) // 2
        return encode_dss_signature(
            int.from_bytes(raw[:half], "big"), int.from_bytes(raw[half:], "big")
        )

    def close(self) -> None:
        session = getattr(self, "_session", None)
        if session is not None:
            session.close()
            self._session = None

    def __enter__(self) -> Pkcs11Signer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


#: The PIN digest each token was logged in with by this process (token serial -> SHA-256).
_LOGINS: dict[str, bytes] = {}


def _open_session(token: Any, pin: str, *, rw: bool) -> Any:
    """Open a session, logged in. PKCS#11 login is per token and process: when
    another session of ours is already logged in, a new one shares that login, but
    only when given the same PIN. Without that check a wrong PIN would be accepted
    whenever another session happened to be open, and refused otherwise."""
    import hmac

    import pkcs11

    digest = hashlib.sha256(pin.encode()).digest()
    serial = str(getattr(token, "serial", b"") or token.label)
    try:
        session = token.open(user_pin=pin, rw=rw)
    except pkcs11.exceptions.UserAlreadyLoggedIn:
        known = _LOGINS.get(serial)
        if known is None or not hmac.compare_digest(known, digest):
            raise pkcs11.exceptions.PinIncorrect() from None
        return token.open(rw=rw)
    _LOGINS[serial] = digest
    return session


def _key_args(attrs: dict[Any, Any]) -> dict[str, Any]:
    import pkcs11

    args: dict[str, Any] = {}
    if pkcs11.Attribute.LABEL in attrs:
        args["label"] = attrs[pkcs11.Attribute.LABEL]
    if pkcs11.Attribute.ID in attrs:
        args["id"] = attrs[pkcs11.Attribute.ID]
    return args


def generate_pkcs11_key(uri: str, key_type: KeyType) -> PublicKey:
    """Generate a non-extractable key pair inside the token named by ``uri``.

    Refuses to overwrite: a label that already exists is an error, because two
    keys under one label would make every later signature ambiguous.
    """
    import pkcs11
    from pkcs11.exceptions import PKCS11Error

    parsed = parse_pkcs11_uri(uri)
    label = parsed.object
    if not label:
        raise UsageError("name the new key with object=LABEL in the PKCS#11 URI")
    private_template = {
        pkcs11.Attribute.SENSITIVE: True,
        pkcs11.Attribute.EXTRACTABLE: False,
        pkcs11.Attribute.SIGN: True,
    }
    key_id = hashlib.sha256(label.encode()).digest()[:8]
    try:
        token = pkcs11.lib(_module_path(parsed)).get_token(token_label=parsed.token)
        with _open_session(token, _pin(parsed), rw=True) as session:
            existing = list(session.get_objects({pkcs11.Attribute.LABEL: label}))
            if existing:
                raise UsageError(f"the token already holds an object labelled {label!r}")
            common: dict[str, Any] = {
                "store": True,
                "label": label,
                "id": key_id,
                "private_template": private_template,
            }
            if key_type in (KeyType.RSA_3072, KeyType.RSA_4096):
                bits = 3072 if key_type is KeyType.RSA_3072 else 4096
                public, _ = session.generate_keypair(pkcs11.KeyType.RSA, bits, **common)
            elif key_type is KeyType.ED25519:
                public, _ = session.generate_keypair(
                    pkcs11.KeyType.EC_EDWARDS,
                    0,
                    mechanism=pkcs11.Mechanism.EC_EDWARDS_KEY_PAIR_GEN,
                    public_template={pkcs11.Attribute.EC_PARAMS: _ED25519_PARAMS[0]},
                    **common,
                )
            else:
                oid = next(
                    o
                    for o, c in _CURVE_OIDS.items()
                    if c.name == ("secp256r1" if key_type is KeyType.ECDSA_P256 else "secp384r1")
                )
                params = session.create_domain_parameters(
                    pkcs11.KeyType.EC, {pkcs11.Attribute.EC_PARAMS: oid}, local=True
                )
                public, _ = params.generate_keypair(**common)
            return public_key_from_object(public)
    except PKCS11Error as exc:
        raise KeyLoadError(f"PKCS#11 key generation failed: {type(exc).__name__}") from exc
    except RuntimeError as exc:
        raise KeyLoadError(f"cannot load PKCS#11 module: {exc}") from exc
