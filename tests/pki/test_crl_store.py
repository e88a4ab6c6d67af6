"""What a device learns about revocation: only CRLs from trusted CAs, only newer ones."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from helpers_pki import NOW, make_pki
from otaguard.errors import ChainError, MalformedError, RevokedError, StaleCrlError
from otaguard.pki.crl_store import LearnedCrls, learn_crl
from otaguard.pki.issue import Revocation, build_crl

DAY = dt.timedelta(days=1)


def _crl(issuer, number: int, revoked=()):
    return build_crl(issuer, list(revoked), this_update=NOW, next_update=NOW + DAY, number=number)


def test_learns_root_and_intermediate_crls_and_keeps_the_newest() -> None:
    pki = make_pki(root_index=20)
    roots = [pki.root.cert]
    store = learn_crl(LearnedCrls(), _crl(pki.root, 1).public_bytes(Encoding.DER), roots=roots)
    store = learn_crl(
        store,
        _crl(pki.inter, 3).public_bytes(Encoding.PEM),
        roots=roots,
        issuer_chain=[pki.inter.cert],
    )
    assert len(store.crls) == 2
    revoked = [Revocation(pki.leaf.cert.serial_number, NOW, "key-compromise")]
    store = learn_crl(
        store,
        _crl(pki.inter, 4, revoked).public_bytes(Encoding.DER),
        roots=roots,
        issuer_chain=[pki.inter.cert],
    )
    assert len(store.crls) == 2
    numbers = sorted(len(c) for c in store.parsed())
    assert numbers == [0, 1]


def test_replayed_older_crl_is_refused() -> None:
    pki = make_pki(root_index=20)
    roots = [pki.root.cert]
    store = learn_crl(
        LearnedCrls(),
        _crl(pki.inter, 5).public_bytes(Encoding.DER),
        roots=roots,
        issuer_chain=[pki.inter.cert],
    )
    for number in (5, 4):
        with pytest.raises(StaleCrlError):
            learn_crl(
                store,
                _crl(pki.inter, number).public_bytes(Encoding.DER),
                roots=roots,
                issuer_chain=[pki.inter.cert],
            )


def test_crl_from_untrusted_ca_is_refused() -> None:
    pki = make_pki(root_index=20)
    stranger = make_pki(root_index=21)
    crl = _crl(stranger.inter, 9).public_bytes(Encoding.DER)
    with pytest.raises(ChainError, match="does not chain to a trusted root"):
        learn_crl(LearnedCrls(), crl, roots=[pki.root.cert], issuer_chain=[stranger.inter.cert])
    with pytest.raises(RevokedError, match="not signed by a CA this device trusts"):
        learn_crl(LearnedCrls(), crl, roots=[pki.root.cert])
    with pytest.raises(MalformedError):
        learn_crl(LearnedCrls(), b"garbage", roots=[pki.root.cert])
