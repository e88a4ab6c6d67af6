"""``otaguard verify`` without click: the same meaning, the same verdict, the same words.

The fast path (``otaguard.cli.fastpath``) parses plain command lines itself and hands the
rest to click. These tests hold it to three promises: whatever it accepts, click reads
the same way; a plain line really is taken without click (else there is no speed-up to
speak of); and both ways print and exit identically.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import cached_key, make_image
from otaguard.cli import fastpath, images, verify_args
from otaguard.cli.main import run_click
from otaguard.cli.verifying import VerifyArgs
from otaguard.crypto.keys import KeyType, public_key_pem

WORKDIR = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("fastpath")
    key = cached_key(KeyType.ED25519)
    other = cached_key(KeyType.ECDSA_P256)
    image = tmp / "fw.img"
    image.write_bytes(make_image(os.urandom(3000), [key]))
    bad = tmp / "bad.img"
    data = bytearray(image.read_bytes())
    data[-100] ^= 1
    bad.write_bytes(bytes(data))
    (tmp / "k.pub").write_bytes(public_key_pem(key.public_key()))
    (tmp / "other.pub").write_bytes(public_key_pem(other.public_key()))
    (tmp / "adir").mkdir()
    return {"image": image, "bad": bad, "pub": tmp / "k.pub", "other": tmp / "other.pub"}


def _click_params(argv: list[str]) -> VerifyArgs:
    """What click's ``verify`` command hands to the library, as its callback builds it."""
    with images.verify.make_context("verify", list(argv[1:])) as ctx:
        return VerifyArgs(**ctx.params)


def _tokens(files: dict[str, Path]) -> st.SearchStrategy[list[str]]:
    paths = [str(p) for p in files.values()] + [str(files["pub"].parent / "adir"), "missing.img"]
    flags = [o.flag for o in verify_args.VERIFY_OPTIONS] + ["--json", "--help", "-h", "--"]
    values = ["1", "2", " 3", "-1", "+4", "0x10", "x", "auto", "mcuboot", "native", "eu", ""]
    token = st.one_of(
        st.sampled_from(flags),
        st.sampled_from(paths),
        st.sampled_from(values),
        st.builds(lambda f, v: f"{f}={v}", st.sampled_from(flags), st.sampled_from(values)),
    )
    # mostly well-formed "--option value" pairs, so that many lines reach the fast parser
    pair = st.tuples(st.sampled_from(flags), st.sampled_from(values + paths)).map(list)
    units = st.lists(st.one_of(pair, pair, token.map(lambda t: [t])), max_size=6)
    return st.builds(
        lambda us, image: [t for u in us for t in u] + image,
        units,
        st.sampled_from([[str(files["image"])], [], ["missing.img"]]),
    )


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_whatever_the_fast_parser_takes_click_reads_the_same(
    files: dict[str, Path], data: st.DataObject
) -> None:
    argv = ["verify", *data.draw(_tokens(files))]
    opts = verify_args.parse(argv)
    if opts is not None:
        assert _click_params(argv) == opts


@pytest.mark.parametrize(
    "args",
    [
        ["--trusted-key", "{pub}", "{image}"],
        ["{image}", "--trusted-key", "{pub}", "--json"],
        ["--trusted-key", "{pub}", "--trusted-key", "{other}", "--threshold", "2", "{image}"],
        ["--format", "native", "--hardware-id", "x", "--min-security-counter", "3", "{image}"],
        ["--trusted-root", "{pub}", "--crl", "{pub}", "--region", "eu", "{image}"],
        ["--min-version", "1.0.0", "missing.img"],
    ],
)
def test_plain_lines_are_parsed_without_click(files: dict[str, Path], args: list[str]) -> None:
    argv = ["verify", *(a.format(**{k: str(v) for k, v in files.items()}) for a in args)]
    opts = verify_args.parse(argv)
    assert opts is not None
    assert opts == _click_params(argv)


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["-h", "{image}"],
        ["--trusted-key={pub}", "{image}"],
        ["--threshold", "1", "--threshold", "2", "{image}"],
        ["--json", "--json", "{image}"],
        ["--threshold", "two", "{image}"],
        ["--format", "elf", "{image}"],
        ["--trusted-key", "{pub}"],  # no image
        ["{image}", "{bad}"],  # two images
        ["--trusted-key", "{adir}", "{image}"],  # a directory
        ["--trusted-key", "{pub}", "--", "{image}"],
        ["--trusted-key", "{pub}", "--unknown", "{image}"],
        ["--region", "--json", "{image}"],  # an option's value that looks like an option
        ["--trusted-key"],
    ],
)
def test_anything_unusual_is_left_to_click(files: dict[str, Path], args: list[str]) -> None:
    names = {k: str(v) for k, v in files.items()} | {"adir": str(files["pub"].parent / "adir")}
    assert verify_args.parse(["verify", *(a.format(**names) for a in args)]) is None


