"""The layer rule of docs/architecture.md, checked on every import (lazy and relative ones).

Every package has a rank of its own, so an import between two packages of the same
architectural layer (``pki`` and ``delta``, say) is allowed in one direction only, and
a cycle between them cannot creep in.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import otaguard

SRC = Path(otaguard.__file__).parent
#: Lower ranks never import higher ones. The order within an architectural layer is the
#: one the code needs today (pki and delta read images; nothing below reads them).
RANK = {
    "errors": 0,
    "_files": 1,
    "_atomic": 2,
    "_stdio": 3,
    "_statefile": 4,
    "crypto": 5,
    "image": 6,
    "pki": 7,
    "delta": 8,
    "audit": 9,
    "rollout": 10,
    "protocol": 11,
    "device": 12,
    "repo": 12,
    "agent": 13,
    "sim": 14,
    "server": 15,
    "cli": 16,
    "tools": 17,
}
#: Same rank, still forbidden: the device side and the repository side meet only in agent.
APART = {("device", "repo"), ("repo", "device")}
#: Never, whatever the ranks say: the device side does not depend on the fleet server.
NEVER = {
    ("agent", "server"),
    ("device", "server"),
    ("protocol", "server"),
    ("server", "agent"),  # the server trusts no device-side code, nor the reverse
}


def _package(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "otaguard" or len(parts) < 2:
        return None
    return parts[1]


def _imported(node: ast.AST, rel: Path) -> list[str]:
    """Absolute module names an import statement refers to (relative ones resolved)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if not isinstance(node, ast.ImportFrom):
        return []
    if node.level == 0:
        return [node.module] if node.module else []
    package = ["otaguard", *rel.parts[:-1]]  # a module's package, or an __init__'s own
    base = package[: len(package) - (node.level - 1)]
    if node.module:
        return [".".join([*base, node.module])]
    return [".".join([*base, alias.name]) for alias in node.names]


def _violations(rel: Path, source: str) -> list[str]:
    here = rel.parts[0].removesuffix(".py")
    assert here in RANK, f"{rel}: package {here} has no layer in docs/architecture.md"
    problems = []
    for node in ast.walk(ast.parse(source)):
        for name in _imported(node, rel):
            there = _package(name)
            if there is None or there == here:
                continue
            assert there in RANK, f"{rel}: imports {name}, whose package has no rank"
            if RANK[there] > RANK[here] or (here, there) in APART | NEVER:
                problems.append(f"{rel}:{getattr(node, 'lineno', 0)} imports {name}")
    return problems


def test_lower_layers_never_import_higher_ones() -> None:
    problems = []
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC)
        if len(rel.parts) == 1 and rel.name == "__init__.py":
            continue
        problems += _violations(rel, path.read_text())
    assert problems == []


def test_every_package_has_a_rank_of_its_own() -> None:
    shared = [r for r in set(RANK.values()) if list(RANK.values()).count(r) > 1]
    assert all({k for k, v in RANK.items() if v == r} == {"device", "repo"} for r in shared)


@pytest.mark.parametrize(
    ("rel", "source"),
    [
        ("pki/x.py", "from otaguard.delta import apply\n"),
        ("image/x.py", "from ..pki import validate\n"),
        ("image/sub/x.py", "from ...delta.apply import f\n"),
        ("crypto/x.py", "from .. import image\n"),
        ("device/x.py", "import otaguard.repo.client\n"),
        ("agent/x.py", "def f():\n    from otaguard.server import app\n"),
    ],
)
def test_the_checker_catches_upward_imports(rel: str, source: str) -> None:
    assert _violations(Path(rel), source) != []


@pytest.mark.parametrize(
    ("rel", "source"),
    [
        ("delta/x.py", "from ..image import envelope_format\n"),
        ("delta/x.py", "from . import format\n"),
        ("cli/x.py", "from otaguard.server import app\n"),
    ],
)
def test_the_checker_allows_downward_and_local_imports(rel: str, source: str) -> None:
    assert _violations(Path(rel), source) == []
