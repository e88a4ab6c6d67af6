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

from otaguard.errors import RejectedError, UsageError

if TYPE_CHECKING:
    from otaguard.image.trust import PrecomputedDigest, TrustedKeys
    from otaguard.pki.image_trust import TrustedRoots

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


# --- trust and policy ---------------------------------------------------------------


def trust(args: VerifyArgs) -> TrustedKeys | TrustedRoots:
    """The trusted keys of --trusted-key, or the roots (CRLs, region) of --trusted-root."""
    if args.trusted_roots:
        if args.trusted_keys:
            raise UsageError("give --trusted-key or --trusted-root, not both")
        if args.threshold != 1:
            raise UsageError("--threshold applies to --trusted-key only")
        from otaguard.pki.verify_file import trusted_roots_from_files

        return trusted_roots_from_files(args.trusted_roots, args.crls, args.region)
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


def _prefetched() -> PrecomputedDigest | None:
    """The prefetch child's digest, which it gives only for the very file and range."""
    from otaguard.image import prefetch

    job = prefetch.active()
    return job.digest_for if job is not None else None


# --- the commands -------------------------------------------------------------------------


def verified_report(args: VerifyArgs, sink: BinaryIO | None = None) -> dict[str, Any]:
    """Verify ``args.image`` (its payload to ``sink`` if given); raises if refused."""
    from otaguard.image.trust import TrustedKeys
    from otaguard.image.verify_file import key_verifier, verify_file

    trusted = trust(args)
    if isinstance(trusted, TrustedKeys):
        verifier = key_verifier(trusted, args.threshold)
    else:
        from otaguard.pki.verify_file import root_verifier

        verifier = root_verifier(trusted)
    return verify_file(
        args.image,  # '-' is stdin
        verifier,
        fmt=args.fmt,
        hardware_id=args.hardware_id,
        min_security_counter=args.min_security_counter,
        min_version=args.min_version,
        sink=sink,
        unsafe_precomputed_digest=_prefetched(),
    )


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
