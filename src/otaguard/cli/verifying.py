"""What ``otaguard verify|extract|inspect`` do, for both formats, without click.

Why apart from ``otaguard.cli.images``: ``otaguard verify`` runs through here without
importing click when its command line is plain (``otaguard.cli.fastpath``); the click
commands call the very same functions, so both ways give one verdict, one output
and one set of errors. Library modules are imported inside the functions: start-up
time is most of what verifying a small image costs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, BinaryIO

from otaguard.errors import MalformedError, RejectedError, UsageError

if TYPE_CHECKING:
    from otaguard.image.policy import ImagePolicy
    from otaguard.image.trust import PrecomputedDigest, TrustedKeys
    from otaguard.pki.image_trust import TrustedRoots
    from otaguard.pki.validate import ValidatedChain

Echo = Callable[[str], None]


@dataclass(frozen=True)
class VerifyArgs:
    """What ``verify`` and ``extract`` were asked, as click passes it (option names as dests).

    Built by click's commands (``otaguard.cli.images``) and by the fast parser
    (:func:`otaguard.cli.verify_args.parse`); both from the one option table.
    """

    image: str
    trusted_keys: tuple[str, ...] = ()
    trusted_roots: tuple[str, ...] = ()
    crls: tuple[str, ...] = ()
    region: str | None = None
    threshold: int = 1
    hardware_id: str | None = None
    min_security_counter: int | None = None
    min_version: str | None = None
    fmt: str = "auto"
    as_json: bool = False


def to_json(report: dict[str, Any]) -> str:
    import json  # only for --json

    return json.dumps(report, indent=2, sort_keys=True)


def _format(stream: BinaryIO, fmt: str) -> str:
    """``--format``, or the format the image's magic number names (``auto``)."""
    if fmt != "auto":
        return fmt
    from otaguard.image.any_format import detect_stream

    return detect_stream(stream)


# --- trust and policy ---------------------------------------------------------------


def trust(args: VerifyArgs) -> TrustedKeys | TrustedRoots:
    """The trusted keys of --trusted-key, or the roots (CRLs, region) of --trusted-root."""
    if args.trusted_roots:
        if args.trusted_keys:
            raise UsageError("give --trusted-key or --trusted-root, not both")
        if args.threshold != 1:
            raise UsageError("--threshold applies to --trusted-key only")
        return _trusted_roots(args)
    if args.crls or args.region:
        raise UsageError("--crl and --region apply to --trusted-root only")
    return _trusted_keys(args.trusted_keys, args.threshold)


def _trusted_keys(paths: tuple[str, ...], threshold: int) -> TrustedKeys:
    from otaguard.cli.options import trusted_keys

    if not paths:
        raise UsageError("give at least one --trusted-key: verifying against no key proves nothing")
    trusted = trusted_keys(paths)
    if not 1 <= threshold <= len(trusted):
        raise UsageError(
            f"--threshold {threshold} needs between 1 and {len(trusted)} (the trusted keys given)"
        )
    return trusted


def _trusted_roots(args: VerifyArgs) -> TrustedRoots:
    from otaguard.pki.image_trust import TrustedRoots
    from otaguard.pki.store import read_certs, read_crl

    roots = tuple(c for path in args.trusted_roots for c in read_certs(path, "trusted root"))
    crls = tuple(read_crl(path) for path in args.crls)
    return TrustedRoots(roots, crls, args.region)


def policy(args: VerifyArgs, fmt: str) -> ImagePolicy:
    from otaguard.image.policy import ImagePolicy

    floor = args.min_security_counter
    if floor is not None and floor < 0:
        raise UsageError("--min-security-counter must not be negative")
    min_version = args.min_version
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
        hardware_id=args.hardware_id, min_security_counter=floor, min_version=min_version
    )


def _chain_report(chain: ValidatedChain | None) -> dict[str, Any]:
    if chain is None:
        return {}
    return {"certificate_chain": [c.subject.rfc4514_string() for c in chain.path]}


def _prefetched() -> PrecomputedDigest | None:
    """The prefetch child's digest, which it gives only for the very file and range."""
    from otaguard.image import prefetch

    job = prefetch.active()
    return job.digest_for if job is not None else None


# --- the commands -------------------------------------------------------------------------


def verified_report(args: VerifyArgs, sink: BinaryIO | None = None) -> dict[str, Any]:
    """Verify ``args.image`` (its payload to ``sink`` if given); raises if refused."""
    from otaguard._stdio import open_input
    from otaguard.image.trust import TrustedKeys

    trusted = trust(args)
    with open_input(args.image) as stream:  # '-' is stdin
        fmt = _format(stream, args.fmt)
        image_policy = policy(args, fmt)
        chain: ValidatedChain | None = None
        if isinstance(trusted, TrustedKeys):
            from otaguard.image.any_format import verify_any

            result = verify_any(
                stream,
                trusted,
                threshold=args.threshold,
                policy=image_policy,
                fmt=fmt,
                sink=sink,
                unsafe_precomputed_digest=_prefetched(),
            )
        else:
            from otaguard.pki.image_trust import verify_any_with_roots

            result, chain = verify_any_with_roots(
                stream,
                trusted,
                policy=image_policy,
                fmt=fmt,
                sink=sink,
                unsafe_precomputed_digest=_prefetched(),
            )
    from otaguard.image.describe import verified_fields

    report = {"verified": True, "format": fmt, "signed_by": list(result.signed_by)}
    report.update(_chain_report(chain))
    report.update(verified_fields(result))
    return report


def verify(args: VerifyArgs, echo: Echo) -> None:
    """``otaguard verify``: one line (or JSON) on success; the error propagates on refusal."""
    try:
        report = verified_report(args)
    except RejectedError as exc:
        if args.as_json:
            echo(to_json({"verified": False, "check": exc.check, "error": str(exc)}))
        raise
    if args.as_json:
        echo(to_json(report))
    else:
        echo(
            f"OK: {report['format']} image {args.image} verified: version "
            f"{report['version']}, security counter {report['security_counter']}, "
            f"signed by {', '.join(k[:16] for k in report['signed_by'])}"
        )


def inspect_report(image: str, fmt: str) -> dict[str, Any]:
    """What the image claims, NOT verified."""
    from otaguard._stdio import open_input
    from otaguard.image.describe import inspect_fields

    with open_input(image) as stream:  # '-' is stdin
        fmt = _format(stream, fmt)
        report: dict[str, Any] = {"verified": False, "format": fmt}
        report.update(inspect_fields(stream, fmt))
    return report
