"""The agent's I/O shell: carries out each phase of the state machine, persists every step.

``Agent.run_cycle`` is one check-in and everything it brings, to the end:

* **power on**: a process that starts finds the device as the bootloader left
  it. If nothing runs (``running.json`` absent: the device was off), the
  bootloader runs first, exactly as at a real power-on; a download in progress
  goes back through a fresh check-in (``Restarted``: the director's answer must
  be fresh; the chunks already on storage are kept and the download resumes);
* **IDLE**: send queued events, enrol once, report the installed software when it
  changed, check in (``If-None-Match`` only when the last answer was fully
  acted on). A 200 is verified by :func:`otaguard.agent.vehicle.plan_update`
  (TUF refresh, director signature/freshness/nonce/device, cross-check with
  the image repository); ECUs already on their target are left alone;
* **DOWNLOAD**: each target through :func:`otaguard.agent.transfer.fetch_target`
  (resumable, capped, verified whole against the signed length and hashes);
* **INSTALL**: full images as one set (``device.install``) or a delta
  (``device.install_delta``, base from the active slot); skipped when the
  device already holds the set committed (a kill after the commit);
* **REBOOT**: the bootloader (unless the device already booted since the
  install); the new images on trial -> TRIAL; anything else -> reverted;
* **TRIAL**: the health check; confirm (fuses follow), or reject and reset into
  the old images;
* **REPORT**: queued events, then the new state, to the server.

Failures: a :class:`~otaguard.errors.RejectedError` is a refusal (reported,
never retried); a transient failure waits (``config.Backoff``) and repeats the
phase until its class's attempts are spent (``GaveUp``: the cycle ends, the
next starts afresh); a simulated power loss (``PowerLoss``) ends the process's
run as a real one would: RAM is lost, nothing more is written.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import fcntl
import hashlib
import io
import os
import random
import shutil
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import BinaryIO, Protocol

from tuf.api.metadata import Metadata, Root, TargetFile

from otaguard.agent import machine as m
from otaguard.agent.api import (
    DeviceApi,
    NotAuthenticated,
    Push,
    StateUnknown,
    UpdateAnswer,
)
from otaguard.agent.config import AgentConfig, Failure
from otaguard.agent.failures import ServerRefusedError, TransientError, classify, describe
from otaguard.agent.push import Subscriber, Wake
from otaguard.agent.state import Installed, Phase, Plan, PlannedTarget, Record, Result
from otaguard.agent.store import AgentDir, Identity
from otaguard.agent.transfer import download_name, fetch_target, http_client
from otaguard.agent.vehicle import CheckIn, plan_update
from otaguard.device.bootloader import boot
from otaguard.device.faults import NO_FAULTS, FaultPlan, PowerLoss
from otaguard.device.flash import FlashReader
from otaguard.device.install import OTHER, Running, confirm, install_update, reject, running_of
from otaguard.device.model import Device
from otaguard.device.slots import extent_in, verify_slot
from otaguard.device.store import load_running, open_device, save_running
from otaguard.errors import MalformedError, OtaguardError, RejectedError
from otaguard.image import ImageMetadata, PayloadKind
from otaguard.image.envelope_format import MAX_HEADER_SIZE, PREAMBLE_SIZE
from otaguard.image.envelope_verify import read_protected
from otaguard.protocol.state import canonical_json
from otaguard.repo import compat
from otaguard.repo.client import TufClient
from otaguard.repo.fetcher import HttpxFetcher
from otaguard.repo.uptane import Vehicle, load_director_root

#: Enough of a slot to hold any envelope's signed header.
MAX_HEADER = PREAMBLE_SIZE + MAX_HEADER_SIZE

#: A health check of the new firmware running on trial: True to confirm it.
HealthCheck = Callable[[Device, Running], bool]


class Observer(Protocol):
    """Where the agent says what it does (the CLI: a progress bar, or JSON lines)."""

    def log(self, event: str, fields: Mapping[str, object]) -> None: ...

    def progress(self, target: str, done: int, total: int) -> None: ...


class _Quiet:
    def log(self, event: str, fields: Mapping[str, object]) -> None:
        pass

    def progress(self, target: str, done: int, total: int) -> None:
        pass


def _healthy(device: Device, running: Running) -> bool:
    """The default health check: the running set still verifies from flash."""
    return all(verify_slot(device, running.slot, n, for_install=False) for n in device.config.names)


def _utc(now: dt.datetime) -> str:
    return now.astimezone(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


class _Recheck(BaseException):
    """A push arrived during a download: stop it here (chunks kept) and check in first.

    A BaseException so that nothing between the progress callback and the
    download action mistakes it for a failure of the transfer.
    """


class Agent:
    """One device's agent (one process at a time per device directory: it holds a lock)."""

    def __init__(
        self,
        device_dir: Path,
        server_url: str,
        identity: Identity,
        *,
        config: AgentConfig | None = None,
        health: HealthCheck | None = None,
        observer: Observer | None = None,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
        now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
        faults: Mapping[str, FaultPlan] | None = None,
    ) -> None:
        self.paths = AgentDir(device_dir)
        self.paths.require()
        self.identity = identity
        self.config = config or AgentConfig()
        self._health = health or _healthy
        self._observer = observer or _Quiet()
        self._sleep = sleep
        self._rng = rng or random.SystemRandom()
        self._now = now
        self._faults = dict(faults or {})
        self._lock = self._take_lock()
        self._http = http_client(self.config)
        self.api = DeviceApi(server_url, identity, self._http, self.config)
        self._fetcher = HttpxFetcher(self.config.fetcher_config())
        self._booted_since_install = False
        self._sent_this_cycle = False
        self._health_tried = False
        #: rung by the MQTT subscriber (or a test): check in early
        self.wake = Wake()
        self._subscriber: Subscriber | None = None
        self._last_checkin = float("-inf")
        self._sha_cache: dict[tuple[str, str, str | None], str | None] = {}
        try:
            self.state, reset = self.paths.load_state()
            if reset is not None:
                self._log("state-reset", reason=reset)
            self._power_on()
        except BaseException:
            self.close()
            raise

    # -- lifecycle --------------------------------------------------------------------------

    def _take_lock(self) -> int:
        self.paths.base.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.paths.base / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            from otaguard.errors import UsageError

            raise UsageError(f"another agent is running on {self.paths.device}") from None
        return fd

    def close(self) -> None:
        if self._subscriber is not None:
            self._subscriber.close()
        self._http.close()
        self._fetcher.close()
        with contextlib.suppress(OSError):
            os.close(self._lock)

    def __enter__(self) -> Agent:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def _device(self, action: str) -> Iterator[Device]:
        """The device for one action, armed with the test's fault plan for that action."""
        with open_device(self.paths.device) as device:
            device.arm(self._faults.get(action, NO_FAULTS))
            try:
                yield device
            except PowerLoss:
                save_running(self.paths.device, None)  # RAM is gone
                self._log("power-lost", action=action, flash_ops=device.clock.count)
                raise

    def _power_on(self) -> None:
        if load_running(self.paths.device) is None:
            self._boot()
        self._apply(m.Restarted(self._at()))

    def _boot(self) -> Running | None:
        save_running(self.paths.device, None)  # a reset: what ran is gone
        with self._device("boot") as device:
            result = boot(device)
        running = running_of(result)
        save_running(self.paths.device, running)
        self._booted_since_install = True
        self._apply(m.BootSeen(self._at(), len(result.rejected)))  # the health window's counts
        self._log(
            "booted",
            state=result.state,
            slot=result.slot,
            rejected=[f"{s}: {c}" for s, c, _ in result.rejected],
        )
        return running

    # -- the loop -----------------------------------------------------------------------------

    def run_cycle(self) -> Result:
        """One check-in and what it brings, to the end. Raises ``PowerLoss`` if power fails."""
        self._sent_this_cycle = False
        self._health_tried = False
        actions: dict[Phase, Callable[[], m.Input]] = {
            Phase.IDLE: self._idle,
            Phase.DOWNLOAD: self._download,
            Phase.INSTALL: self._install,
            Phase.REBOOT: self._reboot,
            Phase.TRIAL: self._trial,
            Phase.REPORT: self._report,
        }
        for _ in range(self.config.max_steps):
            phase = self.state.phase
            inp = self._attempt(actions[phase], phase)
            self._apply(inp)
            if isinstance(inp, m.GaveUp) and self.state.phase is not Phase.IDLE:
                self._log("cycle", result=Result.FAILED.value)
                return Result.FAILED
            if self.state.phase is not Phase.IDLE:
                continue
            if isinstance(inp, m.UpToDate | m.Reported | m.GaveUp):
                assert self.state.result is not None
                self._log("cycle", result=self.state.result.value)
                return self.state.result
        raise RuntimeError(f"the agent made {self.config.max_steps} steps in one cycle (a loop)")

    def run_forever(self, interval: float | None = None, *, cycles: int | None = None) -> None:
        """Check in every ``interval`` seconds (default: the server's, else the config's)."""
        done = 0
        while cycles is None or done < cycles:
            self.run_cycle()
            done += 1
            wait = interval or self.state.poll_interval or self.config.poll_interval
            self.wait(wait)

    def wait(self, seconds: float) -> bool:
        """Wait for the next check-in: ``seconds``, or less when a push rings. True if pushed.

        Without a subscriber this is the injected ``sleep`` (tests run it instantly).
        A push waits a random delay in ``[0, spread]`` (the herd spreads out), and
        never starts a check-in sooner than ``push_min_gap_s`` after the last one.
        """
        if self._subscriber is None and not self.wake.is_set():
            self._sleep(seconds)
            return False
        start = time.monotonic()
        spread = self.wake.wait(seconds)
        if spread is None:
            return False
        delay = self._rng.uniform(0, spread) if spread > 0 else 0.0
        gap = self._last_checkin + self.config.push_min_gap_s - time.monotonic()
        delay = min(max(delay, gap), max(0.0, seconds - (time.monotonic() - start)))
        if delay > 0:
            time.sleep(delay)
        self._log("pushed", spread=spread, delay=round(delay, 3))
        return True

    def _attempt(self, action: Callable[[], m.Input], phase: Phase) -> m.Input:
        """Run one action; turn its failure into the machine's input (waiting on transients)."""
        try:
            return action()
        except (PowerLoss, ServerRefusedError):
            raise
        except Exception as exc:
            failure = classify(exc)
            if failure is Failure.REFUSED:
                assert isinstance(exc, RejectedError)
                return self._refused(exc, phase)
            if failure is not None:
                inp = self._transient(failure, exc)
                if isinstance(exc, NotAuthenticated) and isinstance(inp, m.Failed):
                    return m.Forgotten(inp.at, inp.failure, inp.detail)
                return inp
            if isinstance(exc, OtaguardError) and phase in (Phase.DOWNLOAD, Phase.INSTALL):
                return m.Unusable(self._at(), describe(exc))
            raise

    def _refused(self, exc: RejectedError, phase: Phase) -> m.Input:
        if phase in (Phase.IDLE, Phase.DOWNLOAD, Phase.INSTALL):
            return m.Refused(self._at(), exc.check, describe(exc))
        if phase in (Phase.REBOOT, Phase.TRIAL):
            return m.Reverted(self._at(), exc.check, describe(exc))
        return self._transient(Failure.BAD_RESPONSE, exc)  # REPORT: a broken answer

    def _transient(self, failure: Failure, exc: BaseException) -> m.Input:
        attempt = self.state.attempts.get(failure.value, 0) + 1
        policy = self.config.backoff_for(failure)
        self._log("failed", failure=failure.value, attempt=attempt, detail=describe(exc))
        if attempt > policy.attempts:
            return m.GaveUp(self._at(), failure, describe(exc))
        self._sleep(policy.delay(attempt, self._rng))
        return m.Failed(self._at(), failure, describe(exc))

    def _apply(self, inp: m.Input) -> None:
        before = {r.id for r in self.state.outbox}
        old_phase = self.state.phase
        self.state = m.step(self.state, inp, max_outbox=self.config.max_outbox)
        self.paths.save_state(self.state)
        if self.state.phase is not old_phase:
            self._log("phase", phase=self.state.phase.value, after=type(inp).__name__)
        for record in self.state.outbox:
            if record.id not in before:
                self._observer.log("event", record.to_json())
        if isinstance(inp, m.Installed_):
            self._booted_since_install = False

    def _at(self) -> str:
        return _utc(self._now())

    def _log(self, event: str, **fields: object) -> None:
        self._observer.log(event, fields)

    # -- IDLE: check in ----------------------------------------------------------------------

    def _idle(self) -> m.Input:
        if self.state.outbox and not self._sent_this_cycle:
            self._sent_this_cycle = True
            try:
                return self._send_events()
            except TransientError as exc:  # the check-in itself decides whether to retry
                self._log("events-pending", count=len(self.state.outbox), detail=describe(exc))
        running = load_running(self.paths.device)
        if running is not None and running.trial:
            self._unplanned_trial(running)
        with self._device("state") as device:
            body = self._state_body(device, load_running(self.paths.device))
        if not self.state.enrolled:
            enrolment = self.api.enroll(self._ecus())
            self._log("enrolled", group=enrolment.group, created=enrolment.created)
            return m.Enrolled(self._at(), enrolment.poll_interval)
        health = self._health_report()
        if health is not None:
            return health
        local = hashlib.sha256(body).hexdigest()
        if local != self.state.reported_local or self.state.reported_server is None:
            return m.StateReported(self._at(), local, self.api.report_state(body))
        self.wake.take()
        self._last_checkin = time.monotonic()
        try:
            answer = self.api.check_in(self.state.reported_server, self.state.etag)
        except StateUnknown:
            return m.StateReported(self._at(), local, self.api.report_state(body))
        self._log("check-in", status=304 if answer is None else 200)
        if answer is None:
            return m.UpToDate(self._at(), self.state.etag, None)
        self._follow(answer.push)
        return self._plan(answer)

    # -- campaigns: health reports, push -------------------------------------------------------

    def _health_report(self) -> m.Input | None:
        """The health report when its window is over (once per cycle at most); None otherwise.

        Best effort: a server that cannot take it now (or an older one without the
        endpoint) gets it at a later cycle; the check-in never waits for it.
        """
        health = self.state.health
        if health is None:
            return m.HealthSent(self._at())  # the first (control) window starts now
        since = dt.datetime.fromisoformat(health.since.replace("Z", "+00:00"))
        elapsed = (self._now() - since).total_seconds()
        if elapsed < self.config.health_window_s or self._health_tried:
            return None
        self._health_tried = True
        report = {
            "campaign": health.campaign,
            "window_s": float(min(max(elapsed, 1.0), 7 * 86400.0)),
            "counts": {"resets": health.resets, "crashes": health.crashes},
            "flags": {"heartbeat_lost": False},  # the agent ran: it is the heartbeat
            "metrics": {},
        }
        try:
            self.api.send_health(report)
        except TransientError as exc:
            self._log("health-pending", detail=describe(exc))
            return None
        self._log("health", **report)
        return m.HealthSent(self._at())

    def _follow(self, push: Push | None) -> None:
        """Listen where the answer says (or stop listening); never fails a check-in."""
        if not self.config.mqtt:
            return
        broker = push.broker if push is not None else None
        topics = push.topics if push is not None else ()
        if self._subscriber is None:
            if broker is None:
                return
            self._subscriber = Subscriber(
                self.wake,
                f"otaguard-{self.identity.device_id}",
                default_spread=self.config.push_spread_s,
            )
        self._subscriber.follow(broker, topics)

    def _unplanned_trial(self, running: Running) -> None:
        """A trial the agent did not start (a manual install, a lost state): settle it."""
        with self._device("confirm") as device:
            healthy = self._health(device, running)
            if healthy:
                confirm(device, running)
                save_running(self.paths.device, dataclasses.replace(running, trial=False))
            else:
                reject(device, running)
        self._log("unplanned-trial", slot=running.slot, confirmed=healthy)
        if not healthy:
            self._boot()

    def _image_sha256(self, device: Device, letter: str, component: str) -> str | None:
        """SHA-256 of the image file in a slot, hashed once per image (by its header's id)."""
        ids = _image_ids(device, letter)
        key = (letter, component, ids.get(component))
        if key[2] is None:
            return None
        if key not in self._sha_cache:
            self._sha_cache[key] = _slot_sha256(device, letter, component)
        return self._sha_cache[key]

    def _ecus(self) -> list[dict[str, str]]:
        with open_device(self.paths.device) as device:
            return [
                {"serial": c.name, "hardware_id": c.hardware_id} for c in device.config.components
            ]

    def _state_body(self, device: Device, running: Running | None) -> bytes:
        ecus = []
        for component in device.config.components:
            name = component.name
            entry: dict[str, object] = {
                "serial": name,
                "hardware_id": component.hardware_id,
                "target": None,
                "version": None,
                "security_counter": device.otp.counters.value(name),
                "sha256": None,
                "slot": None,
                "boot": "none",
            }
            if running is not None:
                sha = self._image_sha256(device, running.slot, name)
                meta = _header(device, running.slot, name)
                installed = self.state.installed.get(name)
                entry.update(
                    target=installed.target if installed and installed.sha256 == sha else None,
                    version=meta.version if meta else None,
                    security_counter=meta.security_counter if meta else 0,
                    sha256=sha,
                    slot=running.slot,
                    boot="trial" if running.trial else "confirmed",
                )
            ecus.append(entry)
        return canonical_json({"ecus": ecus})

    def _plan(self, answer: UpdateAnswer) -> m.Input:
        flight = self.state.inflight
        if (
            flight is not None
            and flight.campaign is not None
            and flight.stage == "download"
            and answer.wants("abandon", flight.campaign)
        ):
            # a halt: nothing of this offer was written to flash; drop what was fetched
            self._forget_downloads()
            self._log("abandon", campaign=flight.campaign)
            return m.Abandoned(self._at(), flight.campaign)
        campaign = answer.campaign.id if answer.campaign is not None else None
        with open_device(self.paths.device) as device:
            components = {c.name: c.hardware_id for c in device.config.components}
            slot_sizes = {
                c.name: device.config.layout.slot("a", c.name).size
                for c in device.config.components
            }
            running = load_running(self.paths.device)
            current = {
                name: self._image_sha256(device, running.slot, name) if running else None
                for name in components
            }
            headers = {n: _header(device, running.slot, n) if running else None for n in components}
            versions = {n: meta.version if meta else None for n, meta in headers.items()}
        client = TufClient(
            self.paths.tuf,
            answer.metadata_url,
            self._fetcher,
            now=self._now(),
            limits=self.config.tuf_limits,
        )
        director_root = load_director_root(self.paths.director_root.read_bytes())
        check_in = CheckIn(
            Vehicle(self.identity.device_id, components),
            answer.nonce,
            self._now(),
            self.state.director_version,
        )
        try:
            plan = plan_update(
                client, answer.director, director_root, check_in, {n: n for n in components}
            )
        except RejectedError as exc:
            if classify(exc) is not Failure.REFUSED:
                raise
            # remembered with the answer's ETag: not tried again until the server changes it
            return m.Refused(self._at(), exc.check, describe(exc), answer.etag, campaign)
        todo = []
        refused: list[str] = []
        for name, instruction in sorted(plan.by_component.items()):
            target = instruction.target
            installed = self.state.installed.get(name)
            if current[name] is not None and (
                target.hashes.get("sha256") == current[name]
                or (
                    installed
                    and installed.target == target.path
                    and installed.sha256 == current[name]
                )
            ):
                continue  # already there
            todo.append(PlannedTarget(name, target.path, target.length, dict(target.hashes)))
            try:  # the release managers' declaration, in the verified targets metadata
                why = compat.refusal(target, versions[name])
            except MalformedError as exc:
                return m.Refused(self._at(), exc.check, describe(exc), answer.etag, campaign)
            if why is not None:
                refused.append(why)
        if not todo:
            return m.UpToDate(self._at(), answer.etag, answer.poll_interval)
        if refused:  # validated over other software: whatever the server says, not here
            detail = "; ".join(refused)
            return m.Incompatible(
                self._at(), "compatible-with", detail, answer.etag, campaign, tuple(todo)
            )
        too_big = [t for t in todo if t.length > slot_sizes[t.component]]
        if too_big:  # a release for another flash layout: never fits, whatever the retries
            detail = ", ".join(
                f"{t.path}: {t.length} bytes, slot {slot_sizes[t.component]}" for t in too_big
            )
            return m.Incompatible(
                self._at(),
                "slot-size",
                f"larger than its slot: {detail}",
                answer.etag,
                campaign,
                tuple(todo),
            )
        self._log("plan", targets=[t.path for t in todo], director_version=plan.director_version)
        return m.Planned(
            self._at(),
            Plan(
                etag=answer.etag,
                nonce=answer.nonce,
                director=answer.director,
                director_version=plan.director_version,
                metadata_url=answer.metadata_url,
                targets_url=answer.targets_url,
                targets=tuple(todo),
                campaign=campaign,
            ),
            answer.poll_interval,
        )

    # -- DOWNLOAD ------------------------------------------------------------------------------

    def _consistent_snapshot(self) -> bool:
        root = Metadata[Root].from_bytes((self.paths.tuf / "root.json").read_bytes()).signed
        return bool(root.consistent_snapshot)

    def _fetch(self, plan: Plan, target: PlannedTarget) -> Path:
        info = TargetFile(target.length, dict(target.hashes), target.path)

        def progress(done: int, total: int) -> None:
            self._observer.progress(target.path, done, total)
            if self.wake.is_set() and self.state.phase is Phase.DOWNLOAD:
                raise _Recheck()  # a halt may be waiting: the chunks so far are kept

        return fetch_target(
            self._http,
            plan.targets_url,
            info,
            self.paths.downloads,
            self.config,
            consistent_snapshot=self._consistent_snapshot(),
            progress=progress,
        )

    def _forget_downloads(self, keep: frozenset[str] = frozenset()) -> None:
        """Remove downloads no plan needs (refused ones are removed when refused)."""
        with contextlib.suppress(FileNotFoundError):
            for entry in self.paths.downloads.iterdir():
                if entry.name not in keep:
                    shutil.rmtree(entry, ignore_errors=True)

    def _download(self) -> m.Input:
        plan = _need(self.state.plan)
        self._forget_downloads(frozenset(_download_name(t) for t in plan.targets))
        done = []
        for target in plan.targets:
            try:
                path = self._fetch(plan, target)
            except _Recheck:
                self._log("recheck", target=target.path)
                return m.Recheck(self._at())
            with open(path, "rb") as handle:
                kind, image_id = _describe_image(handle)
            done.append(
                PlannedTarget(
                    target.component, target.path, target.length, target.hashes, kind, image_id
                )
            )
        return m.Downloaded(self._at(), tuple(done))

    # -- INSTALL -------------------------------------------------------------------------------

    def _install(self) -> m.Input:
        plan = _need(self.state.plan)
        paths = {t.component: self._fetch(plan, t) for t in plan.targets}  # verified again
        running = load_running(self.paths.device)
        with self._device("install") as device, contextlib.ExitStack() as stack:
            if running is not None and running.trial and _runs_plan(device, running, plan):
                self._log("install-skipped", slot=running.slot, reason="already booted on trial")
                return m.Installed_(self._at(), running.slot)
            slot = _committed(device, running, plan)
            if slot is not None:
                self._log("install-skipped", slot=slot, reason="already committed")
                return m.Installed_(self._at(), slot)
            files: dict[str, BinaryIO] = {
                name: stack.enter_context(open(path, "rb")) for name, path in paths.items()
            }
            # a staged update that is not this plan's is superseded: the plan is the newest
            # verified instruction (this plan's own, committed, was found just above)
            result = install_update(device, files, running=running, replace_staged=True)
        self._log("installed", slot=result.slot, flash_ops=result.flash_ops)
        return m.Installed_(self._at(), result.slot)

    # -- REBOOT / TRIAL ------------------------------------------------------------------------

    def _reboot(self) -> m.Input:
        running = load_running(self.paths.device)
        if not self._booted_since_install and not self._running_plan(running):
            self._boot()
        return self._judge_boot(health=False)

    def _running_plan(self, running: Running | None) -> bool:
        if running is None:
            return False
        with open_device(self.paths.device) as device:
            return _runs_plan(device, running, _need(self.state.plan))

    def _trial(self) -> m.Input:
        return self._judge_boot(health=True)

    def _judge_boot(self, *, health: bool) -> m.Input:
        plan = _need(self.state.plan)
        running = load_running(self.paths.device)
        if (
            health
            and plan.campaign is not None
            and self.config.trial_checkin
            and running is not None
            and running.trial
        ):
            return self._campaign_trial(plan, running)
        with self._device("confirm") as device:
            if running is None or not _runs_plan(device, running, plan):
                where = f"slot {running.slot}" if running else "recovery"
                return m.Reverted(self._at(), "boot", f"the new image did not boot ({where})")
            if running.trial and not health:
                return m.Booted(self._at())
            if running.trial and not self._health(device, running):
                reject(device, running)
                rejected = True
            else:
                confirm(device, running)
                save_running(self.paths.device, dataclasses.replace(running, trial=False))
                rejected = False
            installed = {}
            for t in plan.targets:
                sha = self._image_sha256(device, running.slot, t.component)
                assert sha is not None  # the slot booted: it holds an image
                installed[t.component] = Installed(t.path, sha)
        if rejected:
            self._boot()
            return m.Reverted(self._at(), "health-check", "the new image failed its health check")
        return m.Confirmed(self._at(), installed)

    def _campaign_trial(self, plan: Plan, running: Running) -> m.Input:
        """A campaign's trial: health check, then one check-in (a halt may say revert), then
        confirm. The trial is where a halt can still undo an install: after the confirm the
        fuses follow and the old image may never run again."""
        with self._device("confirm") as device:
            if not _runs_plan(device, running, plan):
                return m.Reverted(
                    self._at(), "boot", f"the new image did not boot ({running.slot})"
                )
            healthy = self._health(device, running)
        halted = healthy and self._told_to_revert(plan.campaign or "")
        with self._device("confirm") as device:
            if not healthy or halted:
                reject(device, running)
            else:
                confirm(device, running)
                save_running(self.paths.device, dataclasses.replace(running, trial=False))
                installed = {}
                for t in plan.targets:
                    sha = self._image_sha256(device, running.slot, t.component)
                    assert sha is not None  # the slot booted: it holds an image
                    installed[t.component] = Installed(t.path, sha)
        if halted:
            self._boot()
            return m.Reverted(self._at(), "halt", "the campaign was halted: told to revert")
        if not healthy:
            self._boot()
            return m.Reverted(self._at(), "health-check", "the new image failed its health check")
        return m.Confirmed(self._at(), installed)

    def _told_to_revert(self, campaign: str) -> bool:
        """One check-in from the trial: does the server say ``revert`` for ``campaign``?

        The server learns the trial from the queued ``boot-trial`` events and the
        state (boot: trial), sent first. Any failure means "not told": the trial is
        never held hostage by the network (confirming is what a device without a
        server does too).
        """
        try:
            while self.state.outbox:
                self._apply(self._send_events())
            with self._device("state") as device:
                body = self._state_body(device, load_running(self.paths.device))
            local = hashlib.sha256(body).hexdigest()
            if local != self.state.reported_local or self.state.reported_server is None:
                self._apply(m.StateReported(self._at(), local, self.api.report_state(body)))
            assert self.state.reported_server is not None
            answer = self.api.check_in(self.state.reported_server, None)
        except (TransientError, StateUnknown) as exc:
            self._log("trial-check-in-failed", detail=describe(exc))
            return False
        if answer is None:
            return False
        told = answer.wants("revert", campaign)
        self._log("trial-check-in", campaign=campaign, revert=told)
        return told

    # -- REPORT --------------------------------------------------------------------------------

    def _send_events(self) -> m.Input:
        batch = self.state.outbox[: self.config.event_batch]
        self.api.send_events([r.to_json() for r in batch])
        return m.EventsSent(self._at(), frozenset(r.id for r in batch))

    def _report(self) -> m.Input:
        if self.state.outbox:
            return self._send_events()
        with self._device("state") as device:
            body = self._state_body(device, load_running(self.paths.device))
        local = hashlib.sha256(body).hexdigest()
        if local != self.state.reported_local:
            return m.StateReported(self._at(), local, self.api.report_state(body))
        self._forget_downloads()  # installed, reverted or refused: nothing left to resume
        return m.Reported(self._at())


