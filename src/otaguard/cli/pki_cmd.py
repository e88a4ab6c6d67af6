"""``otaguard pki``: the certificate hierarchy, revocation and the compromise drill."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from otaguard.cli import audit_log, params
from otaguard.cli.common import one_stdout, passphrase_from_env, to_stdout
from otaguard.crypto.keys import KeyType
from otaguard.pki import ca as pki_ca
from otaguard.pki.issue import REVOCATION_REASONS


def _new_key(key: str | None, algorithm: str, passphrase_env: str | None) -> pki_ca.NewKey:
    return pki_ca.new_key(key, KeyType(algorithm), passphrase_from_env(passphrase_env))


def _ca(ca_dir: str, passphrase_env: str | None) -> Any:
    return pki_ca.open_ca(Path(ca_dir), passphrase_from_env(passphrase_env))


def _emit(as_json: bool, report: dict[str, Any], line: str, out: str | None = None) -> None:
    """The report (``--json``) or the line; on stderr when the output went to stdout."""
    text = json.dumps(report, indent=2, sort_keys=True) if as_json else line
    click.echo(text, err=out is not None and to_stdout(out))


@click.group()
def pki() -> None:
    """Offline root, regional intermediates, short-lived signers, revocation."""


@pki.command("init-root")
@params.OUT_DIR
@click.option("--subject", required=True, help='RFC 4514 name, e.g. "CN=Acme Root CA,O=Acme".')
@params.new_key_options("ecdsa-p384")
@click.option("--years", default=20, show_default=True, type=click.IntRange(1, 50))
@click.option(
    "--path-length",
    default=None,
    type=click.IntRange(0, 5),
    help="Limit the CA levels below the root (default: unlimited).",
)
@params.JSON
@audit_log.audited(audit_log.certificate_issued("root"))
def init_root(
    out_dir: str,
    subject: str,
    key: str | None,
    algorithm: str,
    passphrase_env: str | None,
    years: int,
    path_length: int | None,
    as_json: bool,
) -> None:
    """Create a self-signed root CA (keep it offline)."""
    new = _new_key(key, algorithm, passphrase_env)
    cert = pki_ca.init_root(
        Path(out_dir), subject, new, years=years, path_length=path_length, now=pki_ca.utc_now()
    )
    _emit(
        as_json,
        pki_ca.certificate_report("root", cert, dir=out_dir),
        f"root CA {cert.subject.rfc4514_string()} (serial {cert.serial_number:X}) in {out_dir}",
    )


@pki.command("issue-intermediate")
@params.CA_DIR
@click.option("--ca-passphrase-env", metavar="VAR", help="Passphrase of the issuing CA's key.")
@params.OUT_DIR
@click.option("--subject", default=None, help="Default: CN=<regions> Intermediate CA.")
@click.option("--region", "regions", multiple=True, help="Region it may sign for (repeatable).")
@click.option("--hardware-id", "hardware_ids", multiple=True, help="Hardware id it may sign for.")
@click.option(
    "--purpose",
    type=click.Choice(["code-signing", "device-identity"]),
    default="code-signing",
    show_default=True,
)
@params.new_key_options("ecdsa-p384")
@click.option(
    "--years",
    default=None,
    type=click.IntRange(1, 30),
    help="Validity (default: 5 for code signing, 15 for a device CA).",
)
@click.option("--path-length", default=0, show_default=True, type=click.IntRange(0, 5))
@params.JSON
@audit_log.audited(audit_log.certificate_issued("intermediate"))
def issue_intermediate(
    ca_dir: str,
    ca_passphrase_env: str | None,
    out_dir: str,
    subject: str | None,
    regions: tuple[str, ...],
    hardware_ids: tuple[str, ...],
    purpose: str,
    key: str | None,
    algorithm: str,
    passphrase_env: str | None,
    years: int | None,
    path_length: int,
    as_json: bool,
) -> None:
    """Issue a regional intermediate CA (constraints travel in the certificate)."""
    ca, issuer = _ca(ca_dir, ca_passphrase_env)
    new = _new_key(key, algorithm, passphrase_env)
    cert = pki_ca.issue_intermediate(
        ca,
        issuer,
        Path(out_dir),
        new,
        subject=subject,
        regions=regions,
        hardware_ids=hardware_ids,
        purpose=purpose,
        years=years,
        path_length=path_length,
        now=pki_ca.utc_now(),
    )
    report = pki_ca.certificate_report("intermediate", cert, dir=out_dir)
    report["constraints"] = pki_ca.constraints_report(purpose, regions, hardware_ids)
    _emit(
        as_json,
        report,
        f"intermediate CA {cert.subject.rfc4514_string()} "
        f"(serial {cert.serial_number:X}) in {out_dir}",
    )


@pki.command("issue-signer")
@params.CA_DIR
@click.option("--ca-passphrase-env", metavar="VAR", help="Passphrase of the issuing CA's key.")
@params.OUT_DIR
@click.option("--name", required=True, help="Signer name, e.g. release-2026q4.")
@click.option("--region", "regions", multiple=True, help="Narrow the regions (repeatable).")
@click.option("--hardware-id", "hardware_ids", multiple=True, help="Narrow the hardware ids.")
@params.new_key_options("ed25519")
@click.option("--days", default=90, show_default=True, type=click.IntRange(1, 825))
@params.JSON
@audit_log.audited(audit_log.certificate_issued("signer"))
def issue_signer(
    ca_dir: str,
    ca_passphrase_env: str | None,
    out_dir: str,
    name: str,
    regions: tuple[str, ...],
    hardware_ids: tuple[str, ...],
    key: str | None,
    algorithm: str,
    passphrase_env: str | None,
    days: int,
    as_json: bool,
) -> None:
    """Issue a short-lived code-signing certificate."""
    ca, issuer = _ca(ca_dir, ca_passphrase_env)
    new = _new_key(key, algorithm, passphrase_env)
    cert = pki_ca.issue_signer(
        ca,
        issuer,
        Path(out_dir),
        new,
        name=name,
        regions=regions,
        hardware_ids=hardware_ids,
        days=days,
        now=pki_ca.utc_now(),
    )
    _emit(
        as_json,
        pki_ca.certificate_report("signer", cert, dir=out_dir, name=name),
        f"signer {name} (serial {cert.serial_number:X}, valid {days} days) in {out_dir}",
    )


@pki.command("issue-device")
@params.CA_DIR
@click.option("--ca-passphrase-env", metavar="VAR", help="Passphrase of the device CA's key.")
@params.OUT_DIR
@click.option("--device-id", required=True, help="Device identity, e.g. the VIN.")
@params.new_key_options("ecdsa-p256")
@click.option("--days", default=3650, show_default=True, type=click.IntRange(1, 10950))
@params.JSON
@audit_log.audited(audit_log.certificate_issued("device"))
def issue_device(
    ca_dir: str,
    ca_passphrase_env: str | None,
    out_dir: str,
    device_id: str,
    key: str | None,
    algorithm: str,
    passphrase_env: str | None,
    days: int,
    as_json: bool,
) -> None:
    """Issue a device identity certificate from a device CA (--purpose device-identity)."""
    ca, issuer = _ca(ca_dir, ca_passphrase_env)
    new = _new_key(key, algorithm, passphrase_env)
    cert = pki_ca.issue_device(
        ca, issuer, Path(out_dir), new, device_id=device_id, days=days, now=pki_ca.utc_now()
    )
    _emit(
        as_json,
        pki_ca.certificate_report("device", cert, dir=out_dir, device_id=device_id),
        f"device certificate {device_id} (serial {cert.serial_number:X}) in {out_dir}",
    )


@pki.command("revoke")
@params.CA_DIR
@click.argument("serial")
@click.option("--reason", required=True, type=click.Choice(list(REVOCATION_REASONS)))
@params.JSON
@audit_log.audited(audit_log.revoked)
def revoke(ca_dir: str, serial: str, reason: str, as_json: bool) -> None:
    """Record the revocation of SERIAL (hex, as 'openssl x509 -serial' prints it)."""
    revocation = pki_ca.revoke(Path(ca_dir), serial, reason, now=pki_ca.utc_now())
    number = revocation.serial
    _emit(
        as_json,
        pki_ca.revocation_report(ca_dir, revocation),
        f"serial {number:X} revoked ({reason}); publish it with 'otaguard pki crl'",
    )


@pki.command("crl")
@params.CA_DIR
@click.option("--ca-passphrase-env", metavar="VAR", help="Passphrase of the CA's key.")
@click.option("--out", required=True, type=click.Path(dir_okay=False))
@click.option("--days", default=30, show_default=True, type=click.IntRange(1, 400))
@params.JSON
@audit_log.audited(audit_log.crl_issued)
def crl(ca_dir: str, ca_passphrase_env: str | None, out: str, days: int, as_json: bool) -> None:
    """Write the CA's signed X.509 CRL (PEM)."""
    one_stdout(as_json, out, "--out -")
    done = pki_ca.write_crl(
        Path(ca_dir), passphrase_from_env(ca_passphrase_env), out, days=days, now=pki_ca.utc_now()
    )
    line = f"CRL with {len(done.revoked)} revoked certificate(s) written to {out}"
    _emit(as_json, done.to_json(ca_dir, out), line, out)


