"""Benchmark harness for otaguard: runs `bench/bench_*.py` and writes `bench/RESULTS.md`.

Why a harness of our own instead of pytest-benchmark or similar: the issue's goals are about
*whole processes* (the `otaguard` CLI against `openssl` and `imgtool`), peak RSS of a child
process and multi-GiB files, which micro-benchmark frameworks do not model. The harness only
does the plumbing every bench needs: discovery, a scratch directory per bench, a header that
says on which machine and commit the figures were taken, and failure isolation (one broken
bench is reported, the others still run).

Contract for a bench module `bench/bench_<name>.py`:

* `TITLE: str`, the section heading;
* `run(workdir: pathlib.Path) -> str`, returns a markdown section (without the heading);
* quick mode is signalled through the environment variable `OTAGUARD_BENCH_QUICK=1`, so a bench
  module can also be run on its own;
* a bench that fails raises; if the exception has a `section` attribute (str), that partial
  markdown is kept in RESULTS.md under the failure line, so measurements taken before the
  failure are not lost.

Usage: `python bench/run.py [--quick] [--keep-others] [NAME ...]` (`make bench` runs
everything, full size; `--keep-others` keeps the sections of the benches not run).
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import os
import platform
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
WORK = BENCH_DIR / "work"
RESULTS = BENCH_DIR / "RESULTS.md"
QUICK_ENV = "OTAGUARD_BENCH_QUICK"


@dataclass
class Outcome:
    """What one bench produced; kept so RESULTS.md is written once, after all benches ran."""

    name: str
    title: str
    seconds: float
    section: str
    error: str | None


def discover() -> dict[str, Path]:
    """Map bench name (file name without `bench_` and `.py`) to its path, in name order."""
    return {p.stem.removeprefix("bench_"): p for p in sorted(BENCH_DIR.glob("bench_*.py"))}


def load(name: str, path: Path) -> ModuleType:
    """Import a bench by file path: bench/ is not a package and must not become one."""
    spec = importlib.util.spec_from_file_location(f"otaguard_bench_{name}", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    # Registered before executing: dataclasses resolve string annotations via sys.modules.
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[spec.name]
        raise
    return module


def one_line(exc: BaseException) -> str:
    """The first non-empty line of an exception, so RESULTS.md gets one readable line each.

    A bench's own failure (one carrying a `section`) already words its message for the reader;
    anything else is unexpected, so its type is named too.
    """
    expected = hasattr(exc, "section")
    for line in str(exc).splitlines():
        if line.strip():
            return line.strip() if expected else f"{type(exc).__name__}: {line.strip()}"
    return type(exc).__name__


def run_bench(name: str, path: Path) -> Outcome:
    """Run one bench in its own scratch directory; never raise, so later benches still run."""
    start = time.perf_counter()
    title = name
    workdir = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=WORK))
    try:
        module = load(name, path)
        title = str(getattr(module, "TITLE", name))
        section = module.run(workdir)
        if not isinstance(section, str):
            raise TypeError(f"run() returned {type(section).__name__}, not str")
        return Outcome(name, title, time.perf_counter() - start, section, None)
    except Exception as exc:
        if not hasattr(exc, "section"):
            traceback.print_exc()  # unexpected: the full trace helps whoever fixes the bench
        partial = getattr(exc, "section", "")
        return Outcome(
            name,
            title,
            time.perf_counter() - start,
            partial if isinstance(partial, str) else "",
            one_line(exc),
        )
    finally:
        # Benches create multi-GiB files: free the disk as soon as each one is done.
        shutil.rmtree(workdir, ignore_errors=True)


def read_proc(path: str, key: str) -> str | None:
    """Value of `key` in a `key : value` file of /proc, None off Linux or if absent."""
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                k, sep, v = line.partition(":")
                if sep and k.strip() == key:
                    return v.strip()
    except OSError:
        return None
    return None


def command_output(*argv: str) -> str | None:
    """First line of a command's stdout, None if it is missing or fails (header is best effort)."""
    try:
        out = subprocess.run(
            argv, check=False, capture_output=True, text=True, timeout=30, cwd=REPO
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    lines = out.stdout.strip().splitlines()
    return lines[0] if lines else None


def git_commit() -> str:
    """HEAD plus a dirty marker: figures taken on uncommitted code must say so."""
    head = command_output("git", "rev-parse", "--short=12", "HEAD") or "unknown"
    try:
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            check=False,
            capture_output=True,
            text=True,
            timeout=30,
            cwd=REPO,
        )
        dirty = bool(status.stdout.strip())
    except (OSError, subprocess.SubprocessError):
        dirty = False
    return f"{head} + uncommitted changes" if dirty else head


def ram() -> str:
    """Total RAM in GiB, from /proc/meminfo."""
    total = read_proc("/proc/meminfo", "MemTotal")
    if total and total.endswith("kB"):
        return f"{int(total.split()[0]) / 2**20:.1f} GiB"
    return "unknown"


def cryptography_openssl() -> str:
    """OpenSSL linked into `cryptography`, which otaguard uses (may differ from the CLI's)."""
    try:
        from cryptography.hazmat.backends.openssl.backend import backend

        return str(backend.openssl_version_text())
    except Exception:
        return "unknown"


