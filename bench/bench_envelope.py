"""Native envelope: verify throughput against `openssl dgst -sha256`, and peak RSS at 4 GiB.

Why these two figures (issue 2, "Benchmarks"): verifying an image is hashing it plus one
signature check, so stock OpenSSL hashing the same file is the floor; otaguard should stay
within 1.2x of it as a *whole process*, start-up included, because that is what a device or a
CI job pays. And the envelope is designed to be streamed, so signing and verifying a 4 GiB image
must stay under 64 MiB peak RSS; a regression to "read the whole file" shows up here at once.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from _common import (
    RUNS,
    BenchFailed,
    CommandFailed,
    check,
    flip_byte,
    interleaved,
    last_line,
    quick,
)

TITLE = "Native envelope: verify throughput and peak RSS"

MIB = 2**20
GIB = 2**30
RATIO_GOAL = 1.2
RSS_GOAL_MIB = 64
MIN_FREE_DISK = 10 * GIB
TIMEOUT = 1800


@dataclass
class Usage:
    """Wall time, peak RSS and exit code of exactly one child process."""

    seconds: float
    peak_rss_mib: float
    returncode: int
    stderr: str


#: A fresh, small interpreter that starts the measured command and reports its wait4 rusage.
#: Why: Linux keeps ru_maxrss across exec, so a child forked straight from this (possibly
#: large) bench process would report the bench's own RSS as its peak.
_LAUNCHER = """
import os, sys
pid = os.fork()
if pid == 0:
    try:
        os.execvp(sys.argv[1], sys.argv[1:])
    finally:
        os._exit(127)
_, status, usage = os.wait4(pid, 0)
sys.stderr.write(f"\\nOTAGUARD-BENCH-MAXRSS {usage.ru_maxrss}\\n")
sys.exit(os.waitstatus_to_exitcode(status))
"""


def measure(argv: list[str]) -> Usage:
    """Run a child and take exactly its own peak RSS (wait4 rusage, via a small launcher).

    Why not getrusage(RUSAGE_CHILDREN): that is a maximum over *all* reaped children, so an
    earlier, bigger child would mask the one measured.
    """
    start = time.perf_counter()
    with open(os.devnull, "wb") as sink:
        proc = subprocess.run(
            [sys.executable, "-c", _LAUNCHER, *argv],
            stdout=sink,
            stderr=subprocess.PIPE,
            check=False,
        )
    elapsed = time.perf_counter() - start
    err = proc.stderr.decode(errors="replace")
    marker = "OTAGUARD-BENCH-MAXRSS "
    line = next((ln for ln in err.splitlines() if ln.startswith(marker)), None)
    if line is None:
        raise CommandFailed(f"no rusage from the launcher: {last_line(err)}")
    kib = int(line[len(marker) :])
    err = "\n".join(ln for ln in err.splitlines() if not ln.startswith(marker))
    return Usage(elapsed, kib / 1024, proc.returncode, err)  # ru_maxrss is KiB


def write_random(path: Path, size: int) -> None:
    """Incompressible payload, so no layer (filesystem, hash) can take a shortcut."""
    chunk = 4 * MIB
    with path.open("wb") as f:
        left = size
        while left:
            n = min(chunk, left)
            f.write(os.urandom(n))
            left -= n


def met(ok: bool) -> str:
    """Goal status word for the tables."""
    return "**met**" if ok else "**NOT met**"


def make_key(workdir: Path) -> tuple[Path, Path]:
    """An Ed25519 key pair: the cheapest signature, so the figures are about the payload."""
    key, pub = workdir / "key.pem", workdir / "pub.pem"
    check(
        [
            *("otaguard", "key", "generate", "--algorithm", "ed25519"),
            *("--out", str(key), "--public-out", str(pub)),
        ]
    )
    return key, pub


def sign_argv(key: Path, src: Path, dst: Path) -> list[str]:
    """The signing command of the issue's brief."""
    return [
        "otaguard",
        "sign",
        "--key",
        str(key),
        "--version",
        "1.0.0",
        "--security-counter",
        "1",
        "--hardware-id",
        "hw",
        str(src),
        str(dst),
    ]


