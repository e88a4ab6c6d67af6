"""``otaguard sign|verify|inspect|extract``: the image commands, for both formats.

Signing the native envelope is here, MCUboot signing in ``otaguard.cli.mcuboot_cmd``;
what verify, extract and inspect do is in ``otaguard.cli.verifying`` (click-free, shared
with ``otaguard.cli.fastpath``), and verify's options are declared once in
``otaguard.cli.verify_args``. Both formats share one set of flags, exit codes and messages.
"""

from __future__ import annotations

import os
from typing import Any

import click

from otaguard._stdio import open_input
from otaguard.cli import audit_log, params, verifying
from otaguard.cli.common import (
    SIGN_INPUTS,
    VERIFY_INPUTS,
    ensure_distinct,
    input_path,
    inputs_of,
    one_stdout,
    output_file,
    passphrase_from_env,
    to_stdout,
)
from otaguard.cli.options import created, int_auto, signer_chain
from otaguard.cli.verify_args import FORMATS_READ, JSON_OPTION
from otaguard.errors import UsageError

_FORMATS_SIGN = ["native", "mcuboot"]


# --- sign -----------------------------------------------------------------------


@click.command()
@click.option(
    "--key",
    "keys",
    multiple=True,
    required=True,
    type=click.Path(dir_okay=False),
    help="Signing key (repeat for several signatures).",
)
@click.option("--passphrase-env", metavar="VAR", help="Passphrase of encrypted keys.")
@click.option(
    "--format", "fmt", type=click.Choice(_FORMATS_SIGN), default="native", show_default=True
)
@click.option("--version", "version", required=True, help="Semantic version (MCUboot: 1.2.3+4).")
@click.option(
    "--security-counter",
    "security_counter",
    default=None,
    help="Anti-rollback epoch (native: required; MCUboot: number or 'auto').",
)
@click.option(
    "--hardware-id",
    "hardware_ids",
    multiple=True,
    help="Hardware id the image may run on (repeatable).",
)
@click.option("--annotate", "annotations", multiple=True, metavar="KEY=VALUE")
@click.option(
    "--cert-chain",
    "cert_chain",
    default=None,
    type=click.Path(dir_okay=False),
    help="Signer certificate chain (PEM, leaf first) to embed.",
)
@click.option("--sha512", is_flag=True, help="Native: SHA-512 payload digest instead of SHA-256.")
@click.option("--header-size", default="0x200", show_default=True, help="MCUboot header size.")
@click.option("--pad-header", is_flag=True, help="MCUboot: prepend the header's room.")
@click.option("--slot-size", default=None, help="MCUboot slot size (with --pad).")
@click.option("--pad", is_flag=True, help="MCUboot: pad to --slot-size and write the trailer.")
@click.option("--confirm", is_flag=True, help="MCUboot: mark the image confirmed (image_ok).")
@click.option("--align", default="1", show_default=True, help="MCUboot flash write alignment.")
@click.option("--max-sectors", default=None, help="MCUboot: trailer swap-status sectors.")
@click.option(
    "--dependency",
    "dependencies",
    multiple=True,
    metavar="ID,VERSION",
    help="MCUboot image dependency (repeatable).",
)
@click.option("--pure", is_flag=True, help="MCUboot Ed25519: sign the image itself (SIG_PURE).")
@click.option(
    "--load-address",
    "--load-addr",
    "load_address",
    cls=params.RenamedOption,
    default=None,
    help="MCUboot RAM load address.",
)
@click.option(
    "--endian",
    type=click.Choice(["little", "big"]),
    default="little",
    show_default=True,
    help="MCUboot header and TLV byte order.",
)
@click.argument("input_path", metavar="INPUT", type=click.Path(dir_okay=False, allow_dash=True))
@click.argument("output_path", metavar="OUTPUT", type=click.Path(dir_okay=False, allow_dash=True))
@audit_log.audited(audit_log.image_signed)
def sign(**opts: Any) -> None:
    """Sign INPUT into OUTPUT (written atomically; '-' is stdin or stdout)."""
    from otaguard.crypto.loader import load_signer

    ensure_distinct(list(opts["keys"]))
    opts["input_path"] = input_path(opts["input_path"])
    passphrase = passphrase_from_env(opts["passphrase_env"])
    signers = [load_signer(k, passphrase) for k in opts["keys"]]
    if os.path.abspath(opts["input_path"]) == os.path.abspath(opts["output_path"]):
        raise UsageError("INPUT and OUTPUT must be different files")
    if opts["fmt"] == "mcuboot":
        from otaguard.cli import mcuboot_cmd

        mcuboot_cmd.sign(signers, opts)
        return
    from otaguard.cli.mcuboot_cmd import reject_mcuboot_options

    reject_mcuboot_options(opts)
    _sign_native(signers, opts)


