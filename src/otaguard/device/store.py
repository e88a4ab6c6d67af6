"""A simulated device on disk: one directory, opened for one command at a time.

::

    device.json    configuration (the boot ROM's constants): geometry, components,
                   trial tries, anti-rollback mode, region, counter backend
    flash.bin      the flash, mmap'ed: the file *is* the flash, so whatever was
                   written before a crash or a simulated power cut stays written
    otp.json       OTP: anchor hashes and counters, rewritten atomically per burn
    anchors/N.pem  trusted public keys and root certificates (ordinary storage;
                   believed only if they hash to an OTP anchor)
    crls.json      revocation lists the device has learned (secure storage)
    running.json   RAM: what the bootloader handed to the running firmware;
                   removed when the device loses power

The directory is created whole or not at all, and an existing device is
never overwritten. Commands take an exclusive lock on it; ``device status``
opens it read-only (a shared lock, the flash mapped read-only, nothing
written), so it works on a read-only directory. Every JSON file is checked
against its schema (``device/schemas.py``) before it is used.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import fcntl
import json
import mmap
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from otaguard._atomic import write_atomic
from otaguard._statefile import parse_state
from otaguard.crypto.keys import (
    PublicKey,
    certificate_key,
    check_supported,
    load_public_key,
    public_key_pem,
)
from otaguard.device import schemas
from otaguard.device.faults import OpClock
from otaguard.device.flash import Flash
from otaguard.device.fuses import Otp
from otaguard.device.geometry import Geometry
from otaguard.device.install import Running
from otaguard.device.model import Component, Device, DeviceConfig, fresh_counters
from otaguard.device.trust import DeviceTrust, anchor_of, split_anchors
from otaguard.errors import KeyLoadError, OtaguardError, StorageError, UsageError
from otaguard.pki.crl_store import LearnedCrls

FORMAT = 1
MAX_FILE = 1 << 20


def parse_anchor(data: bytes) -> PublicKey | x509.Certificate:
    """A trusted-key file: a certificate (a root: PKI path) or a public/private key."""
    if b"-----BEGIN CERTIFICATE-----" in data[:4096]:
        try:
            cert = x509.load_pem_x509_certificate(data)
        except ValueError as exc:
            raise KeyLoadError("not a valid X.509 certificate") from exc
    else:
        try:
            cert = x509.load_der_x509_certificate(data)
        except ValueError:
            return load_public_key(data)
    certificate_key(cert)
    return cert


def _anchor_pem(item: PublicKey | x509.Certificate) -> bytes:
    if isinstance(item, x509.Certificate):
        return item.public_bytes(Encoding.PEM)
    return public_key_pem(item)


def _read(path: Path, what: str) -> bytes:
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_FILE + 1)
    except FileNotFoundError:
        raise StorageError(f"{path.parent} is not a device directory (no {path.name})") from None
    except OSError as exc:
        raise StorageError(f"cannot read {what} {path}: {exc.strerror or exc}") from exc
    if len(data) > MAX_FILE:
        raise StorageError(f"{what} {path} is too large")
    return data


def _json(path: Path, what: str, schema: dict[str, object]) -> dict[str, object]:
    return parse_state(_read(path, what), schema, f"{what} {path}")


def init_device(
    path: Path,
    config: DeviceConfig,
    anchors: Sequence[PublicKey | x509.Certificate],
    *,
    fuse_bits: int = 64,
    counter_backend: str = "fuses",
) -> None:
    """Manufacture a device: blank flash, anchors burned into OTP, counters at zero."""
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise UsageError(f"{path} already exists and is not an empty directory")
    if not anchors:
        raise UsageError("a device needs at least one trusted key")
    trust = DeviceTrust(frozenset(anchor_of(a) for a in anchors))
    counters = fresh_counters(config, fuse_bits, counter_backend)
    otp = Otp(tuple(sorted(trust.anchors)), counters)
    parent = path.parent if str(path.parent) else Path(".")
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=parent))
    except OSError as exc:
        raise StorageError(f"cannot create {path}: {exc.strerror or exc}") from exc
    try:
        (tmp / "anchors").mkdir()
        for index, item in enumerate(anchors):
            write_atomic(tmp / "anchors" / f"{index}.pem", _anchor_pem(item))
        write_atomic(tmp / "device.json", _config_json(config, counter_backend).encode())
        write_atomic(tmp / "otp.json", json.dumps(otp.to_json()).encode())
        size = config.layout.size
        write_atomic(tmp / "flash.bin", bytes([config.geometry.erased]) * size)
        with open_device(tmp) as device:
            device.provision()
        if path.exists():
            path.rmdir()
        tmp.rename(path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _config_json(config: DeviceConfig, counter_backend: str) -> str:
    return json.dumps(
        {
            "format": FORMAT,
            "geometry": config.geometry.to_json(),
            "components": [
                {"name": c.name, "hardware_id": c.hardware_id} for c in config.components
            ],
            "trial_tries": config.trial_tries,
            "strict_counter": config.strict_counter,
            "region": config.region,
            "counter_backend": counter_backend,
        },
        indent=2,
    )


def _load_config(path: Path) -> DeviceConfig:
    file = path / "device.json"
    data: dict[str, Any] = _json(file, "device configuration", schemas.DEVICE)
    try:
        return DeviceConfig(
            Geometry.from_json(data["geometry"]),
            tuple(Component(c["name"], c["hardware_id"]) for c in data["components"]),
            trial_tries=data["trial_tries"],
            strict_counter=data["strict_counter"],
            region=data.get("region"),
        )
    except OtaguardError as exc:  # the schema holds; a value's own rule does not
        raise StorageError(f"device configuration {file}: {exc}") from exc


def _load_anchors(path: Path) -> list[PublicKey | x509.Certificate]:
    items = []
    for file in sorted((path / "anchors").glob("*.pem")):
        try:
            items.append(parse_anchor(_read(file, "trusted key")))
        except KeyLoadError:
            continue  # storage is not trusted; a damaged file just anchors nothing
    return items


def load_crls(path: Path) -> LearnedCrls:
    file = path / "crls.json"
    if not file.exists():
        return LearnedCrls()
    data: dict[str, Any] = _json(file, "learned CRLs", schemas.CRLS)
    try:
        return LearnedCrls(tuple(base64.b64decode(d, validate=True) for d in data["crls"]))
    except binascii.Error as exc:
        raise StorageError(f"learned CRLs {file}: an entry is not base64") from exc


def save_crls(path: Path, store: LearnedCrls) -> None:
    body = {"crls": [base64.b64encode(d).decode() for d in store.crls]}
    write_atomic(path / "crls.json", json.dumps(body).encode())


def learn_crl_file(path: Path, data: bytes, issuer_chain: Sequence[x509.Certificate]) -> int:
    """Store a CRL signed under one of the device's anchored roots; how many it now holds.

    Refused unless the CRL verifies (``pki.crl_store.learn_crl``): a device without
    anchored roots has nothing to check one against.
    """
    from otaguard.pki.crl_store import learn_crl

    with open_device(path) as dev:
        roots = dev.trust.anchored_roots()
        if not roots:
            raise UsageError("this device anchors no root certificate: CRLs do not apply")
        store = learn_crl(load_crls(path), data, roots=roots, issuer_chain=list(issuer_chain))
        save_crls(path, store)
    return len(store.crls)


def _load_otp(path: Path) -> Otp:
    file = path / "otp.json"
    try:
        return Otp.from_json(_json(file, "OTP", schemas.OTP))
    except UsageError as exc:  # the schema holds; a value's own rule does not
        raise StorageError(f"OTP {file}: {exc}") from exc


def _read_only(path: Path) -> None:
    raise RuntimeError(f"{path} was opened read-only: nothing may be burned or written")


@contextlib.contextmanager
def open_device(path: Path, *, writable: bool = True) -> Iterator[Device]:
    """Open the device in ``path`` (locked) for one command; flash writes go to the file.

    ``writable=False`` opens it for reading only: a shared lock, the flash
    mapped read-only (a write raises ``TypeError``), OTP changes refused with
    ``RuntimeError`` -- both bugs in the caller, never reached by a reader.
    """
    config = _load_config(path)
    otp = _load_otp(path)
    if otp.counters.names() != set(config.names):
        raise StorageError(f"{path}: OTP counters do not match the components")
    keys, roots = split_anchors(_load_anchors(path))
    keys += tuple(check_supported(r.public_key()) for r in roots)
    try:
        crls = tuple(load_crls(path).parsed())
    except ValueError as exc:
        raise StorageError(f"{path}: unreadable CRL store") from exc
    trust = DeviceTrust(otp.live_anchors(), keys, roots, crls, config.region)
    otp_file = path / "otp.json"

    def persist() -> None:
        if not writable:
            _read_only(path)
        write_atomic(otp_file, json.dumps(otp.to_json()).encode())

    otp.counters.watch(persist)
    try:
        lock = os.open(path / "device.json", os.O_RDONLY)
        fd = os.open(path / "flash.bin", os.O_RDWR if writable else os.O_RDONLY)
    except OSError as exc:
        raise StorageError(f"cannot open {path}: {exc.strerror or exc}") from exc
    try:
        fcntl.flock(lock, fcntl.LOCK_EX if writable else fcntl.LOCK_SH)
        if os.fstat(fd).st_size != config.layout.size:
            raise StorageError(f"{path}/flash.bin does not match the device geometry")
        access = mmap.ACCESS_WRITE if writable else mmap.ACCESS_READ
        buffer = mmap.mmap(fd, config.layout.size, access=access)
        try:
            yield Device(config, Flash(config.geometry, buffer, OpClock()), otp, trust)
        finally:
            if writable:
                buffer.flush()
            buffer.close()
    finally:
        os.close(fd)
        os.close(lock)


def load_running(path: Path) -> Running | None:
    file = path / "running.json"
    if not file.exists():
        return None
    data: dict[str, Any] = _json(file, "running state", schemas.RUNNING)
    return Running(data["slot"], tuple(data["image_ids"]), data["trial"])


def save_running(path: Path, running: Running | None) -> None:
    file = path / "running.json"
    if running is None:
        with contextlib.suppress(FileNotFoundError):
            file.unlink()
        return
    body = {"slot": running.slot, "image_ids": list(running.image_ids), "trial": running.trial}
    write_atomic(file, json.dumps(body).encode())


def rotate_anchor(path: Path, message: bytes) -> tuple[str, int]:
    """Apply a root rotation message (``pki/anchor.py``) to the device in ``path``.

    The message must be signed by a root anchored for the current key epoch;
    the new root's certificate goes to storage first (harmless on its own:
    storage is not trusted), then its hash is burned into a free OTP slot and
    the key epoch moves forward, which retires every older anchor. Returns
    the new root's subject and the new epoch.

    Retiring the old anchors would leave firmware signed only under the old
    root unbootable, so the rotation is refused unless the confirmed, running
    firmware already verifies under the new root (ship it first with a chain
    through the cross-certificate, which the old anchor also accepts).
    """
    from dataclasses import replace

    from otaguard.device.bootloader import verify_set
    from otaguard.errors import AnchorRotationError, RejectedError
    from otaguard.pki.anchor import Anchor, AnchorState, apply_rotation

    running = load_running(path)

    with open_device(path) as device:  # holds the device lock
        otp = device.otp
        roots = [a for a in _load_anchors(path) if isinstance(a, x509.Certificate)]
        state = AnchorState(
            otp.key_epoch,
            tuple(Anchor(h, e) for h, e in zip(otp.anchors, otp.epochs, strict=True)),
            tuple(r.public_bytes(Encoding.DER) for r in roots),
        )
        new = apply_rotation(state, message)
        anchor = new.anchors[-1]
        root = x509.load_der_x509_certificate(new.roots[-1])
        if running is not None:
            if running.trial:
                raise AnchorRotationError("confirm the running trial firmware before a rotation")
            current = device.trust
            device.trust = replace(
                current,
                anchors=frozenset({anchor.key_hash}),
                roots=(*current.roots, root),
                keys=(*current.keys, check_supported(root.public_key())),
            )
            try:
                verify_set(device, running.slot)
            except RejectedError as exc:
                raise AnchorRotationError(
                    f"the running firmware (slot {running.slot}) does not verify under the new "
                    f"root ({exc.check}); install and confirm firmware whose chain reaches it first"
                ) from exc
            finally:
                device.trust = current
        index = len(list((path / "anchors").glob("*.pem")))
        write_atomic(path / "anchors" / f"{index}.pem", _anchor_pem(root))
        otp.burn_anchor(anchor.key_hash, anchor.epoch)
        write_atomic(path / "otp.json", json.dumps(otp.to_json()).encode())
        return root.subject.rfc4514_string(), anchor.epoch
