"""Device state files are checked against their schemas on load: a bad one is one clean error.

Every JSON file of a device directory (``device.json``, ``otp.json``,
``running.json``, ``crls.json``) is replaced by deeply nested JSON, by random
JSON, and by a valid file with one value anywhere replaced by random JSON;
loading the device (and reading its status, which uses every value) must then
either work or raise a ``StorageError`` -- never ``RecursionError``,
``KeyError``, ``TypeError`` or anything else that would be an internal error.
"""

from __future__ import annotations

import io
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import assert_one_line
from otaguard.device.bootloader import boot
from otaguard.device.install import install, running_of
from otaguard.device.model import MAIN
from otaguard.device.status import device_status
from otaguard.device.store import init_device, load_crls, load_running, open_device, save_running
from otaguard.errors import OtaguardError, StorageError
from otaguard.pki.crl_store import LearnedCrls

from .conftest import Kit

FILES = ("device.json", "otp.json", "running.json", "crls.json")

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


@pytest.fixture(scope="module")
def device_dir(tmp_path_factory: pytest.TempPathFactory, kit: Kit) -> Path:
    """A device running v1 on trial, with every state file present."""
    from otaguard.device.store import save_crls

    dev = tmp_path_factory.mktemp("state") / "dev"
    init_device(dev, kit.config(), [kit.key.public_key()])
    with open_device(dev) as device:
        install(device, {MAIN: io.BytesIO(kit.image(1))})
        save_running(dev, running_of(boot(device)))
    save_crls(dev, LearnedCrls())
    assert {p.name for p in dev.iterdir()} >= set(FILES)
    return dev


def _load_everything(dev: Path) -> None:
    """What the device commands read, used as they use it."""
    running = load_running(dev)
    load_crls(dev)
    with open_device(dev, writable=False) as device:
        device_status(device, running).to_json()


class _Swap:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.original = path.read_bytes()

    def __call__(self, data: bytes) -> None:
        self.path.write_bytes(data)

    def restore(self) -> None:
        self.path.write_bytes(self.original)


def _swapped(dev: Path, name: str) -> Iterator[_Swap]:
    swap = _Swap(dev / name)
    try:
        yield swap
    finally:
        swap.restore()


def _only_storage_errors(dev: Path) -> None:
    try:
        _load_everything(dev)
    except StorageError as exc:
        assert "\n" not in str(exc) and len(str(exc)) < 600, str(exc)
    except OtaguardError as exc:  # pragma: no cover - the assertion explains
        raise AssertionError(f"a state file problem must be a StorageError: {exc!r}") from exc


def test_the_fixture_loads(device_dir: Path) -> None:
    _load_everything(device_dir)


@pytest.mark.parametrize("name", FILES)
@pytest.mark.parametrize(
    "document",
    [
        "[" * 100_000 + "]" * 100_000,  # past the parser's recursion limit
        '{"a":' * 50_000 + "1" + "}" * 50_000,
        "[" * 900 + "]" * 900,  # parses, then too deep for repr and the schema
        '{"anchors": ' + "[" * 40 + "]" * 40 + "}",  # deep inside an otherwise fine object
    ],
    ids=["list-100k", "object-50k", "list-900", "nested-40"],
)
def test_deeply_nested_json_is_one_clean_error(device_dir: Path, name: str, document: str) -> None:
    for swap in _swapped(device_dir, name):
        swap(document.encode())
        with pytest.raises(StorageError, match=r"nested too deeply|bad value at"):
            _load_everything(device_dir)


@pytest.mark.parametrize("name", FILES)
def test_deep_nesting_through_the_cli_exits_2(
    cli, device_dir: Path, tmp_path: Path, name: str
) -> None:
    readers = ("status", "confirm", "reject", "boot")  # boot is a reset: it never reads RAM
    for command in readers[:-1] if name == "running.json" else readers:
        dev = shutil.copytree(device_dir, tmp_path / command)
        (dev / name).write_bytes(b"[" * 100_000 + b"]" * 100_000)
        result = cli("device", command, dev)
        assert result.code == 2 and "nested too deeply" in result.err, (command, result.err)
        assert_one_line(result.err)


@pytest.mark.parametrize(
    ("name", "edit", "message"),
    [
        ("device.json", {"format": 2}, r"\$\.format: 1 was expected"),
        ("device.json", {"trial_tries": "3"}, r"\$\.trial_tries: '3' is not of type 'integer'"),
        ("device.json", {"trial_tries": 9}, r"trial tries must be between 1 and 7"),
        ("device.json", {"trial_tries": 3.0}, r"\$\.trial_tries: 3\.0 is not of type 'integer'"),
        ("otp.json", {"anchors": ["00" * 31]}, r"\$\.anchors\[0\]: '0+' does not match"),
        ("otp.json", {"key_epoch": True}, r"\$\.key_epoch: True is not of type 'integer'"),
        ("running.json", {"slot": "c"}, r"\$\.slot: 'c' is not one of \['a', 'b'\]"),
        ("running.json", {"image_ids": "ab"}, r"\$\.image_ids: 'ab' is not of type 'array'"),
        ("crls.json", {"crls": ["%%%"]}, r"\$\.crls\[0\]: '%%%' does not match"),
    ],
)
def test_schema_errors_name_the_file_and_the_value(
    device_dir: Path, name: str, edit: dict[str, Any], message: str
) -> None:
    for swap in _swapped(device_dir, name):
        swap(json.dumps({**json.loads(swap.original), **edit}).encode())
        with pytest.raises(StorageError, match=message) as refused:
            _load_everything(device_dir)
        assert name in str(refused.value)


def test_nan_and_infinity_are_not_json(device_dir: Path) -> None:
    for swap in _swapped(device_dir, "device.json"):
        swap(swap.original.replace(b'"trial_tries": 3', b'"trial_tries": Infinity'))
        with pytest.raises(StorageError, match="not valid JSON"):
            _load_everything(device_dir)


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(name=st.sampled_from(FILES), value=json_values)
def test_random_json_in_place_of_a_state_file(device_dir: Path, name: str, value: object) -> None:
    for swap in _swapped(device_dir, name):
        swap(json.dumps(value).encode())
        _only_storage_errors(device_dir)


def _paths(value: object, here: tuple[object, ...] = ()) -> Iterator[tuple[object, ...]]:
    yield here
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, (*here, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _paths(item, (*here, index))


def _replace(value: Any, path: tuple[object, ...], new: object) -> Any:
    if not path:
        return new
    head, *rest = path
    copy = dict(value) if isinstance(value, dict) else list(value)
    copy[head] = _replace(value[head], tuple(rest), new)  # type: ignore[call-overload]
    return copy


@settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(name=st.sampled_from(FILES), data=st.data(), value=json_values)
def test_one_value_anywhere_replaced_by_random_json(
    device_dir: Path, name: str, data: st.DataObject, value: object
) -> None:
    for swap in _swapped(device_dir, name):
        original = json.loads(swap.original)
        path = data.draw(st.sampled_from(list(_paths(original))))
        swap(json.dumps(_replace(original, path, value)).encode())
        _only_storage_errors(device_dir)
