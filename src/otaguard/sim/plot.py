"""The simulation's curves as a PNG: devices offered, exposed (running the release), confirmed
and failed over time, with the waves' openings and the halt marked.

Matplotlib through its object API and the Agg backend (no pyplot, no display, no global
state); the PNG carries no timestamp or version, so the same run gives the same bytes.
"""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")

from matplotlib.figure import Figure

from otaguard.sim.engine import SimResult


def render_png(result: SimResult, title: str | None = None) -> bytes:
    series = result.series
    hours = [t / 3600.0 for t in series.t]
    figure = Figure(figsize=(9.0, 5.0), dpi=100)
    axes = figure.add_subplot()
    axes.plot(hours, series.offered, label="offered", color="tab:gray", linestyle="--")
    axes.plot(hours, series.installed, label="installed (running the release)", color="tab:blue")
    axes.plot(hours, series.confirmed, label="confirmed", color="tab:green")
    axes.plot(hours, series.failed, label="failed or silent", color="tab:red")
    for wave in result.waves:
        opened = wave["opened_at_s"]
        if opened is not None and wave["wave"] > 0:
            axes.axvline(opened / 3600.0, color="tab:gray", linewidth=0.6, linestyle=":")
    if result.time_to_halt_s is not None:
        axes.axvline(result.time_to_halt_s / 3600.0, color="tab:red", linewidth=1.2, label="halt")
    axes.set_yscale("symlog", linthresh=10)
    axes.set_ylim(bottom=0)
    axes.set_xlabel("hours since start")
    axes.set_ylabel("devices")
    verdict = (
        f"halted in wave {result.halt_wave}, {result.exposed} exposed"
        if result.halted
        else result.status
    )
    axes.set_title(
        title or f"{result.devices:,} devices, failure rate {result.failure_rate:g}: {verdict}"
    )
    axes.grid(True, which="major", alpha=0.3)
    axes.legend(loc="lower right")
    figure.tight_layout()
    out = io.BytesIO()
    figure.savefig(out, format="png", metadata={"Software": None})
    return out.getvalue()
