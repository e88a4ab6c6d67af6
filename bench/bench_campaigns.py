"""Campaigns on the real server: evaluation with 5 M devices, telemetry ingest, push, 1,000 agents.

Why (issue 16, "Benchmarks"): the evaluator must cost the same with 5 M vehicles registered as
with 5 (counters, not scans); telemetry is what a campaign's devices send all at once, so its
ingest rate sizes the API tier; a halt must reach connected vehicles in about a second, not a
poll interval; and the statistics must hold over HTTP with real agents, not only in the
simulator. Everything runs as deployed: ``otaguard server run`` on PostgreSQL, Mosquitto, the
lightweight agents of ``otaguard.sim.http_fleet`` (the agent's own request signing, answer
parser and director verification). The 5 M simulation's wall time is measured by the sim bench
(its section), not again here.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _common import check, quick

TITLE = "Campaigns over HTTP: 5 M devices in PostgreSQL, telemetry, push, 1,000 agents"

HW = "acme-ecu-v2"
BROKER = "mqtt://127.0.0.1:1883"


def _setup() -> None:
    root = Path(__file__).resolve().parent.parent
    for path in (root / "src", root / "bench"):
        if str(path) not in sys.path:
            sys.path.insert(0, str(path))


_setup()

import bench_server as bs  # noqa: E402  (bench/ is on sys.path only after _setup)


def _otaguard(*args: str | Path, timeout: float = 300) -> str:
    return check(["otaguard", *map(str, args)], timeout=timeout).stdout


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _mosquitto() -> None:
    try:
        socket.create_connection(("127.0.0.1", 1883), timeout=1).close()
    except OSError:
        subprocess.run(["mosquitto", "-d", "-c", "/etc/mosquitto/mosquitto.conf"], check=True)
        time.sleep(1)


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    url: str
    data: Path

    def fleet(self, *args: str | Path) -> str:
        return _otaguard("fleet", "--server", self.url, "--token-file", self.data / "admin.token",
                         *args)  # fmt: skip

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(40)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _start(data: Path, db_url: str, workers: int, log: Path) -> Server:
    port = _free_port()
    argv = ["otaguard", "server", "run", "--data-dir", str(data), "--database", db_url,
            "--port", str(port), "--workers", str(workers), "--mqtt", BROKER]  # fmt: skip
    with log.open("ab") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    server = Server(proc, f"http://127.0.0.1:{port}", data)
    import httpx

    for _ in range(1200):
        try:
            if httpx.get(f"{server.url}/openapi.json", timeout=5).status_code == 200:
                time.sleep(1.0 if workers > 1 else 0)  # every worker up
                return server
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {log.read_text()[-2000:]}")
        time.sleep(0.05)
    raise RuntimeError("server never answered")


@dataclass
class World:
    server: Server
    work: Path
    images: dict[str, Any]
    operator: str
    admin: str

    def identities(self, prefix: str, count: int) -> list[Any]:
        from otaguard.pki.store import load_ca_dir
        from otaguard.sim import http_fleet as hf

        ca = load_ca_dir(self.work / "pki" / "ca")
        return hf.issue_identities(ca.issuer(), list(ca.chain), prefix, count)

    def config(self, **kw: Any) -> Any:
        from otaguard.sim import http_fleet as hf

        metadata = self.server.data / "repo" / "metadata"
        newest = max(metadata.glob("*.targets.json"), key=lambda p: int(p.name.split(".")[0]))
        return hf.FleetConfig(
            server=self.server.url,
            hardware_id=HW,
            director_root=hf.director_root_of(
                (self.server.data / "director-root.json").read_bytes()
            ),
            repository=hf.repository_targets(newest.read_bytes()),
            factory=self.images["1"],
            releases={self.images[v].target: self.images[v] for v in ("2", "3")},
            **kw,
        )

    async def call(self, token: str, method: str, path: str, body: Any = None) -> Any:
        import httpx

        async with httpx.AsyncClient(timeout=120) as client:
            response = await client.request(
                method, f"{self.server.url}/api/v1/campaigns{path}", json=body,
                headers={"Authorization": f"Bearer {token}"},
            )  # fmt: skip
        if response.status_code not in (200, 201):
            raise RuntimeError(f"{method} {path}: {response.status_code} {response.text[:300]}")
        return response.json()

    async def launch(self, target: str, policy: str, devices: list[str] | None = None) -> str:
        selector: dict[str, Any] = {"hardware_id": HW}
        if devices:
            selector["devices"] = devices
        made = await self.call(self.admin, "POST", "", {
            "name": f"bench-{random.randrange(1 << 30)}", "targets": [target],
            "selector": selector, "compatible": {HW: ["1.0.0", "2.0.0"]}, "policy": policy,
        })  # fmt: skip
        await self.call(self.operator, "POST", f"/{made['id']}/approve")
        await self.call(self.operator, "POST", f"/{made['id']}/start")
        return str(made["id"])

    async def until(self, campaign: str, wanted: set[str], timeout: float) -> dict[str, Any]:
        end = time.monotonic() + timeout
        while True:
            shown: dict[str, Any] = await self.call(self.operator, "GET", f"/{campaign}")
            if shown["status"] in wanted or time.monotonic() > end:
                return shown
            await asyncio.sleep(0.5)


def _world(work: Path, db_url: str, workers: int) -> World:
    """Three releases (1.0.0 the factory's, 2.0.0 bad, 3.0.0 good), a device CA, two people."""
    from otaguard.sim import http_fleet as hf

    work.mkdir(parents=True, exist_ok=True)
    server = _start(work / "srv", db_url, workers, work / "server.log")
    keys = work / "offline"
    keys.mkdir()
    for name in ("root", "targets", "release"):
        _otaguard("key", "generate", "--algorithm", "ed25519", "--out", keys / f"{name}.pem",
                  "--public-out", keys / f"{name}.pub")  # fmt: skip
    online = server.data / "online-keys"
    _otaguard("repo", "init", work / "rel", "--root-key", keys / "root.pem", "--targets-key",
              keys / "targets.pem", "--snapshot-key", online / "snapshot.pub",
              "--timestamp-key", online / "timestamp.pub")  # fmt: skip
    images = {}
    for v in ("1", "2", "3"):
        payload = work / f"fw{v}.bin"
        payload.write_bytes(random.Random(int(v)).randbytes(8192))
        image = work / f"fw-{v}.img"
        _otaguard("sign", "--key", keys / "release.pem", "--version", f"{v}.0.0",
                  "--security-counter", v, "--hardware-id", HW, payload, image)  # fmt: skip
        name = f"{HW}/{v}.0.0.img"
        _otaguard("repo", "add-target", work / "rel", image, "--name", name,
                  "--trusted-key", keys / "release.pub")  # fmt: skip
        images[v] = hf.image_of(name, image.read_bytes(), f"{v}.0.0", int(v))
    _otaguard("repo", "sign", work / "rel", "--key", keys / "targets.pem")
    server.fleet("release", "publish", "--repo", work / "rel")
    pki = work / "pki"
    _otaguard("pki", "init-root", "--out-dir", pki / "root", "--subject", "CN=Bench Devices")
    _otaguard("pki", "issue-intermediate", "--ca", pki / "root", "--out-dir", pki / "ca",
              "--purpose", "device-identity")  # fmt: skip
    server.fleet("enroll", "--ca", pki / "ca" / "cert.pem", "--hardware-id", HW, "--region", "eu")
    made = json.loads(server.fleet("token", "create", "--role", "operator", "--name", "olga",
                                   "--json"))  # fmt: skip
    admin = (server.data / "admin.token").read_text().strip()
    return World(server, work, images, made["token"], admin)


def _policy(soak_s: float, threshold: float = 0.15) -> str:
    return f"""
[waves]
fractions = [0.1, 1.0]
min_devices = 1
min_soak_s = {soak_s}

[advance]
min_confirmed = 10
require_health = false

[halt]
failure_threshold = {threshold}
confidence = 0.9
min_sample = 10
methods = ["wilson"]
deadline_s = 600.0
revert_on_halt = true

[health]
window_s = 5.0
min_devices = 10
"""


# -- 1. wave evaluation with 5 M devices registered ---------------------------------------


def _evaluation(work: Path) -> list[str]:
    from otaguard.server.db import Database
    from otaguard.server.services import campaign_eval

    devices = 100_000 if quick() else 5_000_000
    work.mkdir(parents=True, exist_ok=True)
    fleet = bs.prepare_fleet(work, devices)
    server = _start(fleet.data_dir, fleet.db_url, 1, work / "eval-server.log")
    try:
        made = json.loads(server.fleet("token", "create", "--role", "operator", "--name", "olga",
                                       "--json"))  # fmt: skip
        world = World(server, work, {}, made["token"],
                      (fleet.data_dir / "admin.token").read_text().strip())  # fmt: skip
        start = time.perf_counter()
        campaign = asyncio.run(world.launch(bs.TARGET, _policy(3600.0)))
        create_s = time.perf_counter() - start
        shown = asyncio.run(world.call(world.operator, "GET", f"/{campaign}"))
    finally:
        server.stop()
    db = Database(fleet.db_url)
    times = []
    try:
        for i in range(30):
            start = time.perf_counter()
            campaign_eval.tick(db, time.time() + i)
            times.append(time.perf_counter() - start)
    finally:
        db.dispose()
        bs.drop_database(fleet.db_name)
    return [
        f"**Wave evaluation with {devices:,} devices registered in PostgreSQL** (rows of "
        f"{bs.TEMPLATES} devices enrolled through the API, cloned in SQL in "
        f"{sum(fleet.load_s.values()):.0f} s). A campaign over all of them (population "
        f"{shown['population']:,}, waves {shown['plan'][:3]}...) created, approved and started "
        f"through the REST API in {create_s:.2f} s (the population is counted once, at "
        "creation). Then `campaign_eval.tick` in-process, the server stopped: 30 ticks.",
        "",
        "| operation | median | min-max |",
        "|---|---|---|",
        f"| one evaluator tick (every running campaign: silent sweep, counters, decision) | "
        f"{statistics.median(times) * 1e3:.1f} ms | {min(times) * 1e3:.1f}-"
        f"{max(times) * 1e3:.1f} ms |",
        "",
    ]


# -- 2. telemetry ingest -------------------------------------------------------------------


def _ingest(work: Path, workers: int, seconds: float) -> tuple[float, float, int]:
    from otaguard.sim import http_fleet as hf

    name, db_url = bs._create_database()
    world = _world(work, db_url, workers)
    try:
        config = world.config(poll_s=3600.0)
        identities = world.identities(f"IN{workers}", 64)

        async def hammer() -> tuple[int, float, int]:
            import httpx

            stats = hf.FleetStats()
            limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
            async with httpx.AsyncClient(timeout=60, limits=limits) as client:
                devices = [
                    hf.LightDevice(i, config, client, stats, random.Random(n))
                    for n, i in enumerate(identities)
                ]
                for d in devices:
                    await d.enroll()
                    await d.report_state()
                end = time.monotonic() + seconds
                cpu0 = time.process_time()

                async def loop(d: Any) -> None:
                    while time.monotonic() < end:
                        d.health_since -= 60
                        await d.health()

                start = time.monotonic()
                await asyncio.gather(*(loop(d) for d in devices))
                return (
                    stats.health_reports,
                    time.monotonic() - start,
                    int((time.process_time() - cpu0) * 1000),
                )

        reports, wall, client_cpu_ms = asyncio.run(hammer())
    finally:
        world.server.stop()
        bs.drop_database(name)
    return reports / wall, client_cpu_ms / 1000 / wall, reports


# -- 3. 1,000 agents: a bad release, a good one; 4. halt -> pushed check-in ------------------


def _fleet_run(work: Path, devices: int) -> tuple[list[str], list[str]]:
    from otaguard.sim import http_fleet as hf

    name, db_url = bs._create_database()
    world = _world(work, db_url, 2)
    bad, good = world.images["2"].target, world.images["3"].target
    poll = 4.0 if devices >= 500 else 1.5
    result: dict[str, Any] = {}
    try:
        config = world.config(
            failure_rate={bad: 0.5, good: 0.0}, poll_s=poll, download_s=0.5, trial_s=0.5,
            health_window_s=5.0, seed=16,
        )  # fmt: skip
        identities = world.identities("BN", devices)

        async def scenario(stats: Any) -> None:
            t0 = time.monotonic()
            while stats.requests["/state"] < devices:
                await asyncio.sleep(0.5)
            result["enrolled_s"] = time.monotonic() - t0
            t1 = time.monotonic()
            campaign = await world.launch(bad, _policy(3 * poll))
            result["bad"] = await world.until(campaign, {"halted", "completed"}, 600)
            result["bad_s"] = time.monotonic() - t1
            await asyncio.sleep(3 * poll)
            result["bad_started"] = len(stats.started_by.get(bad, set()))
            t2 = time.monotonic()
            campaign = await world.launch(good, _policy(3 * poll))
            result["good"] = await world.until(campaign, {"halted", "completed"}, 900)
            result["good_s"] = time.monotonic() - t2

        start = time.monotonic()
        stats = asyncio.run(hf.run_fleet(config, identities, scenario))
        wall = time.monotonic() - start
        try:
            latency = _halt_latency(world, bad)
        except Exception as exc:  # the fleet's figures stand on their own
            latency = [f"**Halt to pushed check-in**: failed to measure ({exc}).", ""]
    finally:
        world.server.stop()
        bs.drop_database(name)
    b, g = result["bad"], result["good"]
    planned = b["plan"][0]
    first = b["waves"][0]["total"]  # the first wave's cohort (a keyed hash: near the plan)
    later = sum(w["total"] for w in b["waves"][1:])  # offered outside it: must be none
    exposed = sum(stats.count(bad, k) for k in ("confirmed", "reverted", "reverted-told"))
    requests = sum(stats.requests.values())
    ok_bad = (
        b["status"] == "halted" and b["wave"] == 0 and later == 0 and result["bad_started"] <= first
    )
    ok_good = g["status"] == "completed"
    fleet_rows = [
        f"**{devices:,} lightweight agents, one process** (`otaguard.sim.http_fleet`: the "
        "agent's request signing, answer parser and director verification; outcomes drawn per "
        f"release) against `otaguard server run --workers 2 --mqtt` on PostgreSQL, polling every "
        f"{poll:.1f} s (+-50 %). Policy: waves 10 %, 100 %; halt above 15 % failures at 90 % "
        "confidence (Wilson, at least 10 reports); soak 3 polls.",
        "",
        "| release | outcome | first wave (planned) | offered | confirmed | failed (boot) | "
        "told to revert / abandoned | time |",
        "|---|---|---|---|---|---|---|---|",
        f"| bad (50 % fail at boot) | {b['status']} in wave {b['wave']} "
        f"({'as required' if ok_bad else '**NOT as required**'}) | {first} ({planned}) | "
        f"{result['bad_started']} | {stats.count(bad, 'confirmed')} | "
        f"{stats.count(bad, 'reverted')} | {stats.count(bad, 'reverted-told')} / "
        f"{stats.count(bad, 'abandoned')} | {result['bad_s']:.1f} s to halt |",
        f"| good (0 % fail) | {g['status']} "
        f"({'as required' if ok_good else '**NOT as required**'}) | {g['waves'][0]['total']} "
        f"({g['plan'][0]}) | "
        f"{len(stats.started_by.get(good, set()))} | {stats.count(good, 'confirmed')} | "
        f"{stats.count(good, 'reverted')} | - | {result['good_s']:.1f} s to complete |",
        "",
        f"Exposure to the bad release: {exposed} devices installed it (its first wave: {first} "
        f"devices; offered outside it: {later}). "
        f"Enrolment of the fleet: {result['enrolled_s']:.1f} s. {requests:,} signed requests in "
        f"{wall:.0f} s ({requests / wall:.0f}/s), {stats.health_reports:,} health reports; "
        f"client errors: {dict(stats.errors) or 'none'}; statuses: {dict(stats.statuses)}.",
        "",
    ]
    return fleet_rows, latency


def _halt_latency(world: World, bad: str) -> list[str]:
    """40 devices in flight (slow downloads), subscribed; a manual halt; their check-ins."""
    from otaguard.sim import http_fleet as hf

    count = 40
    config = world.config(poll_s=120.0, download_s=300.0, trial_s=1.0, push_devices=count,
                          health_window_s=3600.0, seed=3)  # fmt: skip
    identities = world.identities("PU", count)
    found: dict[str, Any] = {}

    async def scenario(stats: Any) -> None:
        while stats.requests["/state"] < count:
            await asyncio.sleep(0.2)
        campaign = await world.launch(
            bad,
            _policy(3600.0).replace("[0.1, 1.0]", "[1.0]"),
            [i.device_id for i in identities],
        )
        deadline = time.monotonic() + 300
        while len(stats.started_by.get(bad, set())) < count // 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        await asyncio.sleep(2.0)  # their subscriptions to the campaign topic are acknowledged
        before = len(stats.pushed_checkins)
        found["in_flight"] = len(stats.started_by.get(bad, set()))
        t0 = time.monotonic()
        await world.call(world.operator, "POST", f"/{campaign}/halt", {"reason": "bench"})
        found["halt_call_s"] = time.monotonic() - t0
        while time.monotonic() < t0 + 10:
            await asyncio.sleep(0.05)
        found["after"] = [t - t0 for t, spread in stats.pushed_checkins[before:] if spread == 0]

    asyncio.run(hf.run_fleet(config, identities, scenario))
    after = sorted(found["after"])
    if not after:
        return ["**Halt to pushed check-in**: no pushed check-in within 10 s (**NOT met**).", ""]
    return [
        f"**Halt to the first subscribed agent checking in**: {found['in_flight']} devices in "
        "flight (slow downloads, polling every 120 s), subscribed to the campaign's topic "
        "(Mosquitto at 127.0.0.1:1883); `POST /campaigns/{id}/halt` (answered in "
        f"{found['halt_call_s'] * 1e3:.0f} ms), the server publishes after its commit (spread 0).",
        "",
        "| first pushed check-in | median | last | devices |",
        "|---|---|---|---|",
        f"| {after[0] * 1e3:.0f} ms | {statistics.median(after) * 1e3:.0f} ms | "
        f"{after[-1] * 1e3:.0f} ms | {len(after)} of {found['in_flight']} |",
        "",
        "Without push they would have learnt of the halt at their next poll (up to 120 s "
        "here, 15 minutes by default).",
        "",
    ]


def _say(what: str) -> None:
    print(f"[campaigns] {time.strftime('%H:%M:%S')} {what}", file=sys.stderr, flush=True)


def run(workdir: Path) -> str:
    _mosquitto()
    _say("evaluation")
    lines = [
        "All against `otaguard server run` on PostgreSQL 15 at 127.0.0.1 and Mosquitto at "
        "127.0.0.1:1883, on this shared 2-core machine (client and server share it).",
        "",
    ]
    lines += _evaluation(workdir / "eval")
    _say("ingest")
    seconds = 5.0 if quick() else 15.0
    rows = ["| server workers | health reports / s | client CPU (cores) | reports |",
            "|---|---|---|---|"]  # fmt: skip
    for workers in (1, 2):
        rate, cpu, n = _ingest(workdir / f"ingest{workers}", workers, seconds)
        rows.append(f"| {workers} | {rate:.0f} | {cpu:.2f} | {n:,} |")
    lines += [
        f"**Telemetry ingest over HTTP**: 64 enrolled devices post signed `POST /health` "
        f"reports as fast as they are answered for {seconds:.0f} s (each a database write in "
        "its own transaction, the nonce recorded with it).",
        "",
        *rows,
        "",
    ]
    _say("fleet")
    fleet_rows, latency = _fleet_run(workdir / "fleet", 200 if quick() else 1000)
    lines += fleet_rows + latency
    lines += [
        "The 5 M-vehicle simulation's wall time: see the section \"Campaigns: the 5 M-vehicle "
        "simulation and the evaluator's tick\" (`bench_sim.py`).",
    ]
    shutil.rmtree(workdir, ignore_errors=True)
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    os.environ.setdefault("OTAGUARD_BENCH_QUICK", "1")
    print(run(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("bench/work/campaigns")))