def test_other_commands_are_not_taken(files: dict[str, Path]) -> None:
    assert verify_args.parse(["extract", "--trusted-key", str(files["pub"]), "x", "y"]) is None
    assert verify_args.parse([]) is None


def _both_ways(
    capsys: pytest.CaptureFixture[str], plain: list[str], unusual: list[str]
) -> tuple[tuple[int, str, str], tuple[int, str, str]]:
    """Run ``plain`` through the fast path and ``unusual`` (same meaning) through click."""
    assert verify_args.parse(plain) is not None and verify_args.parse(unusual) is None
    code = fastpath.run(plain)
    assert code is not None
    fast = (code, *capsys.readouterr())
    slow_code = run_click(unusual)
    return fast, (slow_code, *capsys.readouterr())


@pytest.mark.parametrize(
    ("image", "key", "extra", "code"),
    [
        ("image", "pub", [], 0),
        ("image", "pub", ["--json"], 0),
        ("bad", "pub", [], 1),
        ("bad", "pub", ["--json"], 1),
        ("image", "other", [], 1),
        ("image", "pub", ["--hardware-id", "other-board"], 1),
        ("image", "pub", ["--threshold", "2"], 2),
        ("image", "pub", ["--min-version", "one"], 2),
        ("image", "pub", ["--min-security-counter", "99"], 1),
    ],
)
def test_fast_and_click_paths_print_and_exit_alike(
    files: dict[str, Path],
    capsys: pytest.CaptureFixture[str],
    image: str,
    key: str,
    extra: list[str],
    code: int,
) -> None:
    plain = ["verify", "--trusted-key", str(files[key]), *extra, str(files[image])]
    unusual = ["verify", f"--trusted-key={files[key]}", *extra, str(files[image])]
    fast, slow = _both_ways(capsys, plain, unusual)
    assert fast == slow
    assert fast[0] == code
    assert (fast[1] if code == 0 else fast[2]).strip()


def _modules_after(argv: list[str]) -> set[str]:
    """The console entry point run in a fresh interpreter: which of our suspects it loaded."""
    probe = (
        "import atexit, os, sys\n"
        "def loaded():\n"
        "    names = ('click', 'otaguard.cli.main', 'otaguard.cli.images')\n"
        "    sys.stderr.write('LOADED ' + ' '.join(m for m in names if m in sys.modules) + '\\n')\n"
        "    sys.stderr.flush()\n"
        "atexit.register(loaded)\n"
        "real_exit = os._exit\n"
        "os._exit = lambda code: (loaded(), real_exit(code))\n"  # the fast path skips atexit
        f"sys.argv = ['otaguard', *{argv!r}]\n"
        "from otaguard.cli.entry import main\n"
        "main()\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=False, cwd=WORKDIR
    )
    line = [x for x in result.stderr.splitlines() if x.startswith("LOADED")][-1]
    return set(line.split()[1:])


def test_a_plain_verify_never_loads_click(files: dict[str, Path]) -> None:
    plain = ["verify", "--trusted-key", str(files["pub"]), str(files["image"])]
    assert _modules_after(plain) == set()
    assert (
        _modules_after(["verify", "--trusted-key", str(files["pub"]), str(files["bad"])]) == set()
    )
    # the same check with an unusual spelling goes through click: the probe can tell
    assert "click" in _modules_after(
        ["verify", f"--trusted-key={files['pub']}", str(files["image"])]
    )


def test_the_parsed_arguments_are_a_frozen_value(files: dict[str, Path]) -> None:
    import dataclasses

    args = verify_args.parse(["verify", "--trusted-key", str(files["pub"]), str(files["image"])])
    assert isinstance(args, VerifyArgs) and args.trusted_keys == (str(files["pub"]),)
    with pytest.raises(dataclasses.FrozenInstanceError):
        args.image = "another.img"  # type: ignore[misc]
    assert verify_args.plain_image(["verify", str(files["image"])]) == str(files["image"])
    assert verify_args.plain_image(["verify", "--help", str(files["image"])]) is None