# -- helpers ---------------------------------------------------------------------------------


def _download_name(target: PlannedTarget) -> str:
    info = TargetFile(target.length, dict(target.hashes), target.path)
    return download_name(info)


def _need(plan: Plan | None) -> Plan:
    if plan is None:
        raise RuntimeError("this phase needs a plan")
    return plan


def _slot_sha256(device: Device, letter: str, component: str) -> str | None:
    """SHA-256 of the image file in a slot (what the repository's target hash names)."""
    region = device.config.layout.slot(letter, component)
    try:
        length = extent_in(device.flash, region)
    except MalformedError:
        return None
    reader = FlashReader(device.flash, region.offset, length)
    digest = hashlib.sha256()
    while piece := reader.read(1 << 16):
        digest.update(piece)
    return digest.hexdigest()


def _header(device: Device, letter: str, component: str) -> ImageMetadata | None:
    """What the image in a slot says about itself (it verified when the slot booted)."""
    region = device.config.layout.slot(letter, component)
    try:
        extent_in(device.flash, region)
        head = device.flash.read(region.offset, min(region.size, MAX_HEADER))
        return read_protected(io.BytesIO(head))[1]
    except MalformedError:
        return None


def _describe_image(stream: BinaryIO) -> tuple[str, str]:
    """Full image or delta, and the id of the image it installs (unverified: picks the path)."""
    signed, meta = read_protected(stream)
    if meta.payload_kind is not PayloadKind.DELTA:
        return "full", hashlib.sha256(signed).hexdigest()
    from otaguard.delta import open_delta

    stream.seek(0)
    opened = open_delta(stream, None)
    return "delta", hashlib.sha256(opened.header.new_signed).hexdigest()


