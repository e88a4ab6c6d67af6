"""MCUboot branch of ``otaguard sign``: options in, library out.

Verifying, extracting and inspecting both formats live in ``otaguard.cli.verifying``.
"""

from __future__ import annotations

from typing import Any

import click

from otaguard._stdio import open_input
from otaguard.cli.options import created, int_auto, signer_chain
from otaguard.errors import UsageError

_NATIVE_ONLY = (("annotations", "--annotate"), ("sha512", "--sha512"))
_MCUBOOT_ONLY = (
    ("pad_header", "--pad-header"),
    ("slot_size", "--slot-size"),
    ("pad", "--pad"),
    ("confirm", "--confirm"),
    ("max_sectors", "--max-sectors"),
    ("dependencies", "--dependency"),
    ("pure", "--pure"),
    ("load_address", "--load-address"),
)


def reject_mcuboot_options(opts: dict[str, Any]) -> None:
    """A native sign given MCUboot-only flags is a usage error, not silently ignored."""
    for name, flag in _MCUBOOT_ONLY:
        if opts[name]:
            raise UsageError(f"{flag} applies to --format mcuboot only")
    if opts["endian"] != "little":
        raise UsageError("--endian applies to --format mcuboot only")


def _sign_options(opts: dict[str, Any], signers: list[Any]) -> Any:
    from otaguard.image import mcuboot

    for name, flag in _NATIVE_ONLY:
        if opts[name]:
            raise UsageError(f"{flag} applies to the native format only")
    version = mcuboot.parse_version(opts["version"])
    counter = mcuboot.parse_security_counter(opts["security_counter"], version)
    chain = tuple(signer_chain(opts["cert_chain"], signers))
    return mcuboot.McubootSignOptions(
        version=version,
        security_counter=counter,
        header_size=int_auto(opts["header_size"]),
        pad_header=opts["pad_header"],
        slot_size=int_auto(opts["slot_size"]) if opts["slot_size"] else None,
        pad=opts["pad"],
        confirm=opts["confirm"],
        align=int_auto(opts["align"]),
        max_sectors=int_auto(opts["max_sectors"]) if opts["max_sectors"] else 128,
        dependencies=tuple(mcuboot.parse_dependency(d) for d in opts["dependencies"]),
        hardware_ids=tuple(opts["hardware_ids"]),
        cert_chain=chain,
        created=created() if chain else None,
        pure=opts["pure"],
        load_addr=int_auto(opts["load_address"]) if opts["load_address"] else 0,
        endian="<" if opts["endian"] == "little" else ">",
    )


def sign(signers: list[Any], opts: dict[str, Any]) -> None:
    from otaguard.cli.common import SIGN_INPUTS, inputs_of, output_file, to_stdout
    from otaguard.image import mcuboot

    options = _sign_options(opts, signers)
    with (
        open_input(opts["input_path"]) as source,
        output_file(opts["output_path"], inputs=inputs_of(opts, *SIGN_INPUTS)) as dest,
    ):
        result = mcuboot.sign_mcuboot(source, dest, signers, options)
    counter = options.security_counter
    click.echo(
        f"signed MCUboot image {opts['output_path']}: version {options.version}, "
        f"security counter {'none' if counter is None else counter}, "
        f"{result.header.img_size} payload bytes, {result.hash_name}, "
        f"{len(signers)} signature(s)",
        err=to_stdout(opts["output_path"]),
    )
