"""``otaguard sign|verify|inspect|extract``: the image commands, for both formats.

The native envelope is handled here; MCUboot images are handed to
``otaguard.cli.mcuboot_cmd`` with the same parsed options, so both formats
share one set of flags, exit codes and messages.
"""

from __future__ import annotations

import os
import time
from typing import Any

import click

from otaguard.cli.common import (
    ensure_distinct,
    load_public_key_file,
    passphrase_from_env,
)
from otaguard.errors import MalformedError, RejectedError, StorageError, UsageError

_FORMATS_SIGN = ["native", "mcuboot"]
_FORMATS_READ = ["auto", "native", "mcuboot"]
NATIVE_MAGIC = b"OTAGUARD"
#: MCUboot's 0x96f3b83d in either byte order (kept here so that telling the
#: formats apart does not import the MCUboot code).
_MCUBOOT_MAGICS = (bytes.fromhex("3db8f396"), bytes.fromhex("96f3b83d"))


def _json(report: dict[str, Any]) -> str:
    import json  # only for --json: start-up time matters for verify

    return json.dumps(report, indent=2, sort_keys=True)


def _int_auto(value: str) -> int:
    """Parse decimal or 0x-prefixed hex, as imgtool accepts sizes."""
    try:
        return int(value, 0)
    except ValueError:
        raise UsageError(f"not an integer: {value!r}") from None


def _annotations(pairs: tuple[str, ...]) -> list[tuple[str, str]]:
    result: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"--annotate takes KEY=VALUE, got {pair!r}")
        if key in result:
            raise UsageError(f"annotation {key!r} given twice")
        result[key] = value
    return sorted(result.items())


def _created() -> int:
    """Creation time: SOURCE_DATE_EPOCH for reproducible builds, else now."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if epoch is not None:
        try:
            return int(epoch)
        except ValueError:
            raise UsageError("SOURCE_DATE_EPOCH is not an integer") from None
    return int(time.time())


def detect_format(path: str) -> str:
    """Tell the native envelope from an MCUboot image by their magic numbers."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(8)
    except OSError as exc:
        raise StorageError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if head.startswith(NATIVE_MAGIC[: len(head)]) and len(head) == len(NATIVE_MAGIC):
        return "native"
    if head[:4] in _MCUBOOT_MAGICS:
        return "mcuboot"
    if len(head) < 8:
        raise MalformedError("truncated: too short to be an image")
    raise MalformedError("neither an otaguard nor an MCUboot image (unknown magic)")


def _open_input(path: str) -> Any:
    try:
        return open(path, "rb")
    except OSError as exc:
        raise StorageError(f"cannot read {path}: {exc.strerror or exc}") from exc


def _trusted_keys(paths: tuple[str, ...], threshold: int) -> Any:
    from otaguard.image import TrustedKeys

    if not paths:
        raise UsageError("give at least one --trusted-key: verifying against no key proves nothing")
    ensure_distinct(list(paths))
    trusted = TrustedKeys.of(load_public_key_file(p) for p in paths)
    if len(trusted) != len(paths):
        raise UsageError("the same key was given twice as --trusted-key")
    if not 1 <= threshold <= len(trusted):
        raise UsageError(
            f"--threshold {threshold} needs between 1 and {len(trusted)} (the trusted keys given)"
        )
    return trusted


def _metadata_json(meta: Any) -> dict[str, Any]:
    return {
        "version": meta.version,
        "security_counter": meta.security_counter,
        "hardware_ids": list(meta.hardware_ids),
        "payload_kind": meta.payload_kind.name.lower(),
        "payload_length": meta.payload_length,
        "payload_digest": str(meta.payload_digest),
        "delta_base": str(meta.delta_base) if meta.delta_base else None,
        "created": meta.created,
        "annotations": dict(meta.annotations),
        "certificates": len(meta.cert_chain),
    }


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
@click.option("--load-addr", default=None, help="MCUboot RAM load address.")
@click.option(
    "--endian",
    type=click.Choice(["little", "big"]),
    default="little",
    show_default=True,
    help="MCUboot header and TLV byte order.",
)
@click.argument("input_path", metavar="INPUT", type=click.Path(dir_okay=False))
@click.argument("output_path", metavar="OUTPUT", type=click.Path(dir_okay=False))
def sign(**opts: Any) -> None:
    """Sign INPUT into OUTPUT (written atomically)."""
    from otaguard.crypto.loader import load_signer

    ensure_distinct(list(opts["keys"]))
    passphrase = passphrase_from_env(opts["passphrase_env"])
    signers = [load_signer(k, passphrase) for k in opts["keys"]]
    if opts["fmt"] == "mcuboot":
        from otaguard.cli import mcuboot_cmd

        mcuboot_cmd.sign(signers, opts)
        return
    from otaguard.cli.mcuboot_cmd import reject_mcuboot_options

    reject_mcuboot_options(opts)
    _sign_native(signers, opts)


