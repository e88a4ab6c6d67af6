"""Install, boot, confirm, revert; rollback, forgery, recovery, fuse budget, PKI anchors."""

from __future__ import annotations

import io

import pytest

from helpers_pki import DAY, HW, NOW, der, make_pki, sign_image
from otaguard.crypto.keys import KeyType, key_id_bytes
from otaguard.device.bootctl import BootRecord, SlotState
from otaguard.device.bootloader import boot
from otaguard.device.geometry import PRESETS
from otaguard.device.install import confirm, install, reject, running_of
from otaguard.device.model import MAIN, Device
from otaguard.device.slots import write_image
from otaguard.device.trust import DeviceTrust
from otaguard.errors import (
    FuseBudgetError,
    HardwareIdError,
    RevokedError,
    SecurityCounterError,
    SlotSizeError,
    UnknownKeyError,
    UsageError,
)
from otaguard.pki.issue import Revocation, build_crl


def flash_raw(device: Device, letter: str, image: bytes) -> None:
    """An attacker with physical access writes a slot directly."""
    region = device.config.layout.slot(letter, MAIN)
    write_image(device.flash, region, io.BytesIO(image), len(image))


def test_fresh_device_is_in_recovery(kit) -> None:
    result = boot(kit.device())
    assert result.state == "recovery" and result.slot is None


def test_update_trial_confirm_and_fuses(kit) -> None:
    device = kit.device()
    result = install(device, kit.files(kit.image(1)))
    assert result.slot == "a" and result.tries == 3 and result.flash_ops > 0
    booted = boot(device)
    assert (booted.state, booted.slot, booted.tries_left) == ("trial", "a", 2)
    assert device.otp.counters.value(MAIN) == 0  # a trial never raises the fuses
    done = confirm(device, running_of(booted))
    assert not done.already_confirmed and device.otp.counters.value(MAIN) == 1
    again = boot(device)
    assert again.state == "confirmed" and again.flash_ops == 0  # a plain boot writes nothing
    install(device, kit.files(kit.image(3)), running=running_of(again))
    booted = boot(device)
    assert booted.slot == "b" and booted.main.metadata.security_counter == 3  # type: ignore[union-attr]
    confirm(device, running_of(booted))
    assert device.otp.counters.value(MAIN) == 3


def test_no_confirm_reverts_after_the_tries(kit) -> None:
    device = kit.device(trial_tries=2)
    running = kit.updated(device, 1)
    install(device, kit.files(kit.image(2)), running=running)
    seen = [boot(device) for _ in range(4)]
    assert [(r.slot, r.state) for r in seen] == [
        ("b", "trial"),
        ("b", "trial"),
        ("a", "confirmed"),
        ("a", "confirmed"),
    ]
    assert seen[2].rejected[0][:2] == ("b", "tries-exhausted")
    assert device.otp.counters.value(MAIN) == 1


def test_reject_reverts_at_once(kit) -> None:
    device = kit.device()
    running = kit.updated(device, 1)
    install(device, kit.files(kit.image(2)), running=running)
    trial = running_of(boot(device))
    with pytest.raises(UsageError, match="on trial"):
        install(device, kit.files(kit.image(3)), running=trial)
    assert reject(device, trial) == "b"
    assert boot(device).slot == "a"
    with pytest.raises(UsageError, match="already confirmed"):
        reject(device, running_of(boot(device)))


def test_confirm_needs_the_booted_image(kit) -> None:
    device = kit.device()
    with pytest.raises(UsageError, match="boot it first"):
        confirm(device, None)
    running = kit.updated(device, 1)
    install(device, kit.files(kit.image(2)), running=running)
    trial = running_of(boot(device))
    flash_raw(device, "b", kit.image(4))  # swapped under the running firmware
    with pytest.raises(UsageError, match="no longer holds"):
        confirm(device, trial)
    assert device.otp.counters.value(MAIN) == 1


