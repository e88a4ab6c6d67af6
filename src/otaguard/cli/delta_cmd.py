"""``otaguard delta create|apply``: signed differential updates between two images.

``create`` writes a signed envelope of kind DELTA (see ``docs/delta.md``); when
the delta would be larger than ``FULL_FALLBACK_RATIO`` (70%) of the compressed
full image it says so and writes the compressed full image (in the same
container) instead. It refuses, before writing, what no device could apply
(``otaguard.delta.create``).
``apply`` refuses a delta made for another base before writing anything,
streams the new image into OUTPUT (atomically) and checks every chunk and the
final digest; with ``--trusted-key`` it also verifies the delta's and the new
image's signatures.
"""

from __future__ import annotations

import json

import click

from otaguard.cli import audit_log, params
from otaguard.cli.common import ensure_distinct, one_stdout, passphrase_from_env
from otaguard.delta.files import CHUNK_SIZES

_path = click.Path(dir_okay=False, allow_dash=True)


@click.group()
def delta() -> None:
    """Differential updates: a signed delta from one image to the next."""


@delta.command("create")
@click.option(
    "--key", "keys", multiple=True, required=True, type=_path, help="Signing key (repeatable)."
)
@click.option("--passphrase-env", metavar="VAR", help="Passphrase of encrypted keys.")
@click.option(
    "--chunk-size",
    type=click.Choice(CHUNK_SIZES),
    default="4M",
    show_default=True,
    help="Chunk of the new payload (the applier's memory is about 3 chunks).",
)
@click.option(
    "--load-address",
    metavar="ADDR",
    help="Where a raw (non-ELF) firmware payload is loaded, e.g. 0x08000000: lets the "
    "delta predict its 32-bit pointers (guessed from them if not given).",
)
@params.JSON
@click.argument("old_path", metavar="OLD_IMAGE", type=_path)
@click.argument("new_path", metavar="NEW_IMAGE", type=_path)
@click.argument("out_path", metavar="OUT", type=_path)
@audit_log.audited(audit_log.delta_signed)
def create_cmd(
    keys: tuple[str, ...],
    passphrase_env: str | None,
    chunk_size: str,
    load_address: str | None,
    as_json: bool,
    old_path: str,
    new_path: str,
    out_path: str,
) -> None:
    """Write a signed delta from OLD_IMAGE to NEW_IMAGE (signed images) to OUT."""
    from otaguard.cli.options import ensure_distinct_keys
    from otaguard.crypto.keys import key_id_bytes
    from otaguard.crypto.loader import load_signer
    from otaguard.delta.engine import FULL_FALLBACK_RATIO
    from otaguard.delta.files import create_file, parse_chunk_size, parse_load_address

    err = one_stdout(as_json, out_path, "OUT '-'")  # the delta on stdout: messages to stderr
    ensure_distinct([old_path, new_path], out_path)
    ensure_distinct(list(keys))
    signers = [load_signer(k, passphrase_from_env(passphrase_env)) for k in keys]
    ensure_distinct_keys(key_id_bytes(s.public_key) for s in signers)
    size, address = parse_chunk_size(chunk_size), parse_load_address(load_address)
    done = create_file(
        old_path, new_path, out_path, signers, chunk_size=size, load_address=address, inputs=keys
    )
    if as_json:
        click.echo(json.dumps(done.to_json(), indent=2, sort_keys=True))
        return
    stats = done.stats
    if stats.full_fallback:
        click.echo(
            f"the delta ({stats.delta_bytes} bytes) would be more than "
            f"{FULL_FALLBACK_RATIO:.0%} of the compressed full image ({stats.full_bytes} "
            "bytes): wrote the compressed full image instead",
            err=err,
        )
    click.echo(
        f"wrote {out_path}: {'compressed full image' if stats.full_fallback else 'delta'} to "
        f"{done.meta.version}, {done.out_bytes} bytes ({done.percent_of_new:.2f}% of the "
        f"{done.new_bytes}-byte image, {stats.chunks} chunk(s))",
        err=err,
    )


@delta.command("apply")
@click.option(
    "--trusted-key",
    "trusted_keys",
    multiple=True,
    type=_path,
    help="Verify the delta's and the new image's signatures with this key (repeatable).",
)
@params.JSON
@click.argument("old_path", metavar="OLD_IMAGE", type=_path)
@click.argument("delta_path", metavar="DELTA", type=_path)
@click.argument("out_path", metavar="OUT", type=_path)
def apply_cmd(
    trusted_keys: tuple[str, ...], as_json: bool, old_path: str, delta_path: str, out_path: str
) -> None:
    """Rebuild the new image from OLD_IMAGE and DELTA into OUT (atomically)."""
    from otaguard.cli.options import trusted_keys as load_trusted_keys
    from otaguard.delta.files import applied_report, apply_file

    err = one_stdout(as_json, out_path, "OUT '-'")  # the image on stdout: messages to stderr
    ensure_distinct([old_path, delta_path], out_path)
    trusted = load_trusted_keys(trusted_keys) if trusted_keys else None
    opened = apply_file(old_path, delta_path, out_path, trusted, inputs=trusted_keys)
    if as_json:
        click.echo(json.dumps(applied_report(opened, out_path), indent=2, sort_keys=True))
        return
    note = "" if opened.authenticated else " (signatures not checked: verify OUT)"
    click.echo(
        f"rebuilt {out_path}: {opened.inner.version}, {opened.header.target_length} bytes, "
        f"{opened.header.chunk_count} chunk(s) and the final digest verified{note}",
        err=err,
    )
