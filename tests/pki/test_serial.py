"""``pki/serial.py``: one check for every serial taken in (RFC 5280 4.1.2.2: 1 .. 2^159-1)."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from otaguard.crypto.keys import KeyType, generate_private_key
from otaguard.crypto.signer import KeySigner
from otaguard.errors import UsageError
from otaguard.pki.issue import Issuer, Revocation, build_crl, build_root, parse_subject
from otaguard.pki.serial import MAX_SERIAL, check_serial, parse_serial

NOW = dt.datetime(2026, 12, 3, tzinfo=dt.UTC)
serials = st.integers(1, MAX_SERIAL)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1", 1),
        ("0A1B", 0x0A1B),
        ("0a:1b", 0x0A1B),
        ("serial=0A1B", 0x0A1B),
        ("0x0a1b", 0x0A1B),
        ("  7F  ", 0x7F),
        ("00:" + "7F" + ":FF" * 19, MAX_SERIAL),  # 20 octets with DER's leading zero
    ],
)
def test_serials_as_operators_paste_them(text: str, value: int) -> None:
    assert parse_serial(text) == value


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0", "serial 0 is outside 1 to 2\\^159-1"),
        ("00:00", "serial 0 is outside"),
        ("80" + "00" * 19, "serial 80{39} is outside"),  # 2^159: 21 octets in DER
        ("F" * 200, "serial of 800 bits is outside"),
        ("-5", "not a hex serial"),
        ("+5", "not a hex serial"),
        ("1_000", "not a hex serial"),
        ("٣", "not a hex serial"),  # a Unicode digit int() would take
        ("", "not a hex serial"),
        ("G1", "not a hex serial"),
        ("F" * 601, "not a hex serial"),
    ],
)
def test_serials_no_certificate_carries_are_refused(text: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        parse_serial(text)


@given(serials)
def test_every_valid_serial_round_trips_in_every_spelling(serial: int) -> None:
    plain = f"{serial:X}"
    octets = serial.to_bytes((serial.bit_length() + 7) // 8, "big")
    assert parse_serial(plain) == parse_serial(f"serial={plain}") == serial
    assert parse_serial(octets.hex(":")) == serial


@settings(max_examples=500)
@given(st.text(max_size=80))
def test_any_text_is_a_valid_serial_or_a_usage_error(text: str) -> None:
    try:
        serial = parse_serial(text)
    except UsageError as exc:
        assert "\n" not in str(exc)
    else:
        assert 1 <= serial <= MAX_SERIAL


@given(st.integers(-(2**1000), 0) | st.integers(MAX_SERIAL + 1, 2**1000))
def test_revocation_refuses_what_no_crl_can_list(serial: int) -> None:
    with pytest.raises(UsageError, match="outside 1 to 2\\^159-1"):
        Revocation(serial, NOW, "superseded")
    with pytest.raises(UsageError):
        check_serial(serial)


def test_the_extremes_go_into_a_crl() -> None:
    signer = KeySigner(generate_private_key(KeyType.ED25519))
    root = build_root(
        signer, parse_subject("CN=Serial Root"), not_before=NOW, not_after=NOW + dt.timedelta(1)
    )
    crl = build_crl(
        Issuer(root, signer),
        [Revocation(1, NOW, "superseded"), Revocation(MAX_SERIAL, NOW, "key-compromise")],
        this_update=NOW,
        next_update=NOW + dt.timedelta(days=1),
        number=1,
    )
    assert {r.serial_number for r in crl} == {1, MAX_SERIAL}