def throughput(workdir: Path, key: Path, pub: Path, size: int) -> str:
    """Part (a): verify vs openssl dgst on the same signed file, both whole processes."""
    payload, image = workdir / "payload.bin", workdir / "image.ota"
    write_random(payload, size)
    sign_start = time.perf_counter()
    check(sign_argv(key, payload, image))
    sign_s = time.perf_counter() - sign_start
    payload.unlink()

    verify = ["otaguard", "verify", "--trusted-key", str(pub), str(image)]
    dgst = ["openssl", "dgst", "-sha256", str(image)]
    t_verify, t_dgst = interleaved(verify, dgst)
    t_help, t_python = interleaved(["otaguard", "--help"], ["python", "-c", "pass"])

    # A verifier that accepts anything would be very fast: prove this one checks the payload.
    flip_byte(image, image.stat().st_size // 2)
    tampered = subprocess.run(verify, check=False, capture_output=True, text=True, timeout=TIMEOUT)
    flip_byte(image, image.stat().st_size // 2)
    if tampered.returncode != 1:
        raise CommandFailed(
            f"tampered image: otaguard verify exited {tampered.returncode}, expected 1: "
            f"{last_line(tampered.stderr)}"
        )

    mib = size / MIB
    ratio = t_verify.median / t_dgst.median
    lines = [
        f"### Verify throughput, {mib:.0f} MiB random payload (page cache warm)",
        "",
        f"Whole-process wall time, seconds: median of {RUNS} runs (min-max) after one warm-up, "
        "the two commands run in alternation (a slow spell of the VM hits both).",
        "",
        "| command | time (s) | throughput |",
        "|---|---|---|",
        f"| `otaguard verify --trusted-key pub.pem image.ota` | {t_verify.cell()} "
        f"| {mib / t_verify.median:.0f} MiB/s |",
        f"| `openssl dgst -sha256 image.ota` | {t_dgst.cell()} | {mib / t_dgst.median:.0f} MiB/s |",
        "",
        f"**Ratio otaguard / openssl: {ratio:.2f}x** "
        f"(goal <= {RATIO_GOAL}x: {met(ratio <= RATIO_GOAL)})",
        "",
        "Fixed costs, included in the figures above (same method):",
        "",
        "| command | time (s) |",
        "|---|---|",
        f"| `otaguard --help` (start-up of the click CLI; a plain verify skips click) "
        f"| {t_help.cell()} |",
        f"| `python -c pass` (bare interpreter) | {t_python.cell()} |",
        "",
        f"Signing the same payload (one run, not repeated): {sign_s:.2f} s "
        f"({mib / sign_s:.0f} MiB/s). A copy with one payload byte flipped was rejected (exit 1).",
    ]
    return "\n".join(lines)


def peak_rss(workdir: Path, key: Path, pub: Path, size: int) -> str:
    """Part (b): peak RSS of sign and verify of a sparse file far bigger than any buffer."""
    label = f"{size / GIB:g} GiB" if size >= GIB else f"{size / MIB:g} MiB"
    heading = f"### Peak RSS, {label} sparse payload"
    free = shutil.disk_usage(workdir).free
    if free < MIN_FREE_DISK:
        return f"{heading}\n\nskipped: not enough disk ({free / GIB:.1f} GiB free, need 10 GiB)"

    payload, image = workdir / "sparse.bin", workdir / "sparse.ota"
    with payload.open("wb") as f:
        f.truncate(size)  # same as `truncate -s`: a hole, costs no disk
    try:
        baseline = measure(["otaguard", "--help"])
        signed = measure(sign_argv(key, payload, image))
        if signed.returncode != 0:
            raise CommandFailed(
                f"otaguard sign ({label}) exited {signed.returncode}: {last_line(signed.stderr)}"
            )
        verified = measure(["otaguard", "verify", "--trusted-key", str(pub), str(image)])
        if verified.returncode != 0:
            raise CommandFailed(
                f"otaguard verify ({label}) exited {verified.returncode}: "
                f"{last_line(verified.stderr)}"
            )
    finally:
        # The signed output is a real multi-GiB file, not sparse: never leave it behind.
        image.unlink(missing_ok=True)
        payload.unlink(missing_ok=True)

    worst = max(signed.peak_rss_mib, verified.peak_rss_mib)
    mib = size / MIB
    lines = [
        heading,
        "",
        "Peak RSS of exactly that child process (`os.wait4` rusage), one run each.",
        "",
        "| step | wall time (s) | throughput | peak RSS |",
        "|---|---|---|---|",
        f"| `otaguard sign` | {signed.seconds:.2f} | {mib / signed.seconds:.0f} MiB/s "
        f"| {signed.peak_rss_mib:.1f} MiB |",
        f"| `otaguard verify` | {verified.seconds:.2f} | {mib / verified.seconds:.0f} MiB/s "
        f"| {verified.peak_rss_mib:.1f} MiB |",
        f"| `otaguard --help` (baseline: interpreter + imports) | {baseline.seconds:.2f} | "
        f"| {baseline.peak_rss_mib:.1f} MiB |",
        "",
        f"**Peak RSS: {worst:.1f} MiB** (goal < {RSS_GOAL_MIB} MiB: {met(worst < RSS_GOAL_MIB)})",
    ]
    return "\n".join(lines)


def run(workdir: Path) -> str:
    """Both parts; sizes per the issue, or small ones in quick mode.

    A failing part does not stop the other: its error goes into the section and the bench
    raises at the end, so run.py marks it failed without losing the other part's figures.
    """
    size, big = (32 * MIB, 256 * MIB) if quick() else (256 * MIB, 4 * GIB)
    key, pub = make_key(workdir)
    sections: list[str] = []
    errors: list[str] = []
    for name, part, n in (("throughput", throughput, size), ("peak RSS", peak_rss, big)):
        try:
            sections.append(part(workdir, key, pub, n))
        except (CommandFailed, OSError, subprocess.SubprocessError) as exc:
            errors.append(f"{name}: {exc}")
            sections.append(f"### {name}\n\nfailed: {exc}")
    section = "\n\n".join(sections)
    if errors:
        raise BenchFailed("; ".join(errors), section)
    return section
