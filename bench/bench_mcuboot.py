"""MCUboot: `otaguard verify --format mcuboot` against `imgtool verify` on a 16 MiB image.

Why (issue 2, "Benchmarks"): imgtool is the reference MCUboot signer and verifier, and the one a
release pipeline would otherwise call; otaguard must be at least 1.5x faster at verifying the
same image, as a whole process, to be worth using in its place. The image is made by imgtool, so
the figures also prove interop on every run. Ed25519 and RSA-3072 are measured beside the
required ECDSA P-256 because they are cheap and the signature cost differs per algorithm.
"""

from __future__ import annotations

import importlib.metadata
import os
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

from _common import RUNS, BenchFailed, CommandFailed, Timing, check, flip_byte, interleaved, quick

TITLE = "MCUboot: verify against imgtool"

MIB = 2**20
SPEEDUP_GOAL = 1.5
HEADER_SIZE = 0x200
ALGORITHMS = ("ecdsa-p256", "ed25519", "rsa-3072")
TIMEOUT = 600


def public_key(key: Path, pub: Path) -> str:
    """Export the public key with otaguard; fall back to openssl so verify is still measured."""
    try:
        check(["otaguard", "key", "public", str(key), "--out", str(pub)])
        return ""
    except CommandFailed as exc:
        check(["openssl", "pkey", "-in", str(key), "-pubout", "-out", str(pub)])
        return f"`otaguard key public` failed ({exc}); public key exported with openssl."


@dataclass
class Row:
    """One algorithm's result; `error` set when otaguard could not be measured."""

    algorithm: str
    imgtool: Timing | None
    otaguard: Timing | None
    error: str | None
    note: str
    library: tuple[float, float] | None = None  # in-process medians: imgtool, otaguard


def in_process(key: Path, pub: Path, image: Path) -> tuple[float, float]:
    """Both verifiers as library calls in this process: start-up excluded, work only."""
    import imgtool.keys
    from imgtool.image import Image, VerifyResult

    from otaguard.crypto.keys import load_public_key
    from otaguard.image import ImagePolicy, TrustedKeys
    from otaguard.image.mcuboot_verify import verify_mcuboot

    their_key = imgtool.keys.load(str(key))
    trusted = TrustedKeys.of([load_public_key(pub.read_bytes())])

    def theirs() -> None:
        result = Image.verify(str(image), their_key)[0]
        if result != VerifyResult.OK:
            raise CommandFailed(f"imgtool Image.verify: {result}")

    def ours() -> None:
        with image.open("rb") as stream:
            verify_mcuboot(stream, trusted, threshold=1, policy=ImagePolicy())

    medians = []
    for call in (theirs, ours):
        call()
        samples = []
        for _ in range(RUNS):
            start = time.perf_counter()
            call()
            samples.append(time.perf_counter() - start)
        medians.append(statistics.median(samples))
    return medians[0], medians[1]


def bench_algorithm(workdir: Path, payload: Path, size: int, algorithm: str) -> Row:
    """Key and image by imgtool, then both verifiers on the same file."""
    key, pub = workdir / f"{algorithm}.pem", workdir / f"{algorithm}.pub.pem"
    image = workdir / f"{algorithm}.signed.bin"
    check(["imgtool", "keygen", "-k", str(key), "-t", algorithm])
    note = public_key(key, pub)
    check(
        [
            *("imgtool", "sign", "-k", str(key), "--align", "4", "-v", "1.2.3"),
            *("--security-counter", "7", "--header-size", hex(HEADER_SIZE), "--pad-header"),
            *("-S", str(size + MIB), str(payload), str(image)),
        ]
    )
    theirs = ["imgtool", "verify", "-k", str(key), str(image)]
    verify = ["otaguard", "verify", "--format", "mcuboot", "--trusted-key", str(pub), str(image)]
    try:
        t_imgtool, t_otaguard = interleaved(theirs, verify)
        # A verifier that accepts anything would be fast: prove this one checks the payload.
        middle = HEADER_SIZE + size // 2
        flip_byte(image, middle)
        try:
            check(verify, expect=1)
        finally:
            flip_byte(image, middle)
    except CommandFailed as exc:
        return Row(algorithm, None, None, str(exc), note)
    return Row(algorithm, t_imgtool, t_otaguard, None, note, in_process(key, pub, image))


def render(rows: list[Row], size: int) -> str:
    """Markdown table plus goal line and notes."""
    imgtool_version = importlib.metadata.version("imgtool")
    lines = [
        f"{size / MIB:.0f} MiB random payload, signed by imgtool {imgtool_version} "
        f"(`imgtool sign --align 4 -v 1.2.3 --security-counter 7 --header-size "
        f"{hex(HEADER_SIZE)} --pad-header`). Whole-process wall time, seconds: median of "
        f"{RUNS} runs (min-max) after one warm-up, the two verifiers run in alternation; page "
        "cache warm.",
        "",
        "| key | `imgtool verify -k KEY` | `otaguard verify --format mcuboot` | speed-up | "
        f"goal >= {SPEEDUP_GOAL}x |",
        "|---|---|---|---|---|",
    ]
    notes: list[str] = []
    for r in rows:
        imgtool_cell = r.imgtool.cell() if r.imgtool else "-"
        if r.otaguard and r.imgtool:
            speedup = r.imgtool.median / r.otaguard.median
            ok = speedup >= SPEEDUP_GOAL
            lines.append(
                f"| {r.algorithm} | {imgtool_cell} | {r.otaguard.cell()} | {speedup:.2f}x "
                f"| {'**met**' if ok else '**NOT met**'} |"
            )
        else:
            lines.append(f"| {r.algorithm} | {imgtool_cell} | failed | - | - |")
        if r.error:
            notes.append(f"- {r.algorithm}: otaguard failed: {r.error}")
        if r.note:
            notes.append(f"- {r.algorithm}: {r.note}")
    lines += [
        "",
        "Speed-up = imgtool time / otaguard time. Where otaguard was measured, a copy with one "
        "payload byte flipped was also rejected (exit 1).",
        "",
        "The same verification as a library call in one process (interpreter and imports "
        "excluded: `imgtool.image.Image.verify` vs `otaguard.image.mcuboot_verify."
        f"verify_mcuboot`), median of {RUNS}:",
        "",
        "| key | imgtool (s) | otaguard (s) | speed-up |",
        "|---|---|---|---|",
    ]
    for r in rows:
        if r.library is not None:
            theirs, ours = r.library
            lines.append(f"| {r.algorithm} | {theirs:.4f} | {ours:.4f} | {theirs / ours:.2f}x |")
    if notes:
        lines += ["", *notes]
    return "\n".join(lines)


def run(workdir: Path) -> str:
    """All algorithms; a failing otaguard verify is reported per row, then the bench fails."""
    size = 4 * MIB if quick() else 16 * MIB
    payload = workdir / "payload.bin"
    payload.write_bytes(os.urandom(size))
    rows = [bench_algorithm(workdir, payload, size, alg) for alg in ALGORITHMS]
    section = render(rows, size)
    errors = [f"{r.algorithm}: {r.error}" for r in rows if r.error]
    if errors:
        # One line in the failure header (they are usually the same); all are in the notes.
        raise BenchFailed(
            errors[0] + (f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""), section
        )
    return section
