"""Shared fixtures; plain helpers live in ``helpers.py`` (importable as ``helpers``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from helpers import ALL_KEY_TYPES, CliResult, cached_key
from otaguard.cli.main import run
from otaguard.crypto.keys import PrivateKey

# Speed is measured in bench/, never by timing a test: no per-example deadline, which a
# loaded CI machine (two pytest workers beside PostgreSQL and servers) would trip at random.
settings.register_profile("otaguard", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("otaguard")


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., CliResult]:
    """Run ``otaguard ARGS...`` in process, through the real entry (fast path included)."""

    def invoke(*args: str | Path) -> CliResult:
        code = run([str(a) for a in args])
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return invoke


@pytest.fixture(params=ALL_KEY_TYPES, ids=[k.value for k in ALL_KEY_TYPES])
def any_key(request: pytest.FixtureRequest) -> PrivateKey:
    return cached_key(request.param)


@pytest.fixture(scope="session")
def softhsm(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A fresh SoftHSM2 token for this test session (the Makefile installs softhsm2).

    Returns the URI prefix for keys in it; the PIN comes from $OTAGUARD_TEST_PIN.
    """
    import os
    import shutil
    import subprocess

    util = shutil.which("softhsm2-util")
    assert util, "softhsm2 is not installed: run the tests through 'make test'"
    base = tmp_path_factory.mktemp("softhsm")
    (base / "tokens").mkdir()
    conf = base / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {base}/tokens\nobjectstore.backend = file\n")
    os.environ["SOFTHSM2_CONF"] = str(conf)
    os.environ["OTAGUARD_TEST_PIN"] = "4321"
    subprocess.run(
        [
            util,
            "--init-token",
            "--free",
            "--label",
            "otaguard-test",
            "--so-pin",
            "9999",
            "--pin",
            "4321",
        ],
        check=True,
        capture_output=True,
    )
    module = HSM_MODULE
    return {
        "module": module,
        "prefix": "pkcs11:token=otaguard-test;object=",
        "query": f"?module-path={module}&pin-source=env:OTAGUARD_TEST_PIN",
    }


HSM_MODULE = "/usr/lib/softhsm/libsofthsm2.so"


def hsm_uri(softhsm: dict[str, str], label: str) -> str:
    return softhsm["prefix"] + label + softhsm["query"]