def _sign_native(signers: list[Any], opts: dict[str, Any]) -> None:
    from otaguard.image import HashAlgorithm, sign_stream
    from otaguard.image.envelope_sign import parse_annotations

    if opts["security_counter"] is None:
        raise UsageError("--security-counter is required")
    counter = int_auto(opts["security_counter"])
    if not opts["hardware_ids"]:
        raise UsageError("give at least one --hardware-id")
    chain = signer_chain(opts["cert_chain"], signers)
    with (
        open_input(opts["input_path"]) as source,
        output_file(opts["output_path"], inputs=inputs_of(opts, *SIGN_INPUTS)) as dest,
    ):
        meta = sign_stream(
            source,
            dest,
            signers,
            version=opts["version"],
            security_counter=counter,
            hardware_ids=opts["hardware_ids"],
            created=created(),
            annotations=parse_annotations(opts["annotations"]),
            digest_algorithm=HashAlgorithm.SHA512 if opts["sha512"] else HashAlgorithm.SHA256,
            cert_chain=chain,
        )
    click.echo(
        f"signed {opts['output_path']}: version {meta.version}, security counter "
        f"{meta.security_counter}, {meta.payload_length} payload bytes, "
        f"{len(signers)} signature(s)",
        err=to_stdout(opts["output_path"]),
    )


# --- verify / extract / inspect ---------------------------------------------------------


@click.command()
@params.verify_options
@params.from_table(JSON_OPTION)
@click.argument("image", type=click.Path(dir_okay=False))
def verify(**opts: Any) -> None:
    """Verify IMAGE's signatures, digest and policy. Exit 1 if any check fails."""
    verifying.verify(verifying.VerifyArgs(**opts), click.echo)


@click.command()
@params.verify_options
@params.from_table(JSON_OPTION)
@click.argument("image", type=click.Path(dir_okay=False, allow_dash=True))
@click.argument("out", type=click.Path(dir_okay=False, allow_dash=True))
def extract(out: str, **opts: Any) -> None:
    """Write IMAGE's payload to OUT, only after full verification (atomic; '-': stdin/stdout)."""
    args = verifying.VerifyArgs(**opts)
    one_stdout(args.as_json, out, "OUT '-'")
    with output_file(out, inputs=inputs_of(opts, *VERIFY_INPUTS)) as sink:
        report = verifying.verified_report(args, sink)
    if args.as_json:
        click.echo(verifying.to_json({**report, "out": out}))
        return
    line = f"verified; payload of version {report['version']} written to {out}"
    click.echo(line, err=to_stdout(out))


@click.command()
@click.option("--json", "as_json", is_flag=True)
@click.option("--format", "fmt", type=click.Choice(FORMATS_READ), default="auto")
@click.argument("image", type=click.Path(dir_okay=False))
def inspect(as_json: bool, fmt: str, image: str) -> None:
    """Show IMAGE's metadata WITHOUT verifying it."""
    from otaguard.image.describe import inspect_file

    report = inspect_file(image, fmt)
    if as_json:
        click.echo(verifying.to_json(report))
        return
    click.echo("NOT VERIFIED: inspect shows what the image claims; use 'otaguard verify'.")
    for name, value in report.items():
        if name in ("verified", "signatures", "protected_tlvs", "tlvs"):
            continue
        click.echo(f"  {name:17} {value}")
    for area in ("protected_tlvs", "tlvs"):
        for tlv in report.get(area, []):
            label = "protected tlv" if area == "protected_tlvs" else "tlv"
            click.echo(f"  {label:17} {tlv['type']} ({tlv['length']} bytes)")
    for sig in report.get("signatures", []):
        click.echo(f"  signature         {sig['scheme']} key {sig['key_id']}")