def header(selected: list[str], quick: bool, started: dt.datetime, commit_at_start: str) -> str:
    """Machine and software description, so figures can be compared between runs.

    Built after the benches ran; the commit is taken before and after, because code edited
    during a run (a shared checkout) makes the figures belong to neither state.
    """
    commit = git_commit()
    if commit != commit_at_start:
        commit = f"{commit_at_start} at start, {commit} at end (code changed during the run)"
    cpu = read_proc("/proc/cpuinfo", "model name") or platform.processor() or "unknown"
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    cores = f"{os.cpu_count()}" + (f" ({affinity} usable)" if affinity != os.cpu_count() else "")
    rows = [
        ("Date", started.strftime("%Y-%m-%d %H:%M:%S UTC (start of run)")),
        ("Host", socket.gethostname()),
        ("CPU", cpu),
        ("Cores", cores),
        ("RAM", ram()),
        ("OS", platform.platform()),
        ("Python", f"{platform.python_version()} ({sys.executable})"),
        ("OpenSSL (CLI)", command_output("openssl", "version") or "not found"),
        ("OpenSSL (cryptography)", cryptography_openssl()),
        ("OpenSSL (hashlib)", ssl.OPENSSL_VERSION),
        ("otaguard", command_output("otaguard", "--version") or "not found"),
        ("otaguard commit", commit),
        ("Benches", ", ".join(selected) + (" (**quick mode: reduced sizes**)" if quick else "")),
    ]
    lines = [
        "# otaguard benchmark results",
        "",
        "Generated by `bench/run.py` (`make bench`); do not edit by hand. See bench/README.md.",
        "",
        "| | |",
        "|---|---|",
    ]
    lines += [f"| {k} | {v} |" for k, v in rows]
    return "\n".join(lines) + "\n"


def render(outcomes: list[Outcome], head: str) -> str:
    """The whole RESULTS.md text."""
    parts = [head]
    for o in outcomes:
        parts.append(f"\n## {o.title}\n")
        if o.error:
            parts.append(f"\n**failed:** {o.error}\n")
        if o.section:
            parts.append("\n" + o.section.strip() + "\n")
        parts.append(f"\n_Bench `{o.name}` took {o.seconds:.1f} s._\n")
    return "".join(parts)


def keep_others(previous: str, rendered: str) -> str:
    """``rendered`` (a run of some benches) with the other sections of ``previous`` kept.

    A section of ``previous`` whose title the new run has replaces it in place; the
    others stay as they were, each marked once with the date and commit of the run
    that measured it (taken from ``previous``'s header); new sections go last.
    """
    head, new = _sections(rendered)
    old_head, old = _sections(previous)
    date = _header_value(old_head, "Date")
    commit = _header_value(old_head, "otaguard commit")
    mark = f"_Carried over from the run of {date}, commit {commit}._"
    merged = []
    for title, body in old:
        if title in dict(new):
            merged.append((title, dict(new)[title]))
        elif "_Carried over from the run of" in body:
            merged.append((title, body))
        else:
            merged.append((title, body.rstrip("\n") + f"\n\n{mark}\n"))
    merged += [(t, b) for t, b in new if t not in dict(old)]
    return head + "".join(f"\n## {t}\n{b}" for t, b in merged)


def _sections(text: str) -> tuple[str, list[tuple[str, str]]]:
    head, *parts = text.split("\n## ")
    sections = []
    for part in parts:
        title, _, body = part.partition("\n")
        sections.append((title, body))
    return head, sections


def _header_value(head: str, key: str) -> str:
    for line in head.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 2 and cells[0] == key:
            return cells[1]
    return "unknown"


def main(argv: list[str] | None = None) -> int:
    """Run the selected benches and write RESULTS.md; exit 1 if any bench failed."""
    benches = discover()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("names", nargs="*", help=f"benches to run (default all): {list(benches)}")
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke test")
    parser.add_argument(
        "--keep-others",
        action="store_true",
        help="keep the sections of benches not run from the existing RESULTS.md (marked)",
    )
    args = parser.parse_args(argv)

    unknown = [n for n in args.names if n not in benches]
    if unknown:
        parser.error(f"unknown bench(es) {unknown}; available: {list(benches)}")
    selected = args.names or list(benches)

    # Benches call `otaguard`, `imgtool` by name: make the venv's win even outside `make bench`.
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    os.environ[QUICK_ENV] = "1" if args.quick else "0"

    started = dt.datetime.now(dt.UTC)
    commit_at_start = git_commit()
    WORK.mkdir(exist_ok=True)
    outcomes: list[Outcome] = []
    try:
        for name in selected:
            print(f"bench {name}: running", file=sys.stderr, flush=True)
            outcome = run_bench(name, benches[name])
            status = f"FAILED: {outcome.error}" if outcome.error else "ok"
            print(f"bench {name}: {status} ({outcome.seconds:.1f} s)", file=sys.stderr, flush=True)
            outcomes.append(outcome)
    finally:
        shutil.rmtree(WORK, ignore_errors=True)

    text = render(outcomes, header(selected, args.quick, started, commit_at_start))
    if args.keep_others and RESULTS.exists():
        text = keep_others(RESULTS.read_text("utf-8"), text)
    tmp = RESULTS.with_suffix(".md.tmp")
    tmp.write_text(text, "utf-8")
    tmp.replace(RESULTS)
    print(f"wrote {RESULTS.relative_to(REPO)}", file=sys.stderr)
    return 1 if any(o.error for o in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
