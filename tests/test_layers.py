"""The layer rule of docs/architecture.md, checked on every import (lazy ones included)."""

from __future__ import annotations

import ast
from pathlib import Path

import otaguard

SRC = Path(otaguard.__file__).parent
RANK = {
    "errors": 0,
    "_atomic": 0,
    "_files": 0,
    "_statefile": 0,
    "crypto": 1,
    "image": 2,
    "pki": 2,
    "delta": 2,
    "audit": 2,
    "protocol": 3,
    "device": 3,
    "repo": 3,
    "agent": 4,
    "server": 5,
    "cli": 6,
}
#: Same rank, still forbidden: the device side and the repository side meet only in agent.
APART = {("device", "repo"), ("repo", "device")}


def _package(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "otaguard" or len(parts) < 2:
        return None
    return parts[1]


def test_lower_layers_never_import_higher_ones() -> None:
    problems = []
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC)
        if len(rel.parts) == 1 and rel.name == "__init__.py":
            continue
        here = rel.parts[0].removesuffix(".py")
        assert here in RANK, f"{rel}: package {here} has no layer in docs/architecture.md"
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            for name in names:
                there = _package(name)
                if there is None or there == here:
                    continue
                if RANK[there] > RANK[here] or (here, there) in APART:
                    problems.append(f"{rel}:{node.lineno} imports {name}")
    assert problems == []