def _image_ids(device: Device, letter: str) -> dict[str, str | None]:
    ids: dict[str, str | None] = {}
    for name in device.config.names:
        region = device.config.layout.slot(letter, name)
        try:
            extent_in(device.flash, region)
            head = device.flash.read(region.offset, min(region.size, MAX_HEADER))
            signed, _meta = read_protected(io.BytesIO(head))
            ids[name] = hashlib.sha256(signed).hexdigest()
        except MalformedError:
            ids[name] = None
    return ids


def _runs_plan(device: Device, running: Running, plan: Plan) -> bool:
    ids = dict(zip(device.config.names, running.image_ids, strict=True))
    return all(ids.get(t.component) == t.image_id for t in plan.targets)


def _committed(device: Device, running: Running | None, plan: Plan) -> str | None:
    """The slot already holding the plan's images committed as the next trial, if any."""
    record = device.bootctl.load()
    if record is None or running is None or running.trial:
        return None
    target = OTHER[running.slot]
    state = record.slot(target)
    if (
        state.successful
        or not state.bootable
        or state.priority <= record.slot(running.slot).priority
    ):
        return None
    ids = _image_ids(device, target)
    if all(ids.get(t.component) == t.image_id for t in plan.targets):
        return target
    return None


__all__ = ["Agent", "HealthCheck", "Observer", "Record"]
