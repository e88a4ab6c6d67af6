"""The kinds of result a device reports (``POST /api/v1/device/events``, docs/server.md).

One list for both ends: the agent's state file schema and the server's request model read
it here, so a kind added on one side cannot be refused by the other.
"""

from __future__ import annotations

from typing import Literal, get_args

EventKind = Literal[
    "download-started",
    "download-failed",
    "downloaded",
    "install-failed",
    "installed",
    "boot-trial",
    "confirmed",
    "reverted",
    "refused",  # a verification refusal: never retried
    "abandoned",  # the server said abandon (a campaign halted): partial data deleted
    "incompatible",  # the offer cannot be installed here (a target larger than its slot)
]

EVENT_KINDS: frozenset[str] = frozenset(get_args(EventKind))