def _sign_native(signers: list[Any], opts: dict[str, Any]) -> None:
    from otaguard._atomic import atomic_output
    from otaguard.image import HashAlgorithm, sign_stream

    if opts["security_counter"] is None:
        raise UsageError("--security-counter is required")
    counter = _int_auto(opts["security_counter"])
    if not opts["hardware_ids"]:
        raise UsageError("give at least one --hardware-id")
    if os.path.abspath(opts["input_path"]) == os.path.abspath(opts["output_path"]):
        raise UsageError("INPUT and OUTPUT must be different files")
    chain = _load_chain(opts["cert_chain"], signers)
    with _open_input(opts["input_path"]) as source, atomic_output(opts["output_path"]) as dest:
        meta = sign_stream(
            source,
            dest,
            signers,
            version=opts["version"],
            security_counter=counter,
            hardware_ids=opts["hardware_ids"],
            created=_created(),
            annotations=_annotations(opts["annotations"]),
            digest_algorithm=HashAlgorithm.SHA512 if opts["sha512"] else HashAlgorithm.SHA256,
            cert_chain=chain,
        )
    click.echo(
        f"signed {opts['output_path']}: version {meta.version}, security counter "
        f"{meta.security_counter}, {meta.payload_length} payload bytes, "
        f"{len(signers)} signature(s)"
    )


def _load_chain(path: str | None, signers: list[Any]) -> list[bytes]:
    """The chain to embed, as DER; its leaf must be the (first) signing key's certificate."""
    if path is None:
        return []
    from cryptography.hazmat.primitives.serialization import Encoding

    from otaguard.crypto.keys import key_id
    from otaguard.pki.store import read_certs

    certs = read_certs(path, "certificate chain")
    if key_id(certs[0].public_key()) != key_id(signers[0].public_key):  # type: ignore[arg-type]
        raise UsageError("the chain's first certificate is not the signing key's certificate")
    return [c.public_bytes(Encoding.DER) for c in certs]


# --- verify / extract -------------------------------------------------------------


