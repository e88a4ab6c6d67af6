"""Image pairs for the delta benchmark, built from sources reachable here.

* ``fw-cortex-m4-fix``: a C program (generated: many small functions, tables,
  printf from newlib-nano) cross-compiled for Cortex-M4 Thumb with Debian's
  ``gcc-arm-none-eabi``, before and after a four-line change early in the
  source (everything after it moves), as raw ``objcopy -O binary`` images;
* ``fw-cortex-m4-release``: the same program, "upstream release": a dozen
  functions changed, eight added, ten entries of a constant table changed;
* ``fw-cortex-m4-rewrite``: a stress pair, not a release: the same source
  structure with the constants of every function drawn anew (this was the
  "release" pair until 2026-12-02, by accident: its table change consumed ten
  draws of the generator every later constant came from);
* ``so-patch-release``: the compiled extension of two consecutive patch
  releases of a PyPI wheel (``pip download --no-deps``), x86-64;
* ``rootfs-tar``: a tar of a directory tree (installed Python packages) and of
  the same tree with a few packages swapped for other releases;
* ``rootfs-ext4``: ``mkfs.ext4 -d`` images of those two trees;
* ``large-ext4`` (``OTAGUARD_BENCH_LARGE=1``): the same with a far larger tree.

Every pair is written as ``NAME.old`` / ``NAME.new`` raw files; the benchmark
signs them. Missing tools are installed with apt-get (root here) or the pair
is skipped with a reason. ``build(workdir, quick, large)`` returns the pairs.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

MIB = 1 << 20


@dataclass(frozen=True)
class Pair:
    name: str
    what: str
    old: Path
    new: Path
    stress: bool = False  # reported, but not one of the issue's goals (not a real release)


def _apt(package: str, command: str) -> bool:
    if shutil.which(command):
        return True
    if os.geteuid() != 0:
        return False
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=False, env=env, capture_output=True)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", package], check=False, env=env, capture_output=True
    )
    return shutil.which(command) is not None


# --- firmware -------------------------------------------------------------------


def _firmware_source(functions: int, variant: int) -> str:
    """A deterministic C program.

    ``variant`` 0 = base, 1 = small fix, 2 = upstream release (of the fix), 3 = rewrite.
    The release draws its changes from a generator of its own, so every constant it does not
    change stays what it was (3 shares one generator: every later constant moves).
    """
    rnd = random.Random(42)
    change = random.Random(4242) if variant == 2 else rnd
    out = ["#include <stdio.h>", "#include <stdint.h>", "#include <string.h>", ""]
    table = [rnd.randrange(1 << 16) for _ in range(256)]
    if variant >= 2:
        table[10:20] = [change.randrange(1 << 16) for _ in range(10)]
    out.append("static const uint16_t table[256] = {" + ",".join(map(str, table)) + "};")
    out.append("volatile uint32_t sink;")
    changed = 100 if variant == 2 else 40  # the release changes 12 of 1200 functions
    for i in range(functions):
        a, b, c = rnd.randrange(1, 97), rnd.randrange(1, 13), rnd.randrange(256)
        body = [
            f"uint32_t f{i}(uint32_t x, const char *s) {{",
            f"  uint32_t acc = x * {a}u + table[(x + {c}) & 255];",
            f"  for (int k = 0; k < {b}; k++) acc = (acc << 3) ^ (acc >> 5) ^ (uint32_t)s[k & 7];",
        ]
        if i % 7 == 0:
            body.append(f'  if (acc % {a + 3}u == 1) printf("f{i}: %lu\\n", (unsigned long)acc);')
        if i > 0:
            body.append(f"  if (acc & 1) acc += f{rnd.randrange(i)}(acc >> 1, s + 1);")
        if variant >= 1 and i == 3:  # the few-line fix, early: every later address moves
            body += [
                "  if (x == 0xdeadbeefu) {",
                '    printf("guard hit\\n");',
                "    return 0;",
                "  }",
            ]
        if variant >= 2 and i % changed == 5:
            body.append(f"  acc ^= (uint32_t)strlen(s) * {a + 1}u;")
        body += ["  return acc;", "}"]
        out += body
    added = range(0, 30, 4) if variant == 2 else range(3, 4)  # called from main: kept by the linker
    if variant >= 2:
        out += [
            f'uint32_t g{i}(uint32_t x) {{ return f{i}(x, "release") + {i}; }}' for i in range(30)
        ]
    calls = " + ".join(
        f'f{i}(sink, "abcdefgh")' for i in range(0, functions, max(1, functions // 40))
    )
    extra = "".join(f" + g{i}(sink)" for i in added) if variant >= 2 else ""
    out += [
        "int main(void) {",
        f"  sink = {calls}{extra};",
        '  printf("%lu\\n", (unsigned long)sink);',
        "  return 0;",
        "}",
    ]
    return "\n".join(out) + "\n"


def _compile_firmware(work: Path, variant: int, functions: int) -> Path:
    src = work / f"fw{variant}.c"
    src.write_text(_firmware_source(functions, variant))
    elf = work / f"fw{variant}.elf"
    subprocess.run(
        [
            "arm-none-eabi-gcc",
            "-mcpu=cortex-m4",
            "-mthumb",
            "-Os",
            "-ffunction-sections",
            "-Wl,--gc-sections",
            "--specs=nano.specs",
            "--specs=nosys.specs",
            "-o",
            str(elf),
            str(src),
        ],
        check=True,
        capture_output=True,
    )
    binary = work / f"fw{variant}.bin"
    subprocess.run(["arm-none-eabi-objcopy", "-O", "binary", str(elf), str(binary)], check=True)
    return binary


def firmware_pairs(work: Path, quick: bool) -> tuple[list[Pair], list[str]]:
    if not _apt("gcc-arm-none-eabi", "arm-none-eabi-gcc") or not _apt(
        "libnewlib-arm-none-eabi", "arm-none-eabi-gcc"
    ):
        return [], ["firmware pairs skipped: gcc-arm-none-eabi not installable"]
    functions = 300 if quick else 1200
    base = _compile_firmware(work, 0, functions)
    fix = _compile_firmware(work, 1, functions)
    release = _compile_firmware(work, 2, functions)
    rewrite = _compile_firmware(work, 3, functions)
    return [
        Pair("fw-cortex-m4-fix", "Cortex-M4 firmware, 4-line fix", base, fix),
        Pair(
            "fw-cortex-m4-release",
            "Cortex-M4 firmware, upstream release",
            fix,
            release,
        ),
        Pair(
            "fw-cortex-m4-rewrite",
            "Cortex-M4 firmware, every constant redrawn (stress, not a release)",
            fix,
            rewrite,
            stress=True,
        ),
    ], []


# --- wheels ---------------------------------------------------------------------


def _wheel_member(wheel: Path, suffix: str) -> bytes:
    with zipfile.ZipFile(wheel) as zf:
        names = sorted(n for n in zf.namelist() if n.endswith(suffix))
        return zf.read(names[0])


def _download(work: Path, spec: str) -> Path | None:
    dest = work / "wheels"
    dest.mkdir(exist_ok=True)
    before = set(dest.iterdir())
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--python-version",
            "3.11",
            "--platform",
            "manylinux_2_17_x86_64",
            "--platform",
            "manylinux2014_x86_64",
            "-q",
            "-d",
            str(dest),
            spec,
        ],
        capture_output=True,
        check=False,
    )
    new = sorted(set(dest.iterdir()) - before)
    if result.returncode or not new:
        name = spec.split("==", maxsplit=1)[0].replace("-", "_")
        found = sorted(dest.glob(f"{name}-{spec.split('==')[1]}-*.whl"))
        return found[0] if found else None
    return new[0]


def wheel_pairs(work: Path, quick: bool) -> tuple[list[Pair], list[str]]:
    # msgpack 1.0.8 is a real patch release of its C extension (pyzstd 0.16.1 -> 0.16.2,
    # tried first, changed a few bytes only: no test of a delta tool).
    old_spec, new_spec = "msgpack==1.0.7", "msgpack==1.0.8"
    old_whl, new_whl = _download(work, old_spec), _download(work, new_spec)
    if old_whl is None or new_whl is None:
        return [], [f"wheel pair skipped: could not download {old_spec} / {new_spec}"]
    old, new = work / "so.old", work / "so.new"
    old.write_bytes(_wheel_member(old_whl, ".so"))
    new.write_bytes(_wheel_member(new_whl, ".so"))
    package, old_version = old_spec.split("==")
    what = f"x86-64 .so, {package} {old_version} -> {new_spec.split('==')[1]}"
    return [Pair("so-patch-release", what, old, new)], []


# --- root filesystems -----------------------------------------------------------


def _tree(work: Path, name: str, budget: int) -> Path:
    """Copy installed packages (site-packages, then the stdlib) up to ``budget`` bytes."""
    root = work / name
    if root.exists():
        shutil.rmtree(root)
    root.mkdir()
    sources = [Path(sysconfig.get_paths()["purelib"]), Path(sysconfig.get_paths()["stdlib"])]
    total = 0
    for source in sources:
        for entry in sorted(source.iterdir()):
            if entry.name in {"__pycache__", "site-packages", "test"} or entry.is_symlink():
                continue
            size = (
                sum(f.stat().st_size for f in entry.rglob("*") if f.is_file())
                if entry.is_dir()
                else entry.stat().st_size
            )
            if total + size > budget:
                continue
            target = root / source.name / entry.name
            target.parent.mkdir(parents=True, exist_ok=True)
            if entry.is_dir():
                shutil.copytree(
                    entry, target, symlinks=True, ignore=shutil.ignore_patterns("__pycache__")
                )
            else:
                shutil.copy2(entry, target)
            total += size
    return root


def _change_packages(tree: Path, seed: int) -> None:
    """A few packages 'upgraded': lines edited in half their files, a module added, one removed.

    Edits are source-like, not random bytes: a line duplicated with its numbers changed, a
    line dropped; the added module is another package's file with its names changed.
    """
    rnd = random.Random(seed)
    dirs = sorted(
        p for p in tree.rglob("*") if p.is_dir() and any(f.is_file() for f in p.iterdir())
    )
    donors = sorted(f for f in tree.rglob("*.py") if f.stat().st_size > 2000)
    for directory in rnd.sample(dirs, min(3, len(dirs))):
        files = sorted(f for f in directory.iterdir() if f.is_file())
        for f in files[: max(1, len(files) // 2)]:
            lines = f.read_bytes().split(b"\n")
            for _ in range(5):
                k = rnd.randrange(len(lines))
                edited = bytes(c if not 48 <= c <= 57 else 48 + (c - 47) % 10 for c in lines[k])
                lines[k : k + 1] = [lines[k], edited] if rnd.random() < 0.7 else []
            f.write_bytes(b"\n".join(lines))
        if donors:
            donor = rnd.choice(donors).read_bytes().replace(b"def ", b"def release_")
            (directory / "new_in_release.py").write_bytes(donor)
        if len(files) > 2:
            files[-1].unlink()


def _tar(tree: Path, out: Path) -> None:
    with tarfile.open(out, "w", format=tarfile.GNU_FORMAT) as tar:
        for path in sorted(tree.rglob("*")):
            info = tar.gettarinfo(str(path), arcname=str(path.relative_to(tree)))
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
            if info.isfile():
                with open(path, "rb") as handle:
                    tar.addfile(info, handle)
            else:
                tar.addfile(info)


def _ext4(tree: Path, out: Path, size: int) -> bool:
    if not _apt("e2fsprogs", "mkfs.ext4"):
        return False
    out.unlink(missing_ok=True)
    env = {**os.environ, "E2FSPROGS_FAKE_TIME": "1700000000"}
    result = subprocess.run(
        [
            "mkfs.ext4",
            "-q",
            "-F",
            "-b",
            "4096",
            "-U",
            "6f6f7461-6775-6172-6400-000000000001",
            "-E",
            "hash_seed=6f6f7461-6775-6172-6400-000000000002,root_owner=0:0",
            "-d",
            str(tree),
            str(out),
            f"{size // 1024}k",
        ],
        env=env,
        capture_output=True,
        check=False,
    )
    return result.returncode == 0


def rootfs_pairs(work: Path, budget: int, prefix: str) -> tuple[list[Pair], list[str]]:
    old_tree = _tree(work, f"{prefix}-tree-old", budget)
    new_tree = work / f"{prefix}-tree-new"
    if new_tree.exists():
        shutil.rmtree(new_tree)
    shutil.copytree(old_tree, new_tree, symlinks=True)
    _change_packages(new_tree, 7)
    pairs, notes = [], []
    tar_old, tar_new = work / f"{prefix}.tar.old", work / f"{prefix}.tar.new"
    _tar(old_tree, tar_old)
    _tar(new_tree, tar_new)
    mib = tar_new.stat().st_size / MIB
    pairs.append(
        Pair(f"{prefix}-tar", f"tar of a {mib:.0f} MiB tree, 3 packages changed", tar_old, tar_new)
    )
    size = int(tar_new.stat().st_size * 1.5) + 8 * MIB
    size -= size % 4096
    ext_old, ext_new = work / f"{prefix}.ext4.old", work / f"{prefix}.ext4.new"
    if _ext4(old_tree, ext_old, size) and _ext4(new_tree, ext_new, size):
        what = f"ext4 image ({size / MIB:.0f} MiB) of the same trees"
        pairs.append(Pair(f"{prefix}-ext4", what, ext_old, ext_new))
    else:
        notes.append(f"{prefix}-ext4 skipped: mkfs.ext4 -d failed")
    shutil.rmtree(old_tree)
    shutil.rmtree(new_tree)
    return pairs, notes


def build(work: Path, *, quick: bool, large: bool) -> tuple[list[Pair], list[str]]:
    work.mkdir(parents=True, exist_ok=True)
    pairs: list[Pair] = []
    notes: list[str] = []
    for got, why in (
        firmware_pairs(work, quick),
        wheel_pairs(work, quick),
        rootfs_pairs(work, (6 if quick else 48) * MIB, "rootfs"),
    ):
        pairs += got
        notes += why
    if large:
        got, why = rootfs_pairs(work, 400 * MIB, "large")
        pairs += got
        notes += why
    return pairs, notes


if __name__ == "__main__":
    built, skipped = build(
        Path(sys.argv[1]), quick="--quick" in sys.argv, large="--large" in sys.argv
    )
    for pair in built:
        sizes = f"{pair.old.stat().st_size} -> {pair.new.stat().st_size} bytes"
        print(f"{pair.name}: {sizes} ({pair.what})")
    for note in skipped:
        print(note)