@pki.command("cross-sign")
@params.ca_dir(help="The old root's directory.")
@click.option("--ca-passphrase-env", metavar="VAR")
@params.NEW_ROOT
@click.option("--out", required=True, type=click.Path(dir_okay=False))
@click.option("--years", default=5, show_default=True, type=click.IntRange(1, 20))
@params.JSON
@audit_log.audited(audit_log.cross_signed)
def cross_sign_cmd(
    ca_dir: str, ca_passphrase_env: str | None, new_root: str, out: str, years: int, as_json: bool
) -> None:
    """Certify a new root with the old one, for a root rotation."""
    one_stdout(as_json, out, "--out -")
    passphrase = passphrase_from_env(ca_passphrase_env)
    cert, new = pki_ca.cross_sign_root(
        Path(ca_dir), passphrase, Path(new_root), out, years=years, now=pki_ca.utc_now()
    )
    _emit(
        as_json,
        pki_ca.certificate_report("cross-certificate", cert, out=out),
        f"cross-certificate for {new.subject.rfc4514_string()} written to {out}",
        out,
    )


@pki.command("rotation-message")
@params.ca_dir(help="The current (old) root's directory: its key signs the message.")
@click.option("--ca-passphrase-env", metavar="VAR")
@params.NEW_ROOT
@click.option("--epoch", required=True, type=click.IntRange(2, 2**32 - 1), help="New key epoch.")
@click.option("--out", required=True, type=click.Path(dir_okay=False))
@params.JSON
@audit_log.audited(audit_log.rotation_made)
def rotation_message_cmd(
    ca_dir: str, ca_passphrase_env: str | None, new_root: str, epoch: int, out: str, as_json: bool
) -> None:
    """The anchor rotation message devices accept (signed by the old root)."""
    one_stdout(as_json, out, "--out -")
    passphrase = passphrase_from_env(ca_passphrase_env)
    new = pki_ca.write_rotation(Path(ca_dir), passphrase, Path(new_root), epoch, out)
    subject = new.subject.rfc4514_string()
    _emit(
        as_json,
        {"new_root": subject, "epoch": epoch, "out": out},
        f"rotation to {subject} at key epoch {epoch} written to {out}",
        out,
    )


@pki.command("drill")
@params.OUT_DIR
@params.JSON
def drill(out_dir: str, as_json: bool) -> None:
    """Play the key-compromise incident end to end and check every step."""
    from otaguard.pki.drill import drill_report, run_drill

    if not as_json:
        for line in run_drill(Path(out_dir), now=pki_ca.utc_now()):
            click.echo(line)
        return
    _emit(True, drill_report(out_dir, now=pki_ca.utc_now()), "")