def test_rollback_is_refused_at_install_and_at_boot(kit) -> None:
    device = kit.device()
    running = kit.updated(device, 1, 2)  # confirmed on v2: fuses at 2
    before = device.snapshot()
    device.arm()
    with pytest.raises(SecurityCounterError, match="rollback"):
        install(device, kit.files(kit.image(1)), running=running)
    assert device.clock.count == 0 and device.snapshot() == before  # refused before writing
    # Physical access: v1 written straight into the inactive slot, boot control forged.
    flash_raw(device, "a", kit.image(1))
    record = BootRecord(0, a=SlotState(15, 0, True, False), b=SlotState(14, 0, True, False))
    device.bootctl.write(record)
    result = boot(device)
    assert result.slot == "b" and result.main.metadata.version == "2.0.0"  # type: ignore[union-attr]
    assert result.rejected[0][:2] == ("a", "security-counter")
    # Same image counter is fine (reinstall within the epoch), strict mode refuses it.
    install(device, kit.files(kit.image(2, version="2.0.1")), running=running_of(result))
    strict = kit.device(strict_counter=True)
    running = kit.updated(strict, 2)
    with pytest.raises(SecurityCounterError, match="not above"):
        install(strict, kit.files(kit.image(2, version="2.0.1")), running=running)
    assert boot(strict).state == "confirmed"  # boot itself is always >=


