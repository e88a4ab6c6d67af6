"""The background jobs of a server process, run only while it holds the ``jobs`` lease.

* re-sign the image repository's timestamp before it expires (and the snapshot
  when past half its life): without it devices would refuse the repository as
  frozen (``services.releases.resign_timestamp``);
* forget device nonces older than any request the server still accepts;
* sign a checkpoint of the audit log when entries were added and the newest
  checkpoint is older than ``Timing.audit_checkpoint`` (``services.audit_checkpoints``).

* evaluate every running or paused campaign (``services.campaign_eval.tick``): silent
  devices, counters, the kill switch, advance and completion, audited; push notices are
  sent after the commit (``ServerContext.notify``).
"""

from __future__ import annotations

import logging
import threading

from otaguard.protocol.signing import MAX_SKEW_SECONDS
from otaguard.server.context import ServerContext
from otaguard.server.lease import Lease, holder_id
from otaguard.server.services import audit_checkpoints, campaign_eval, devices, releases

log = logging.getLogger("otaguard.server")
LEASE = "jobs"


def run_once(ctx: ServerContext) -> dict[str, object]:
    """One round of every job (the caller holds the lease)."""
    now = ctx.now()
    timing = ctx.config.timing
    done: dict[str, object] = {}
    if ctx.config.repo_dir.joinpath("config.json").exists():
        version = releases.resign_timestamp(
            ctx.db, ctx.config, now=now, margin=timing.timestamp_margin
        )
        if version is not None:
            ctx.repo.forget()
            done["timestamp"] = version
    done["nonces"] = devices.forget_nonces(ctx.db, now - 2 * MAX_SKEW_SECONDS)
    ticked, notices = campaign_eval.tick(ctx.db, ctx.clock())
    if notices:
        ctx.campaigns.forget()
        ctx.notify_all(notices)
    decided = [t.decision.to_dict() for t in ticked if t.decision.action.value != "none"]
    if decided:
        done["campaigns"] = decided
    if audit_checkpoints.due(ctx.db, now=now, interval=timing.audit_checkpoint):
        signed = audit_checkpoints.sign_head(ctx.db, ctx.audit_signer, now=now)
        done["checkpoint"] = signed.checkpoint.size
    return done


class JobRunner:
    def __init__(self, ctx: ServerContext) -> None:
        self.ctx = ctx
        timing = ctx.config.timing
        self.lease = Lease(ctx.db, LEASE, holder_id(), timing.lease_ttl)
        self.interval = timing.job_interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.holding = False

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="jobs", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.holding = self.lease.acquire(self.ctx.clock())
                if self.holding:
                    done = run_once(self.ctx)
                    if done.get("timestamp"):
                        log.info("timestamp re-signed: v%s", done["timestamp"])
            except Exception:
                log.exception("background jobs failed; retrying")
            self._stop.wait(self.interval)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self.holding:
            try:
                self.lease.release()
            except Exception:
                log.exception("could not release the jobs lease")
