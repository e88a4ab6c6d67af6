"""``otaguard.device.manufacture``: what ``device init`` decides, as a library."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import cached_key
from otaguard.crypto.keys import KeyType, public_key_pem
from otaguard.device.manufacture import (
    components_of,
    geometry_of,
    manufacture,
    read_anchors,
)
from otaguard.device.model import DeviceConfig
from otaguard.device.store import learn_crl_file
from otaguard.errors import KeyLoadError, UsageError


def test_geometry_overrides() -> None:
    plain = geometry_of("nor-4k", erased_value=None, slot_size=None)
    zeroed = geometry_of("nor-4k", erased_value=0x00, slot_size=None)
    assert plain.erased == 0xFF and zeroed.erased == 0x00
    assert geometry_of("nor-4k", erased_value=None, slot_size=1 << 20).slot_size == 1 << 20


def test_components_main_first_and_name_hwid_pairs() -> None:
    found = components_of("acme-ecu", ["radio=acme-radio"])
    assert [(c.name, c.hardware_id) for c in found] == [
        ("main", "acme-ecu"),
        ("radio", "acme-radio"),
    ]
    with pytest.raises(UsageError, match="expected NAME=HWID"):
        components_of("acme-ecu", ["radio"])


def test_anchors_are_named_when_unusable(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pem"
    bad.write_bytes(b"not a key")
    with pytest.raises(KeyLoadError, match=r"bad\.pem"):
        read_anchors([str(bad)])


def test_manufacture_then_a_crl_needs_an_anchored_root(tmp_path: Path) -> None:
    key = tmp_path / "k.pub"
    key.write_bytes(public_key_pem(cached_key(KeyType.ED25519).public_key()))
    config = DeviceConfig(
        geometry_of("nor-4k", erased_value=None, slot_size=None), components_of("hw", [])
    )
    made = manufacture(tmp_path / "dev", config, [str(key)], fuse_bits=64, counter_backend="fuses")
    report = made.to_json()
    assert report["anchors"] == 1 and report["components"] == {"main": "hw"}
    assert report["fuse_bits"] == 64 and report["counter_backend"] == "fuses"
    with pytest.raises(UsageError, match="already exists"):  # all or nothing, never twice
        manufacture(tmp_path / "dev", config, [str(key)], fuse_bits=64, counter_backend="fuses")
    with pytest.raises(UsageError, match="anchors no root certificate"):
        learn_crl_file(tmp_path / "dev", b"anything", [])
