"""A fleet-scale simulation that drives the real campaign evaluator (NumPy).

``simulate(FleetModel(devices=5_000_000), policy)`` draws every device's behaviour in bulk
(:mod:`~otaguard.sim.fleet`), assigns waves with the campaign's own cohort rule
(:mod:`~otaguard.sim.cohorts`) and ticks :func:`otaguard.rollout.step` over simulated time
(:mod:`~otaguard.sim.engine`); :mod:`~otaguard.sim.plot` draws the result. The evaluator sees
only counters and time, as on the server.
"""

from __future__ import annotations

from otaguard.sim.engine import SimResult, simulate
from otaguard.sim.fleet import FleetModel

__all__ = ["FleetModel", "SimResult", "simulate"]