def test_forged_and_tampered_images_never_boot(kit) -> None:
    from helpers import cached_key

    device = kit.device()
    running = kit.updated(device, 1)
    forged = kit.image(5, keys=[cached_key(KeyType.ED25519, 7)])
    with pytest.raises(UnknownKeyError):
        install(device, kit.files(forged), running=running)
    flash_raw(device, "b", forged)
    device.bootctl.write(
        BootRecord(0, a=SlotState(14, 0, True, False), b=SlotState(15, 0, True, False))
    )
    result = boot(device)
    assert result.slot == "a" and result.rejected[0][:2] == ("b", "unknown-key")
    tampered = bytearray(kit.image(1))
    tampered[len(tampered) // 2] ^= 1
    flash_raw(device, "b", bytes(tampered))
    device.bootctl.write(
        BootRecord(0, a=SlotState(14, 0, True, False), b=SlotState(15, 1, False, False))
    )
    result = boot(device)
    assert result.slot == "a" and result.rejected[0][:2] == ("b", "digest")
    wrong_hw = kit.image(2, hardware_ids=("acme-ecu-v3",))
    with pytest.raises(HardwareIdError):
        install(device, kit.files(wrong_hw), running=running_of(result))


def test_both_slots_corrupt_is_recovery_then_install_repairs(kit) -> None:
    device = kit.device()
    kit.updated(device, 1, 2)
    for letter in "ab":
        region = device.config.layout.slot(letter, MAIN)
        device.flash.erase_sector(region.offset // device.config.geometry.sector_size)
    result = boot(device)
    assert result.state == "recovery" and {r[0] for r in result.rejected} == {"a", "b"}
    assert boot(device).state == "recovery"  # stays there, never runs anything
    install(device, kit.files(kit.image(3)))  # recovery: an install from outside
    assert boot(device).main.metadata.version == "3.0.0"  # type: ignore[union-attr]


def test_both_metadata_copies_torn_rebuilds_from_verified_slots(kit) -> None:
    device = kit.device()
    running = kit.updated(device, 1, 2)
    install(device, kit.files(kit.image(3)), running=running)  # v3 staged as trial in a
    # Both copies bad: outside corruption (a power cut can only damage one, see bootctl).
    raw = bytearray(device.flash.snapshot())
    for copy in device.config.layout.meta_copies:
        raw[copy.offset + 10] ^= 0xFF
    device.flash.restore(bytes(raw))
    assert device.bootctl.copies() == (None, None)
    result = boot(device)
    assert result.rebuilt and result.state == "confirmed"
    assert result.main.metadata.version == "2.0.0"  # type: ignore[union-attr]  # the one the fuses belong to
    assert device.otp.counters.value(MAIN) == 2  # the trial was not made permanent


def test_fuse_budget_refused_up_front_and_at_boot(kit) -> None:
    device = kit.device(fuse_bits=4)
    running = kit.updated(device, 4)
    assert device.otp.counters.value(MAIN) == 4
    device.arm()
    with pytest.raises(FuseBudgetError, match="0 left"):
        install(device, kit.files(kit.image(5)), running=running)
    assert device.clock.count == 0
    flash_raw(device, "b", kit.image(5))
    device.bootctl.write(
        BootRecord(0, a=SlotState(14, 0, True, False), b=SlotState(15, 3, False, False))
    )
    result = boot(device)
    assert result.slot == "a" and result.rejected[0][1] == "fuse-budget"


def test_image_larger_than_the_slot_is_refused(kit) -> None:
    device = kit.device()
    big = kit.image(1, payload=b"x" * (40 * 1024))
    with pytest.raises(SlotSizeError):
        install(device, kit.files(big))


def test_confirm_cut_after_its_record_leaves_fuses_lagging_and_boot_fixes_them(kit) -> None:
    from otaguard.device.faults import FaultPlan, PowerLoss

    device = kit.device()
    running = kit.updated(device, 1)
    install(device, kit.files(kit.image(4)), running=running)
    trial = running_of(boot(device))
    device.arm(FaultPlan(cut_before=3))  # record erase + program landed, one fuse of three
    with pytest.raises(PowerLoss):
        confirm(device, trial)
    assert device.otp.counters.value(MAIN) == 2
    device.arm()
    result = boot(device)
    assert result.state == "confirmed" and result.main.metadata.security_counter == 4  # type: ignore[union-attr]
    assert device.otp.counters.value(MAIN) == 4


@pytest.mark.parametrize("backend", ["fuses", "rpmb"])
def test_counter_backends_behave_the_same(kit, backend: str) -> None:
    device = kit.device(counter_backend=backend)
    kit.updated(device, 1, 3)
    assert device.otp.counters.value(MAIN) == 3 and device.otp.counters.kind == backend


@pytest.mark.parametrize("name", sorted(PRESETS))
@pytest.mark.parametrize("erased", [0xFF, 0x00])
def test_every_geometry_updates(kit, name: str, erased: int) -> None:
    device = kit.device(PRESETS[name].with_erased(erased))
    running = kit.updated(device, 1, 2)
    assert running.slot == "b" and device.otp.counters.value(MAIN) == 2


# --- a root CA key hash as the OTP anchor: images signed under a certificate chain ---


def _pki_device(kit, pki, *, region: str | None = "eu", crls=()) -> Device:
    root = pki.root.cert
    trust = DeviceTrust(
        frozenset({key_id_bytes(root.public_key())}), roots=(root,), crls=crls, region=region
    )
    return Device.in_memory(kit.config(region=region), trust)


def test_root_ca_anchor_accepts_chained_images(kit) -> None:
    pki = make_pki()
    image = sign_image(pki.leaf.signer, der(pki.leaf.cert, pki.inter.cert))
    device = _pki_device(kit, pki)
    install(device, kit.files(image))
    result = boot(device)
    assert result.state == "trial" and result.main.metadata.hardware_ids == (HW,)  # type: ignore[union-attr]
    # Outside the chain's region: refused.
    other = _pki_device(kit, pki, region="us")
    with pytest.raises(Exception, match="region") as refused:
        install(other, kit.files(image))
    assert refused.value.check == "constraint"  # type: ignore[attr-defined]
    # A chain to a root that is not anchored in OTP: refused.
    stranger = make_pki(root_index=11)
    alien = sign_image(stranger.leaf.signer, der(stranger.leaf.cert, stranger.inter.cert))
    with pytest.raises(Exception, match="root") as refused:
        install(device, kit.files(alien))
    assert refused.value.check == "chain"  # type: ignore[attr-defined]


def test_learned_crl_revokes_the_signer_at_boot(kit) -> None:
    pki = make_pki()
    image = sign_image(pki.leaf.signer, der(pki.leaf.cert, pki.inter.cert))
    crl = build_crl(
        pki.inter,
        [Revocation(pki.leaf.cert.serial_number, NOW, "key-compromise")],
        this_update=NOW,
        next_update=NOW + DAY,
        number=1,
    )
    device = _pki_device(kit, pki)
    install(device, kit.files(image))
    revoked = _pki_device(kit, pki, crls=(crl,))
    revoked.flash.restore(device.flash.snapshot())
    result = boot(revoked)
    assert result.state == "recovery" and result.rejected[0][1] == "revoked"
    with pytest.raises(RevokedError):
        install(revoked, kit.files(image))


def test_stored_key_that_does_not_hash_to_an_anchor_is_ignored(kit) -> None:
    from helpers import cached_key

    attacker = cached_key(KeyType.ED25519, 7).public_key()
    trust = DeviceTrust(kit.trust.anchors, keys=(attacker,))
    device = Device.in_memory(kit.config(), trust)
    with pytest.raises(UnknownKeyError):
        install(device, kit.files(kit.image(5, keys=[cached_key(KeyType.ED25519, 7)])))
