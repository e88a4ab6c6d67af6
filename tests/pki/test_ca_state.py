"""A CA's state.json: serials checked on entry, a poisoned state named with its way out.

Before serials were checked, ``pki revoke --ca X 0`` was accepted and recorded,
and every later ``pki crl`` for that CA ended in an internal error until
someone edited the state by hand. The states below are written exactly as that
code wrote them (``record_revocation``: upper-case hex of the int, ISO date,
``json.dumps(indent=2)``).
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import assert_one_line
from otaguard.crypto.keys import KeyType, generate_private_key, private_key_pem
from otaguard.crypto.signer import KeySigner
from otaguard.errors import OtaguardError, StorageError
from otaguard.pki.issue import build_crl, build_root, parse_subject
from otaguard.pki.store import load_ca_dir, next_crl_number, revocations, write_ca_dir

NOW = dt.datetime(2026, 12, 3, tzinfo=dt.UTC)
GOOD = 0x1D2E3F


def _ca(path: Path) -> Path:
    key = generate_private_key(KeyType.ED25519)
    cert = build_root(
        KeySigner(key),
        parse_subject("CN=State Root"),
        not_before=NOW - dt.timedelta(days=1),
        not_after=NOW + dt.timedelta(days=3650),
    )
    write_ca_dir(path, cert, [cert], key_pem=private_key_pem(key, None))
    return path


def _as_old_code_wrote(ca: Path, *serials: int, crl_number: int = 0) -> None:
    revoked = [
        {"serial": f"{s:X}", "date": NOW.isoformat(), "reason": "superseded"} for s in serials
    ]
    state = {"revoked": revoked, "crl_number": crl_number}
    (ca / "state.json").write_text(json.dumps(state, indent=2) + "\n")


@pytest.fixture
def ca(tmp_path: Path) -> Path:
    return _ca(tmp_path / "ca")


@pytest.mark.parametrize(
    ("bad", "shown"),
    [(0, "serial 0"), (-5, "serial -5"), (2**800 - 1, "serial of 800 bits")],
    ids=["zero", "negative", "800-bit"],
)
def test_a_poisoned_state_names_the_entry_and_the_fix(
    cli, ca: Path, tmp_path: Path, bad: int, shown: str
) -> None:
    _as_old_code_wrote(ca, GOOD, bad)
    for args in (
        ("crl", "--out", tmp_path / "ca.crl"),
        ("revoke", "ABC", "--reason", "superseded"),
    ):
        result = cli("pki", args[0], "--ca", ca, *args[1:])
        assert result.code == 2, result.err  # was 3: internal error, ValueError from the signer
        assert_one_line(result.err)
        assert f"revoked entry 1 is unusable: {shown} is outside 1 to 2^159-1" in result.err
        assert 'delete it from the "revoked" list' in result.err
    assert not (tmp_path / "ca.crl").exists()
    state = json.loads((ca / "state.json").read_text())
    del state["revoked"][1]  # the fix the message asks for
    (ca / "state.json").write_text(json.dumps(state))
    published = cli("pki", "crl", "--ca", ca, "--out", tmp_path / "ca.crl", "--json")
    assert published.code == 0 and published.json["revoked"] == [f"{GOOD:X}"]


@pytest.mark.parametrize(
    "serial",
    ["0", "00:00", "-5", "F" * 200, "1" + "0" * 40, "zz", ""],
    ids=["zero", "zero-octets", "negative", "800-bit", "2^160", "not-hex", "empty"],
)
def test_revoke_refuses_bad_serials_on_entry(cli, ca: Path, serial: str) -> None:
    before = (ca / "state.json").read_bytes()
    result = cli("pki", "revoke", "--ca", ca, "--reason", "key-compromise", "--", serial)
    assert result.code == 2 and "serial" in result.err, result.err
    assert_one_line(result.err)
    assert (ca / "state.json").read_bytes() == before  # nothing recorded


def test_a_bad_date_is_to_be_corrected_not_deleted(ca: Path) -> None:
    _as_old_code_wrote(ca, GOOD)
    for date in ("yesterday", "1949-12-31T00:00:00+00:00", "0001-01-01T00:00:00+14:00"):
        state = json.loads((ca / "state.json").read_text())
        state["revoked"][0]["date"] = date
        (ca / "state.json").write_text(json.dumps(state))
        with pytest.raises(StorageError, match="correct it \\(do not delete the entry"):
            revocations(load_ca_dir(ca))


@pytest.mark.parametrize(
    ("state", "message"),
    [
        ({"revoked": 5}, r"\$\.revoked: 5 is not of type 'array'"),
        ({"revoked": [{"serial": "1"}]}, r"\$\.revoked\[0\]: 'date' is a required property"),
        (
            {"revoked": [{"serial": "1", "date": "2026-01-01", "reason": "bored"}]},
            r"\$\.revoked\[0\]\.reason: 'bored' is not one of",
        ),
        ({"crl_number": "7"}, r"\$\.crl_number: '7' is not of type 'integer'"),
        ({"crl_number": -1}, r"\$\.crl_number: -1 is less than the minimum of 0"),
        ([], r"\$: \[\] is not of type 'object'"),
    ],
)
def test_state_schema_errors_are_one_line(ca: Path, state: Any, message: str) -> None:
    (ca / "state.json").write_text(json.dumps(state))
    with pytest.raises(StorageError, match=message):
        revocations(load_ca_dir(ca))


def test_deeply_nested_state_exits_2(cli, ca: Path, tmp_path: Path) -> None:
    (ca / "state.json").write_text("[" * 100_000 + "]" * 100_000)
    result = cli("pki", "crl", "--ca", ca, "--out", tmp_path / "ca.crl")
    assert result.code == 2 and "nested too deeply" in result.err
    assert_one_line(result.err)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**200), 2**200)
    | st.text(max_size=12)
    | st.sampled_from(["0", "FF", "-1", "superseded", "2026-01-01", "1900-01-01T00:00:00"])
    | st.datetimes(timezones=st.timezones()).map(dt.datetime.isoformat),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)


def _paths(value: object, here: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    out = [here]
    if isinstance(value, dict):
        for key, item in value.items():
            out += _paths(item, (*here, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            out += _paths(item, (*here, index))
    return out


def _replace(value: Any, path: tuple[Any, ...], new: object) -> Any:
    if not path:
        return new
    copy = dict(value) if isinstance(value, dict) else list(value)
    copy[path[0]] = _replace(value[path[0]], path[1:], new)
    return copy


@pytest.fixture(scope="module")
def shared_ca(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _ca(tmp_path_factory.mktemp("fuzz") / "ca")


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data(), value=json_values)
def test_any_edit_of_the_state_publishes_or_is_a_storage_error(
    shared_ca: Path, data: st.DataObject, value: object
) -> None:
    _as_old_code_wrote(shared_ca, GOOD, 0x42, crl_number=3)
    original = json.loads((shared_ca / "state.json").read_text())
    path = data.draw(st.sampled_from(_paths(original)))
    (shared_ca / "state.json").write_text(json.dumps(_replace(original, path, value)))
    ca = load_ca_dir(shared_ca)
    try:
        revoked = revocations(ca)
        number = next_crl_number(ca)
        build_crl(
            ca.issuer(), revoked, this_update=NOW, next_update=NOW + dt.timedelta(1), number=number
        )
    except StorageError as exc:
        assert "\n" not in str(exc)
    except OtaguardError as exc:  # pragma: no cover - the assertion explains
        raise AssertionError(f"a CA state problem must be a StorageError: {exc!r}") from exc
