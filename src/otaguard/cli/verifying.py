"""What ``otaguard verify|extract|inspect`` do, for both formats, without click.

Why apart from ``otaguard.cli.images``: ``otaguard verify`` runs through here without
importing click when its command line is plain (``otaguard.cli.fastpath``); the click
commands call the very same functions, so both ways give one verdict, one output
and one set of errors. Library modules are imported inside the functions: start-up
time is most of what verifying a small image costs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, BinaryIO

from otaguard.cli.common import input_path
from otaguard.errors import MalformedError, RejectedError, StorageError, UsageError

NATIVE_MAGIC = b"OTAGUARD"
#: MCUboot's 0x96f3b83d in either byte order (kept here so that telling the
#: formats apart does not import the MCUboot code).
_MCUBOOT_MAGICS = (bytes.fromhex("3db8f396"), bytes.fromhex("96f3b83d"))

Echo = Callable[[str], None]


def to_json(report: dict[str, Any]) -> str:
    import json  # only for --json

    return json.dumps(report, indent=2, sort_keys=True)


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


def resolve_format(opts: dict[str, Any], path: str) -> str:
    fmt: str = opts["fmt"]
    return detect_format(path) if fmt == "auto" else fmt


def open_input(path: str) -> BinaryIO:
    try:
        return open(path, "rb")
    except OSError as exc:
        raise StorageError(f"cannot read {path}: {exc.strerror or exc}") from exc


# --- trust and policy ---------------------------------------------------------------


def trust(opts: dict[str, Any]) -> Any:
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


def _trusted_keys(paths: tuple[str, ...], threshold: int) -> Any:
    from otaguard.cli.common import ensure_distinct, load_public_key_file
    from otaguard.image.trust import TrustedKeys

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


def _root_resolver(opts: dict[str, Any]) -> Any:
    """One resolver for both formats: it is handed the parsed envelope metadata or MCUboot image."""
    from otaguard.crypto.keys import check_supported
    from otaguard.image.trust import TrustedKeys
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


def policy(opts: dict[str, Any], fmt: str = "native") -> Any:
    from otaguard.image.policy import ImagePolicy

    floor = opts.get("min_security_counter")
    if floor is not None and floor < 0:
        raise UsageError("--min-security-counter must not be negative")
    min_version = opts.get("min_version")
    if min_version is not None:
        if fmt == "mcuboot":
            from otaguard.image.mcuboot_format import parse_version

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


def _chain_report(opts: dict[str, Any]) -> dict[str, Any]:
    chain = opts.get("_chain")
    if chain is None:
        return {}
    return {"certificate_chain": [c.subject.rfc4514_string() for c in chain.path]}


def _digest_source() -> Any:
    from otaguard.cli import prefetch

    job = prefetch.active()
    return job.digest_for if job is not None else None


# --- native envelope ---------------------------------------------------------------------


def metadata_json(meta: Any) -> dict[str, Any]:
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


def _inspect_native(opts: dict[str, Any]) -> dict[str, Any]:
    from otaguard.crypto.schemes import SignatureScheme
    from otaguard.image.envelope_verify import inspect_stream

    with open_input(opts["image"]) as stream:
        envelope = inspect_stream(stream)
    report: dict[str, Any] = {"verified": False, "format": "native"}
    report.update(metadata_json(envelope.metadata))
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
    return report


# --- MCUboot ------------------------------------------------------------------------------


def _inspect_mcuboot(opts: dict[str, Any]) -> dict[str, Any]:
    from otaguard.image.mcuboot_verify import describe_tlvs, read_image

    with open_input(opts["image"]) as stream:
        image = read_image(stream)
    report: dict[str, Any] = {"verified": False, "format": "mcuboot"}
    report.update(_describe_mcuboot(image))
    report["protected_tlvs"] = describe_tlvs(image.protected)
    report["tlvs"] = describe_tlvs(image.unprotected)
    return report


def _describe_mcuboot(image: Any) -> dict[str, Any]:
    header = image.header
    trailer = image.trailer
    return {
        "version": str(header.version),
        "security_counter": image.security_counter,
        "hardware_ids": list(image.hardware_ids),
        "header_size": header.hdr_size,
        "image_size": header.img_size,
        "load_addr": header.load_addr,
        "flags": header.flags,
        "endian": "little" if header.endian == "<" else "big",
        "hash": f"{image.hash_name}:{image.hash_value.hex()}",
        "pure_signature": image.pure,
        "dependencies": [f"image {d.image_id} >= {d.min_version}" for d in image.dependencies],
        "certificates": len(image.cert_chain),
        "trailer": None
        if trailer is None
        else {"magic": trailer.magic_ok, "image_ok": trailer.image_ok},
    }


# --- the commands -------------------------------------------------------------------------


def verified_report(opts: dict[str, Any], sink: BinaryIO | None = None) -> dict[str, Any]:
    """Verify ``opts["image"]`` (its payload to ``sink`` if given); raises if refused."""
    opts["image"] = input_path(opts["image"])  # '-' is stdin
    trusted = trust(opts)
    fmt = resolve_format(opts, opts["image"])
    verify_image: Callable[..., Any]
    if fmt == "mcuboot":
        from otaguard.image.mcuboot_verify import verify_mcuboot as verify_image

        def describe(result: Any) -> dict[str, Any]:
            return _describe_mcuboot(result.image)
    else:
        from otaguard.image.envelope_verify import verify_stream as verify_image

        def describe(result: Any) -> dict[str, Any]:
            return metadata_json(result.metadata)

    with open_input(opts["image"]) as stream:
        result = verify_image(
            stream,
            trusted,
            threshold=opts["threshold"],
            policy=policy(opts, fmt),
            sink=sink,
            digest_source=_digest_source(),
        )
    report = {"verified": True, "format": fmt, "signed_by": list(result.signed_by)}
    report.update(_chain_report(opts))
    report.update(describe(result))
    return report


def verify(opts: dict[str, Any], echo: Echo) -> None:
    """``otaguard verify``: one line (or JSON) on success; the error propagates on refusal."""
    try:
        report = verified_report(opts)
    except RejectedError as exc:
        if opts["as_json"]:
            echo(to_json({"verified": False, "check": exc.check, "error": str(exc)}))
        raise
    if opts["as_json"]:
        echo(to_json(report))
    else:
        echo(
            f"OK: {report['format']} image {opts['image']} verified: version "
            f"{report['version']}, security counter {report['security_counter']}, "
            f"signed by {', '.join(k[:16] for k in report['signed_by'])}"
        )


def inspect_report(opts: dict[str, Any]) -> dict[str, Any]:
    """What the image claims, NOT verified."""
    opts["image"] = input_path(opts["image"])  # '-' is stdin
    if resolve_format(opts, opts["image"]) == "mcuboot":
        return _inspect_mcuboot(opts)
    return _inspect_native(opts)
