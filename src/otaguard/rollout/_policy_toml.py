"""Writing a :class:`~otaguard.rollout.policy.Policy` back as TOML.

``tomllib`` only reads; a policy has a small fixed shape (scalars, one array of numbers or
strings, arrays of small tables), so a writer for that shape is a page, not a dependency.
Every value is written explicitly, so the text means the same whatever the defaults become.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from otaguard.rollout.policy import Policy


def _value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)  # repr round-trips; policies hold no nan or inf
    if isinstance(value, str):
        return json.dumps(value)  # policy strings are plain names: JSON quoting is TOML quoting
    if isinstance(value, tuple | list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} to a policy")


def _table(name: str, rows: list[tuple[str, object]], header: str = "[{}]") -> list[str]:
    return [header.format(name)] + [f"{key} = {_value(value)}" for key, value in rows] + [""]


def dump(policy: Policy) -> str:
    w, a, h, he, r = policy.waves, policy.advance, policy.halt, policy.health, policy.retry
    lines: list[str] = ["# otaguard rollout policy (docs/rollout.md)", ""]
    wave_rows: list[tuple[str, object]] = (
        [] if w.growth is not None else [("fractions", w.fractions)]
    )
    lines += _table(
        "waves", [*wave_rows, ("min_devices", w.min_devices), ("min_soak_s", w.min_soak_s)]
    )
    if w.growth is not None:
        g = w.growth
        lines += _table("waves.growth", [("start", g.start), ("factor", g.factor), ("cap", g.cap)])
    lines += _table(
        "advance", [("min_confirmed", a.min_confirmed), ("require_health", a.require_health)]
    )
    lines += _table(
        "halt",
        [
            ("failure_threshold", h.failure_threshold),
            ("confidence", h.confidence),
            ("min_sample", h.min_sample),
            ("methods", [m.value for m in h.methods]),
            ("acceptable_failure_rate", h.acceptable_failure_rate),
            ("sprt_beta", h.sprt_beta),
            ("deadline_s", h.deadline_s),
            ("revert_on_halt", h.revert_on_halt),
        ],
    )
    lines += _table(
        "health",
        [
            ("confidence", he.confidence),
            ("min_devices", he.min_devices),
            ("window_s", he.window_s),
            # Written even when empty: an absent list would bring the default checks back.
            *([("rates", [])] if not he.configured else []),
        ],
    )
    for rate in he.rates:
        lines += _table(
            "health.rates", [("name", rate.name), ("max_ratio", rate.max_ratio)], "[[{}]]"
        )
    for prop in he.proportions:
        lines += _table(
            "health.proportions",
            [("name", prop.name), ("max_difference", prop.max_difference)],
            "[[{}]]",
        )
    for metric in he.metrics:
        lines += _table(
            "health.metrics",
            [
                ("name", metric.name),
                ("max_difference", metric.max_difference),
                ("higher_is_worse", metric.higher_is_worse),
            ],
            "[[{}]]",
        )
    lines += _table(
        "retry",
        [
            ("max_attempts", r.max_attempts),
            ("initial_backoff_s", r.initial_backoff_s),
            ("backoff_factor", r.backoff_factor),
            ("max_backoff_s", r.max_backoff_s),
        ],
    )
    return "\n".join(lines).rstrip("\n") + "\n"