def _verify_options(func: Any) -> Any:
    options = [
        click.option(
            "--trusted-key",
            "trusted_keys",
            multiple=True,
            type=click.Path(dir_okay=False),
            help="Trusted public key (repeatable).",
        ),
        click.option(
            "--trusted-root",
            "trusted_roots",
            multiple=True,
            type=click.Path(dir_okay=False),
            help="Trusted root CA certificate: the image's chain must lead to it.",
        ),
        click.option(
            "--crl",
            "crls",
            multiple=True,
            type=click.Path(dir_okay=False),
            help="Certificate revocation list to apply (repeatable).",
        ),
        click.option(
            "--region",
            default=None,
            help="The verifying device's region (checked against the chain).",
        ),
        click.option(
            "--threshold",
            default=1,
            show_default=True,
            type=int,
            help="Distinct trusted keys that must have signed.",
        ),
        click.option(
            "--hardware-id",
            "hardware_id",
            default=None,
            help="Require the image to run on this hardware id.",
        ),
        click.option(
            "--min-security-counter",
            default=None,
            type=int,
            help="Require a security counter of at least N (anti-rollback).",
        ),
        click.option(
            "--min-version",
            default=None,
            help="Require at least this version (semver; MCUboot: major.minor.revision).",
        ),
        click.option(
            "--format", "fmt", type=click.Choice(_FORMATS_READ), default="auto", show_default=True
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _policy(opts: dict[str, Any], fmt: str = "native") -> Any:
    from otaguard.image import ImagePolicy

    floor = opts.get("min_security_counter")
    if floor is not None and floor < 0:
        raise UsageError("--min-security-counter must not be negative")
    min_version = opts.get("min_version")
    if min_version is not None:
        if fmt == "mcuboot":
            from otaguard.image.mcuboot import parse_version

            parse_version(min_version)
        else:
            from otaguard.image.semver import parse_semver

            try:
                parse_semver(min_version)
            except MalformedError as exc:
                raise UsageError(f"--min-version: {exc}") from None
    return ImagePolicy(
        hardware_id=opts.get("hardware_id"), min_security_counter=floor, min_version=min_version
    )


def _resolve_format(opts: dict[str, Any], path: str) -> str:
    fmt: str = opts["fmt"]
    return detect_format(path) if fmt == "auto" else fmt


@click.command()
@_verify_options
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")
@click.argument("image", type=click.Path(dir_okay=False))
def verify(**opts: Any) -> None:
    """Verify IMAGE's signatures, digest and policy. Exit 1 if any check fails."""
    trusted = _trust(opts)
    try:
        if _resolve_format(opts, opts["image"]) == "mcuboot":
            from otaguard.cli import mcuboot_cmd

            report = mcuboot_cmd.verify(trusted, opts)
        else:
            report = _verify_native(trusted, opts)
    except RejectedError as exc:
        if opts["as_json"]:
            click.echo(_json({"verified": False, "check": exc.check, "error": str(exc)}))
        raise
    if opts["as_json"]:
        click.echo(_json(report))
    else:
        click.echo(
            f"OK: {report['format']} image {opts['image']} verified: version "
            f"{report['version']}, security counter {report['security_counter']}, "
            f"signed by {', '.join(k[:16] for k in report['signed_by'])}"
        )


def _trust(opts: dict[str, Any]) -> Any:
    """TrustedKeys for --trusted-key, or a chain resolver for --trusted-root."""
    if opts["trusted_roots"]:
        if opts["trusted_keys"]:
            raise UsageError("give --trusted-key or --trusted-root, not both")
        if opts["threshold"] != 1:
            raise UsageError("--threshold applies to --trusted-key only")
        return _root_resolver(opts)
    if opts["crls"] or opts["region"]:
        raise UsageError("--crl and --region apply to --trusted-root only")
    return _trusted_keys(opts["trusted_keys"], opts["threshold"])


def _root_resolver(opts: dict[str, Any]) -> Any:
    """One resolver for both formats: it is handed the parsed envelope metadata or MCUboot image."""
    from otaguard.crypto.keys import check_supported
    from otaguard.image import TrustedKeys
    from otaguard.pki.store import read_certs, read_crl

    roots = [c for path in opts["trusted_roots"] for c in read_certs(path, "trusted root")]
    crls = [read_crl(path) for path in opts["crls"]]

    def resolve(parsed: Any) -> Any:
        from otaguard.image.mcuboot_verify import McubootImage
        from otaguard.pki.image_trust import validate_image_chain, validate_mcuboot_chain

        validate = (
            validate_mcuboot_chain if isinstance(parsed, McubootImage) else validate_image_chain
        )
        chain = validate(parsed, roots, crls=crls, region=opts["region"])
        opts["_chain"] = chain
        return TrustedKeys.of([check_supported(chain.leaf.public_key())])

    return resolve


def _verify_native(trusted: Any, opts: dict[str, Any], sink: Any = None) -> dict[str, Any]:
    from otaguard.cli import prefetch
    from otaguard.image import verify_stream

    job = prefetch.active()
    with _open_input(opts["image"]) as stream:
        result = verify_stream(
            stream,
            trusted,
            threshold=opts["threshold"],
            policy=_policy(opts),
            sink=sink,
            digest_source=job.digest_for if job is not None else None,
        )
    report = {"verified": True, "format": "native", "signed_by": list(result.signed_by)}
    chain = opts.get("_chain")
    if chain is not None:
        report["certificate_chain"] = [c.subject.rfc4514_string() for c in chain.path]
    report.update(_metadata_json(result.metadata))
    return report


@click.command()
@_verify_options
@click.argument("image", type=click.Path(dir_okay=False))
@click.argument("out", type=click.Path(dir_okay=False))
def extract(**opts: Any) -> None:
    """Write IMAGE's payload to OUT, only after full verification (atomic)."""
    from otaguard._atomic import atomic_output

    trusted = _trust(opts)
    fmt = _resolve_format(opts, opts["image"])
    with atomic_output(opts["out"]) as sink:
        if fmt == "mcuboot":
            from otaguard.cli import mcuboot_cmd

            report = mcuboot_cmd.extract(trusted, opts, sink)
        else:
            report = _verify_native(trusted, opts, sink)
    click.echo(f"verified; payload of version {report['version']} written to {opts['out']}")


# --- inspect ----------------------------------------------------------------------


@click.command()
@click.option("--json", "as_json", is_flag=True)
@click.option("--format", "fmt", type=click.Choice(_FORMATS_READ), default="auto")
@click.argument("image", type=click.Path(dir_okay=False))
def inspect(**opts: Any) -> None:
    """Show IMAGE's metadata WITHOUT verifying it."""
    if _resolve_format(opts, opts["image"]) == "mcuboot":
        from otaguard.cli import mcuboot_cmd

        report = mcuboot_cmd.inspect(opts)
    else:
        from otaguard.crypto.schemes import SignatureScheme
        from otaguard.image import inspect_stream

        with _open_input(opts["image"]) as stream:
            envelope = inspect_stream(stream)
        report = {"verified": False, "format": "native"}
        report.update(_metadata_json(envelope.metadata))
        report["signatures"] = [
            {
                "key_id": e.key_id.hex(),
                "scheme": (
                    SignatureScheme(e.scheme).label
                    if e.scheme in SignatureScheme._value2member_map_
                    else f"unknown({e.scheme})"
                ),
            }
            for e in envelope.signatures
        ]
    if opts["as_json"]:
        click.echo(_json(report))
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
