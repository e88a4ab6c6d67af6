"""Device identities (root -> device CA -> device certificate) and a device that signs requests."""

from __future__ import annotations

import datetime as dt
import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import httpx
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from otaguard.crypto.keys import KeyType, generate_private_key
from otaguard.crypto.signer import KeySigner
from otaguard.pki.constraints import DEVICE_IDENTITY, Constraints
from otaguard.pki.issue import Issuer, build_device, build_intermediate, build_root, parse_subject
from otaguard.protocol.signing import sign_request
from otaguard.protocol.state import state_hash

DAY = dt.timedelta(days=1)
HW = "acme-ecu-v2"


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


@dataclass
class DeviceCa:
    root: Issuer
    ca: Issuer

    @classmethod
    def make(cls, name: str = "Acme") -> DeviceCa:
        now = _now()
        root_signer = KeySigner(generate_private_key(KeyType.ECDSA_P256))
        root = Issuer(
            build_root(
                root_signer,
                parse_subject(f"CN={name} Device Root"),
                not_before=now - DAY,
                not_after=now + 3650 * DAY,
                path_length=1,
            ),
            root_signer,
        )
        ca_signer = KeySigner(generate_private_key(KeyType.ECDSA_P256))
        ca = Issuer(
            build_intermediate(
                root,
                ca_signer.public_key,
                parse_subject(f"CN={name} Device CA"),
                Constraints(DEVICE_IDENTITY, None, None),
                not_before=now - DAY,
                not_after=now + 1000 * DAY,
            ),
            ca_signer,
        )
        return cls(root, ca)

    @property
    def ca_pem(self) -> str:
        return self.ca.cert.public_bytes(Encoding.PEM).decode()

    def issue(
        self, device_id: str, *, days: int = 365, key_type: KeyType = KeyType.ECDSA_P256
    ) -> Identity:
        now = _now()
        signer = KeySigner(generate_private_key(key_type))
        cert = build_device(
            self.ca, signer.public_key, device_id, not_before=now - DAY, not_after=now + days * DAY
        )
        return Identity(device_id, signer, [cert, self.ca.cert])


@dataclass
class Identity:
    device_id: str
    signer: KeySigner
    chain: list[x509.Certificate]

    @property
    def chain_pem(self) -> str:
        return "".join(c.public_bytes(Encoding.PEM).decode() for c in self.chain)


def ecu_state(serial: str = "main", hw: str = HW, **fields: Any) -> dict[str, Any]:
    return {
        "serial": serial,
        "hardware_id": hw,
        "target": None,
        "version": None,
        "security_counter": 0,
        "sha256": None,
        "slot": "a",
        "boot": "confirmed",
        **fields,
    }


@dataclass
class Device:
    """A device talking to a live server: every request signed like the agent's."""

    base_url: str
    identity: Identity
    ecus: list[tuple[str, str]] = field(default_factory=lambda: [("main", HW)])
    http: httpx.Client = field(init=False)
    last: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.http = httpx.Client(base_url=self.base_url, timeout=30)

    @property
    def id(self) -> str:
        return self.identity.device_id

    def headers(
        self,
        method: str,
        path: str,
        query: str = "",
        body: bytes = b"",
        *,
        signed_at: int | None = None,
        nonce: str | None = None,
        device_id: str | None = None,
        signer: KeySigner | None = None,
    ) -> dict[str, str]:
        headers = sign_request(
            signer or self.identity.signer,
            device_id=device_id or self.id,
            method=method,
            path=path,
            query=query,
            body=body,
            time=int(time.time()) if signed_at is None else signed_at,
            nonce=nonce or secrets.token_hex(16),
        )
        self.last = headers
        return headers

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        params: dict[str, str] | None = None,
        extra: dict[str, str] | None = None,
        **sign: Any,
    ) -> httpx.Response:
        raw = b"" if body is None else json.dumps(body).encode()
        query = urlencode(params or {})
        headers = {**self.headers(method, path, query, raw, **sign), **(extra or {})}
        if raw:
            headers["Content-Type"] = "application/json"
        url = f"{path}?{query}" if query else path
        return self.http.request(method, url, content=raw, headers=headers)

    def enroll(self, **sign: Any) -> httpx.Response:
        body = {
            "chain_pem": self.identity.chain_pem,
            "ecus": [{"serial": s, "hardware_id": h} for s, h in self.ecus],
        }
        return self.request("POST", "/api/v1/device/enroll", body, **sign)

    def post_state(self, ecus: list[dict[str, Any]] | None = None, **sign: Any) -> httpx.Response:
        body = {"ecus": ecus or [ecu_state(s, h) for s, h in self.ecus]}
        answer = self.request("POST", "/api/v1/device/state", body, **sign)
        if answer.status_code == 200:
            assert answer.json()["state"] == state_hash(body)
            self.state = answer.json()["state"]
        return answer

    state: str = ""

    def check_in(self, etag: str | None = None, **sign: Any) -> httpx.Response:
        extra = {"If-None-Match": etag} if etag else None
        return self.request(
            "GET", "/api/v1/device/update", params={"state": self.state}, extra=extra, **sign
        )

    def close(self) -> None:
        self.http.close()
