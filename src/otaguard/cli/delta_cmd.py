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

import contextlib
import json
import mmap
import os
from collections.abc import Iterator
from typing import Any

import click

from otaguard.cli import audit_log
from otaguard.cli.common import ensure_distinct, passphrase_from_env
from otaguard.cli.verifying import open_input
from otaguard.errors import UsageError

_path = click.Path(dir_okay=False)


@contextlib.contextmanager
def _mapped(path: str) -> Iterator[bytes | mmap.mmap]:
    """The whole file, memory-mapped (page cache, not heap); empty files as b"".

    Unmapped when the block ends, but not when an error (Ctrl-C included) leaves it:
    the library's frames in that error's traceback still hold views of the mapping, so
    closing it would raise BufferError in place of the error; the mapping goes when
    they do.
    """
    with open_input(path) as handle:
        if os.fstat(handle.fileno()).st_size == 0:
            yield b""
            return
        mapped = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
        yield mapped
        mapped.close()


def _address(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        value = int(text, 0)
    except ValueError:
        raise UsageError(f"--load-address: not an address: {text!r}") from None
    if not 0 <= value < 1 << 32:
        raise UsageError(f"--load-address: {text} is not a 32-bit address")
    return value


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
    type=click.Choice(["64K", "256K", "1M", "2M", "4M", "8M"]),
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
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
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
    from otaguard._atomic import atomic_output
    from otaguard.cli.options import ensure_distinct_keys
    from otaguard.crypto.keys import key_id_bytes
    from otaguard.crypto.loader import load_signer
    from otaguard.delta import create
    from otaguard.delta.engine import FULL_FALLBACK_RATIO

    ensure_distinct([old_path, new_path, out_path])
    ensure_distinct(list(keys))
    signers = [load_signer(k, passphrase_from_env(passphrase_env)) for k in keys]
    ensure_distinct_keys(key_id_bytes(s.public_key) for s in signers)
    size = int(chunk_size[:-1]) << (10 if chunk_size.endswith("K") else 20)
    address = _address(load_address)
    with (
        _mapped(old_path) as old,
        _mapped(new_path) as new,
        atomic_output(out_path, inputs=[old_path, new_path, *keys]) as dest,
    ):
        meta, stats = create(old, new, dest, signers, chunk_size=size, load_address=address)
        new_length = len(new)
        old_length = len(old)
    out_length = os.path.getsize(out_path)
    percent = 100.0 * out_length / max(new_length, 1)
    if as_json:
        report: dict[str, Any] = {
            "version": meta.version,
            "base_sha256": meta.delta_base.value.hex() if meta.delta_base else None,
            "old_bytes": old_length,
            "new_bytes": new_length,
            "delta_bytes": out_length,
            "percent_of_new": round(percent, 3),
            "full_fallback": stats.full_fallback,
            "chunks": stats.chunks,
            "literal_chunks": stats.literal_chunks,
        }
        click.echo(json.dumps(report, indent=2, sort_keys=True))
        return
    if stats.full_fallback:
        click.echo(
            f"the delta ({stats.delta_bytes} bytes) would be more than "
            f"{FULL_FALLBACK_RATIO:.0%} of the compressed full image ({stats.full_bytes} "
            "bytes): wrote the compressed full image instead"
        )
    click.echo(
        f"wrote {out_path}: {'compressed full image' if stats.full_fallback else 'delta'} to "
        f"{meta.version}, {out_length} bytes ({percent:.2f}% of the {new_length}-byte image, "
        f"{stats.chunks} chunk(s))"
    )


@delta.command("apply")
@click.option(
    "--trusted-key",
    "trusted_keys",
    multiple=True,
    type=_path,
    help="Verify the delta's and the new image's signatures with this key (repeatable).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.argument("old_path", metavar="OLD_IMAGE", type=_path)
@click.argument("delta_path", metavar="DELTA", type=_path)
@click.argument("out_path", metavar="OUT", type=_path)
def apply_cmd(
    trusted_keys: tuple[str, ...], as_json: bool, old_path: str, delta_path: str, out_path: str
) -> None:
    """Rebuild the new image from OLD_IMAGE and DELTA into OUT (atomically)."""
    from otaguard._atomic import atomic_output
    from otaguard.cli.options import trusted_keys as load_trusted_keys
    from otaguard.delta import open_delta, reconstruct

    ensure_distinct([old_path, delta_path, out_path])
    trusted = load_trusted_keys(trusted_keys) if trusted_keys else None
    with open_input(delta_path) as stream, open_input(old_path) as old:
        opened = open_delta(stream, trusted)
        old_length = os.fstat(old.fileno()).st_size

        def read_at(offset: int, n: int) -> bytes:
            return os.pread(old.fileno(), n, offset)

        image = reconstruct(opened, stream, old_length, read_at)  # base checked: no write yet
        with atomic_output(out_path, inputs=[old_path, delta_path, *trusted_keys]) as dest:
            image.readall_into(dest)
    if as_json:
        report: dict[str, Any] = {
            "out": out_path,
            "version": opened.inner.version,
            "security_counter": opened.inner.security_counter,
            "bytes": opened.header.target_length,
            "chunks": opened.header.chunk_count,
            "base_sha256": opened.header.base_sha256.hex(),
            "signatures_verified": opened.authenticated,
        }
        click.echo(json.dumps(report, indent=2, sort_keys=True))
        return
    note = "" if opened.authenticated else " (signatures not checked: verify OUT)"
    click.echo(
        f"rebuilt {out_path}: {opened.inner.version}, {opened.header.target_length} bytes, "
        f"{opened.header.chunk_count} chunk(s) and the final digest verified{note}"
    )
