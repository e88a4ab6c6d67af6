"""Images as plain data (JSON-ready dicts), for both formats.

What ``otaguard verify --json`` and ``otaguard inspect`` print, and what a fleet
server or an agent's report can carry: one description, not one per caller.
The field names are an interface (scripts read ``verify --json``): keep them.
Describing decides nothing; :func:`inspect_fields` describes an image that was
NOT verified, and says so only through its caller.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, BinaryIO

if TYPE_CHECKING:
    from otaguard.image.any_format import VerifiedAny
    from otaguard.image.envelope_format import ImageMetadata
    from otaguard.image.mcuboot_verify import McubootImage


def envelope_fields(meta: ImageMetadata) -> dict[str, Any]:
    """A native envelope's protected header."""
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


def mcuboot_fields(image: McubootImage) -> dict[str, Any]:
    """An MCUboot image's header, TLVs that matter and trailer."""
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


def verified_fields(result: VerifiedAny) -> dict[str, Any]:
    """What :func:`~otaguard.image.verify_any` verified, by its format."""
    if result.format == "mcuboot":
        return mcuboot_fields(result.image)
    return envelope_fields(result.metadata)


def inspect_fields(stream: BinaryIO, fmt: str) -> dict[str, Any]:
    """The image at offset 0 of ``stream`` as it claims to be: parsed, NOT verified.

    Adds what only inspection shows: the envelope's signature entries, the MCUboot
    image's TLV areas.
    """
    stream.seek(0)
    if fmt == "mcuboot":
        from otaguard.image.mcuboot_verify import describe_tlvs, read_image

        image = read_image(stream)
        fields = mcuboot_fields(image)
        fields["protected_tlvs"] = describe_tlvs(image.protected)
        fields["tlvs"] = describe_tlvs(image.unprotected)
        return fields
    from otaguard.crypto.schemes import SignatureScheme
    from otaguard.image.envelope_verify import inspect_stream

    envelope = inspect_stream(stream)
    fields = envelope_fields(envelope.metadata)
    fields["signatures"] = [
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
    return fields


def inspect_file(path: str, fmt: str = "auto") -> dict[str, Any]:
    """What the image at ``path`` (stdin for ``-``) claims: parsed, NOT verified."""
    from otaguard._stdio import open_input
    from otaguard.image.any_format import format_of

    with open_input(path) as stream:
        fmt = format_of(stream, fmt)
        report: dict[str, Any] = {"verified": False, "format": fmt}
        report.update(inspect_fields(stream, fmt))
    return report
