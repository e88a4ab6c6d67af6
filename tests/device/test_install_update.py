"""``install_update``: full images or one delta; an unconfirmed update is never silently lost."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from helpers import assert_one_line
from helpers_delta import make_delta
from otaguard.device.bootloader import boot
from otaguard.device.install import (
    StagedUpdateError,
    install,
    install_delta,
    install_update,
    is_delta,
    running_of,
)
from otaguard.device.model import MAIN, Component
from otaguard.errors import UsageError

from .conftest import HW, Kit, init_device_dir


def test_is_delta_reads_the_claimed_kind_and_rewinds(kit: Kit) -> None:
    delta = io.BytesIO(make_delta(kit.key, kit.image(1), kit.image(2))[0])
    assert is_delta(delta) and delta.tell() == 0
    full = io.BytesIO(kit.image(1))
    assert not is_delta(full) and full.tell() == 0
    garbage = io.BytesIO(b"not an image at all")
    assert not is_delta(garbage) and garbage.tell() == 0  # the full-image path reports it


def test_install_update_routes_a_delta_and_full_images(kit: Kit) -> None:
    device = kit.device()
    running = kit.updated(device, 1)
    delta = make_delta(kit.key, kit.image(1), kit.image(2))[0]
    result = install_update(device, {MAIN: io.BytesIO(delta)}, running=running)
    assert result.images[0].metadata.version == "2.0.0" and result.replaced == ()
    assert boot(device).images[0].metadata.version == "2.0.0"
    full = kit.device()
    assert install_update(full, kit.files(kit.image(1))).images[0].metadata.version == "1.0.0"


def test_a_delta_is_never_part_of_a_set(kit: Kit) -> None:
    device = kit.device(components=(Component(MAIN, HW), Component("radio", HW)))
    delta = make_delta(kit.key, kit.image(1), kit.image(2))[0]
    device.arm()
    with pytest.raises(UsageError, match="on its own"):
        install_update(
            device, {MAIN: io.BytesIO(delta), "radio": io.BytesIO(kit.image(1))}, running=None
        )
    assert device.clock.count == 0


def _staged(kit: Kit):
    """A device confirmed on v1 that has v2 installed and not booted yet."""
    device = kit.device()
    running = kit.updated(device, 1)
    install(device, kit.files(kit.image(2)), running=running)
    return device, running


def test_second_install_over_a_staged_update_is_refused_before_any_write(kit: Kit) -> None:
    device, running = _staged(kit)
    before = device.snapshot()
    device.arm()
    with pytest.raises(StagedUpdateError, match=r"slot b .*main 2\.0\.0; staged") as refused:
        install(device, kit.files(kit.image(3)), running=running)
    assert refused.value.exit_code == 2  # a conflict with the device's state, not a rejection
    assert device.clock.count == 0 and device.snapshot() == before
    delta = make_delta(kit.key, kit.image(1), kit.image(3))[0]
    with pytest.raises(StagedUpdateError):
        install_delta(device, io.BytesIO(delta), running=running)
    assert device.clock.count == 0 and device.snapshot() == before
    assert boot(device).images[0].metadata.version == "2.0.0"  # the staged update is intact


def test_replace_staged_overwrites_it_and_says_so(kit: Kit) -> None:
    device, running = _staged(kit)
    result = install(device, kit.files(kit.image(3)), running=running, replace_staged=True)
    assert result.slot == "b" and result.replaced == ((MAIN, "2.0.0"),)
    assert boot(device).images[0].metadata.version == "3.0.0"


def test_a_trial_interrupted_by_power_loss_is_not_replaced_either(kit: Kit) -> None:
    device, _running = _staged(kit)
    boot(device)  # v2 on trial; then the power fails: nothing runs
    with pytest.raises(StagedUpdateError, match="on trial, 2 boot"):
        install(device, kit.files(kit.image(3)), running=None)


def test_a_reverted_or_confirmed_update_is_no_obstacle(kit: Kit) -> None:
    device, running = _staged(kit)
    for _ in range(device.config.trial_tries + 1):  # never confirmed: reverts to v1
        after = running_of(boot(device))
    assert after is not None and after.slot == running.slot
    assert install(device, kit.files(kit.image(3)), running=after).replaced == ()


def test_cli_refuses_a_second_install_unless_told(cli, tmp_path: Path, files) -> None:
    dev = init_device_dir(cli, tmp_path / "dev", files)
    for step in (("install", files["v1"]), ("boot",), ("confirm",), ("install", files["v2"])):
        assert cli("device", step[0], dev, *step[1:]).code == 0
    flash = (dev / "flash.bin").read_bytes()
    again = cli("device", "install", dev, files["v3"])
    assert again.code == 2 and "not yet confirmed (main 2.0.0" in again.err
    assert "--replace-staged" in again.err
    assert_one_line(again.err)
    assert (dev / "flash.bin").read_bytes() == flash
    forced = cli("device", "install", dev, files["v3"], "--replace-staged")
    assert forced.code == 0
    assert forced.out.startswith("replaced the unconfirmed update in slot b (main 2.0.0)\n")
    assert "installed 3.0.0" in forced.out
    json_forced = cli("device", "install", dev, files["v3"], "--replace-staged", "--json").json
    assert json_forced["replaced_staged"] == {"main": "3.0.0"}
    assert cli("device", "boot", dev, "--json").json["version"] == "3.0.0"


def test_images_by_component() -> None:
    from otaguard.device.install import images_by_component

    names = (MAIN, "radio")
    assert images_by_component(names, ["a.img", "radio=r.img"]) == {MAIN: "a.img", "radio": "r.img"}
    # NAME=PATH only for a component the device has: anything else is a path for main
    assert images_by_component(names, ["modem=x.img"]) == {MAIN: "modem=x.img"}
    assert images_by_component(names, ["main=m.img"]) == {MAIN: "m.img"}
    with pytest.raises(UsageError, match="two images for component main"):
        images_by_component(names, ["a.img", "main=b.img"])
    with pytest.raises(UsageError, match="two images for component radio"):
        images_by_component(names, ["radio=1.img", "radio=2.img"])
