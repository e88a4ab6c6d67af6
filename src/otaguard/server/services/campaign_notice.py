"""What the campaign service tells the push side after a commit (docs/campaign contract).

A :class:`Notice` says which campaign changed and why; :meth:`Notice.topics` and
:meth:`Notice.payload` give the MQTT topics and message the contract names. The server's
``ServerContext.notify`` receives notices after the change is committed; by default it does
nothing (polling alone is correct), and ``server/push.py`` plugs a publisher in. A notice
carries no trust: it only makes devices check in sooner.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

#: How long start/advance/resume spread the herd of woken devices (seconds).
DEFAULT_SPREAD_S = 60
_WAKE_ALL = ("start", "advance", "resume")


@dataclass(frozen=True)
class Notice:
    campaign_id: str
    reason: str  # start, advance, halt, pause, resume, cancel
    hardware_ids: tuple[str, ...] = ()
    device_ids: tuple[str, ...] = ()

    def topics(self) -> list[str]:
        """start/advance/resume: the selector's hardware topics (or its devices' topics);
        halt/pause/cancel: the campaign's topic (devices in flight subscribe to it)."""
        if self.reason in _WAKE_ALL:
            if self.device_ids:
                return [f"otaguard/v1/devices/{d}" for d in self.device_ids]
            return [f"otaguard/v1/hardware/{h}" for h in self.hardware_ids]
        return [f"otaguard/v1/campaigns/{self.campaign_id}"]

    def payload(self, spread_s: int = DEFAULT_SPREAD_S) -> dict[str, Any]:
        spread = spread_s if self.reason in _WAKE_ALL else 0
        return {"v": 1, "reason": self.reason, "campaign": self.campaign_id, "spread_s": spread}


Notify = Callable[[Notice], None]


def no_push(_notice: Notice) -> None:
    """The default: no broker configured, devices learn at their next poll."""
