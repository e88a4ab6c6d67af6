"""Fleet server: idle check-ins per second against Debian's nginx, 1 M devices in PostgreSQL.

Why (issue 14, "Benchmarks"): 5 M vehicles polling every 15 minutes send 5.6 k check-ins
a second, nearly all of them idle (nothing new); what one core answers decides the
deployment's size. Goal: at least 0.2x the rate of nginx serving a small static file on the
same machine, in the same run, under the same conditions; an idle check-in writes nothing
to the database (last-seen is batched) and answers 304.

How (bench/README.md has the details):

* a database of our own on the local PostgreSQL; a server data dir initialised by
  ``otaguard server run``; a release signed offline (``otaguard repo``) and published with
  ``otaguard fleet release publish``; an enrolment group for a device CA made with
  ``otaguard pki``; :data:`TEMPLATES` devices enrolled through the device API (real
  certificates and keys, ``pki issue-device``), reporting the release installed, deployed
  with ``otaguard fleet deploy``: the server writes their rows itself. Their rows are then
  cloned in SQL into 1 M devices (ids, nothing else, change: clone ``i`` has template
  ``i % TEMPLATES``'s key and certificate), with their ECUs and assignments;
* per run, requests are pre-signed for devices drawn without replacement from the 1 M
  (``server_load.presign``) and replayed once each by wrk's Lua script, pinned with taskset;
* server and nginx alternate in rounds, 1 then 2 worker processes, same CPUs, same script.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _common import BenchFailed, check, quick

TITLE = "Fleet server: idle check-ins against nginx (1 M devices, PostgreSQL)"

GOAL_RATIO = 0.2
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"
HW = "acme-ecu-v2"
TARGET = f"{HW}/2.0.0.img"
TEMPLATES = 16
#: wrk's CPU and the servers' CPUs (taskset lists) per number of worker processes.
WRK_CPUS = "0"
SERVER_CPUS = {1: "1", 2: "0,1"}
CONNECTIONS = 32
START_S = 60


def _setup() -> None:
    root = Path(__file__).resolve().parent.parent
    for path in (root / "src", root / "bench"):
        if str(path) not in sys.path:
            sys.path.insert(0, str(path))


_setup()

import server_load as load  # noqa: E402  (bench/ is on sys.path only after _setup)


def _devices() -> int:
    return 50_000 if quick() else 1_000_000


def _duration() -> int:
    return 3 if quick() else 6


def _rounds() -> int:
    """Short rounds, many: other work on this shared machine comes and goes within seconds,
    so each otaguard round is compared with the nginx round just before it."""
    return 2 if quick() else 6


def device_id(i: int) -> str:
    """A 17-character id, as long as a VIN."""
    return f"WBA{i:014d}"


def _otaguard(*args: str | Path, timeout: float = 120) -> str:
    return check(["otaguard", *map(str, args)], timeout=timeout).stdout


def _pg(url: str) -> Any:
    import psycopg

    return psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


# -- the processes under test -------------------------------------------------------------


@dataclass
class Service:
    """A server under test (otaguard or nginx), started pinned, stopped by its pid."""

    name: str
    workers: int
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def pids(self) -> list[int]:
        return load.process_tree(self.proc.pid)

    def worker_pids(self) -> list[int]:
        """The processes that answer requests (uvicorn's and nginx's masters do not)."""
        tree = self.pids()
        return tree if len(tree) == 1 else [p for p in tree if p != self.proc.pid]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM if self.name == "otaguard" else signal.SIGQUIT)
            try:
                self.proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_otaguard(data_dir: Path, db_url: str, workers: int, log: Path) -> Service:
    port = _free_port()
    argv = [
        "taskset", "-c", SERVER_CPUS[workers], "otaguard", "server", "run",
        "--data-dir", str(data_dir), "--database", db_url, "--port", str(port),
        "--workers", str(workers),
    ]  # fmt: skip
    with log.open("ab") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    service = Service("otaguard", workers, proc, port, log)
    _wait_up(service, "/openapi.json")
    if workers > 1:  # every worker has started its application (its lifespan ran)
        deadline = time.monotonic() + START_S
        while len(service.worker_pids()) < workers and time.monotonic() < deadline:
            time.sleep(0.1)
    return service


NGINX_CONF = """
worker_processes {workers};
daemon off;
user root;
pid {base}/nginx.pid;
error_log {base}/error.log;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {base}/tmp-body;
    proxy_temp_path {base}/tmp-proxy;
    fastcgi_temp_path {base}/tmp-fastcgi;
    uwsgi_temp_path {base}/tmp-uwsgi;
    scgi_temp_path {base}/tmp-scgi;
    server {{
        listen 127.0.0.1:{port};
        root {root};
        location / {{ default_type application/json; try_files /idle.json =404; }}
    }}
}}
"""


def start_nginx(base: Path, workers: int) -> Service:
    binary = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/sbin")
    if binary is None:
        raise RuntimeError("nginx is not installed (make bench installs it with apt-get)")
    base.mkdir(parents=True, exist_ok=True)
    root = base / "www"
    root.mkdir(exist_ok=True)
    # about the size of a check-in answer's headers: a small static file
    (root / "idle.json").write_text('{"etag": "' + "0" * 32 + '", "actions": []}\n')
    port = _free_port()
    conf = base / "nginx.conf"
    conf.write_text(NGINX_CONF.format(workers=workers, base=base, root=root, port=port))
    argv = ["taskset", "-c", SERVER_CPUS[workers], binary, "-c", str(conf), "-p", str(base)]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    service = Service("nginx", workers, proc, port, base / "error.log")
    _wait_up(service, "/idle.json")
    return service


def _wait_up(service: Service, path: str) -> None:
    import httpx

    deadline = time.monotonic() + START_S
    while time.monotonic() < deadline:
        if service.proc.poll() is not None:
            raise RuntimeError(f"{service.name} exited: {_tail(service.log)}")
        if _listening(service.port):
            try:
                if httpx.get(service.url + path, timeout=5).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
        time.sleep(0.1)
    service.stop()
    raise RuntimeError(f"{service.name} did not answer within {START_S} s: {_tail(service.log)}")


def _tail(path: Path) -> str:
    try:
        lines = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "(no log)"
    return lines[-1] if lines else "(empty log)"


# -- the fleet ------------------------------------------------------------------------------


@dataclass
class Fleet:
    """A loaded database and data dir, and what a device needs to sign its check-ins."""

    db_name: str
    db_url: str
    data_dir: Path
    devices: int
    key_files: list[Path]
    state: str
    etag: str
    load_s: dict[str, float] = field(default_factory=dict)
    table_mib: dict[str, float] = field(default_factory=dict)

    def signers(self) -> list[Any]:
        from otaguard.crypto.keys import load_private_key
        from otaguard.crypto.signer import KeySigner

        return [KeySigner(load_private_key(p.read_bytes())) for p in self.key_files]


def _create_database() -> tuple[str, str]:
    name = f"otaguard_bench_{os.getpid()}_{secrets.token_hex(3)}"
    with _pg(PG_ADMIN) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    return name, f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"


def drop_database(name: str) -> None:
    with _pg(PG_ADMIN) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _release(work: Path, server: Service, data_dir: Path) -> bytes:
    """A release signed offline and published; the image's bytes."""
    keys = work / "offline"
    keys.mkdir()
    for name, algorithm in (("root", "ed25519"), ("targets", "ed25519"), ("release", "ecdsa-p256")):
        _otaguard(
            "key", "generate", "--algorithm", algorithm, "--out", keys / f"{name}.pem",
            "--public-out", keys / f"{name}.pub",
        )  # fmt: skip
    online = data_dir / "online-keys"
    _otaguard(
        "repo", "init", work / "rel", "--root-key", keys / "root.pem",
        "--targets-key", keys / "targets.pem",
        "--snapshot-key", online / "snapshot.pub", "--timestamp-key", online / "timestamp.pub",
    )  # fmt: skip
    payload = work / "fw.bin"
    payload.write_bytes(random.Random(14).randbytes(256 * 1024))
    image = work / "fw-2.0.0.img"
    _otaguard(
        "sign", "--key", keys / "release.pem", "--version", "2.0.0", "--security-counter", "2",
        "--hardware-id", HW, payload, image,
    )  # fmt: skip
    _otaguard(
        "repo", "add-target", work / "rel", image, "--name", TARGET,
        "--trusted-key", keys / "release.pub",
    )  # fmt: skip
    _otaguard("repo", "sign", work / "rel", "--key", keys / "targets.pem")
    _fleet(server, data_dir, "release", "publish", "--repo", work / "rel")
    return image.read_bytes()


def _fleet(server: Service, data_dir: Path, *args: str | Path) -> str:
    token = data_dir / "admin.token"
    return _otaguard("fleet", "--server", server.url, "--token-file", token, *args)


def _enrol_templates(work: Path, server: Service, data_dir: Path, image: bytes) -> list[Path]:
    """TEMPLATES devices enrolled through the device API, reporting ``image`` installed."""
    import httpx

    from otaguard.crypto.keys import load_private_key
    from otaguard.crypto.signer import KeySigner
    from otaguard.protocol.signing import sign_request
    from otaguard.protocol.state import state_hash

    pki = work / "pki"
    _otaguard(
        "pki", "init-root", "--out-dir", pki / "root", "--subject", "CN=Bench Device Root",
        "--algorithm", "ecdsa-p256",
    )  # fmt: skip
    _otaguard(
        "pki", "issue-intermediate", "--ca", pki / "root", "--out-dir", pki / "ca",
        "--purpose", "device-identity", "--algorithm", "ecdsa-p256",
        "--subject", "CN=Bench Device CA",
    )  # fmt: skip
    _fleet(
        server, data_dir, "enroll", "--ca", pki / "ca" / "cert.pem", "--hardware-id", HW,
        "--region", "eu", "--name", "bench-eu",
    )  # fmt: skip
    installed = {
        "ecus": [
            {
                "serial": "main",
                "hardware_id": HW,
                "target": TARGET,
                "version": "2.0.0",
                "security_counter": 2,
                "sha256": hashlib.sha256(image).hexdigest(),
                "slot": "a",
                "boot": "confirmed",
            }
        ]
    }
    keys = []
    with httpx.Client(base_url=server.url, timeout=30) as http:
        for i in range(TEMPLATES):
            out = pki / f"device{i}"
            _otaguard("pki", "issue-device", "--ca", pki / "ca", "--out-dir", out,
                      "--device-id", device_id(i))  # fmt: skip
            signer = KeySigner(load_private_key((out / "key.pem").read_bytes()))
            enrol = {
                "chain_pem": (out / "chain.pem").read_text(),
                "ecus": [{"serial": "main", "hardware_id": HW}],
            }
            calls = (("/api/v1/device/enroll", enrol), ("/api/v1/device/state", installed))
            for path, body in calls:
                raw = json.dumps(body).encode()
                headers = sign_request(
                    signer, device_id=device_id(i), method="POST", path=path, body=raw,
                    time=int(time.time()), nonce=secrets.token_hex(16),
                )  # fmt: skip
                answer = http.post(
                    path, content=raw, headers={**headers, "Content-Type": "application/json"}
                )
                if answer.status_code not in (200, 201):
                    raise RuntimeError(f"{path}: {answer.status_code} {answer.text[:200]}")
            if answer.json()["state"] != state_hash(installed):
                raise RuntimeError("the server's state hash is not the protocol's")
            keys.append(out / "key.pem")
    _fleet(server, data_dir, "deploy", TARGET, "--group", "bench-eu")
    return keys


def _check_in(url: str, signer: Any, device: str, state: str, etag: str | None) -> Any:
    import httpx

    from otaguard.protocol.signing import sign_request

    query = f"state={state}"
    headers = sign_request(
        signer, device_id=device, method="GET", path=load.CHECK_IN_PATH, query=query,
        time=int(time.time()), nonce=secrets.token_hex(16),
    )  # fmt: skip
    if etag:
        headers["If-None-Match"] = etag
    return httpx.get(f"{url}{load.CHECK_IN_PATH}?{query}", headers=headers, timeout=30)


#: The templates' rows cloned server-side (no bytes through the client), step by step.
#: Foreign-key triggers are off for the load (``session_replication_role = replica``, as
#: a restore does): every row copies a row that satisfies them.
CLONE_STEPS = (
    ("ids", """
        SET LOCAL session_replication_role = replica;
        CREATE TEMP TABLE tpl AS
            SELECT (row_number() OVER (ORDER BY id)) - 1 AS k, id FROM devices;
        CREATE TEMP TABLE ids AS
            SELECT 'WBA' || lpad(g::text, 14, '0') AS id, tpl.id AS template
            FROM generate_series({first}, {last}) AS g JOIN tpl ON tpl.k = g % {templates};
    """),
    ("devices", """
        INSERT INTO devices (id, group_id, chain_pem, public_key_der, cert_sha256,
                             cert_serial, enrolled_at, revoked_at, generation, state_hash,
                             state_at, last_seen)
        SELECT ids.id, d.group_id, d.chain_pem, d.public_key_der, d.cert_sha256,
               d.cert_serial, d.enrolled_at, d.revoked_at, d.generation, d.state_hash,
               d.state_at, d.last_seen
        FROM ids JOIN devices d ON d.id = ids.template;
    """),
    ("ecus", """
        INSERT INTO ecus (device_id, serial, hardware_id, target, version, security_counter,
                          sha256, slot, boot)
        SELECT ids.id, e.serial, e.hardware_id, e.target, e.version, e.security_counter,
               e.sha256, e.slot, e.boot
        FROM ids JOIN ecus e ON e.device_id = ids.template;
    """),
    ("assignments", """
        INSERT INTO assignments (device_id, ecu_serial, target, deployment_id, assigned_at)
        SELECT ids.id, a.ecu_serial, a.target, a.deployment_id, a.assigned_at
        FROM ids JOIN assignments a ON a.device_id = ids.template;
        UPDATE deployments SET assignments = (SELECT count(*) FROM assignments);
    """),
)  # fmt: skip


def _clone(db_url: str, devices: int) -> dict[str, float]:
    """The templates' rows cloned into ``devices`` devices; seconds per step.

    VACUUM (ANALYZE) too: autovacuum would otherwise run on the fresh tables during the
    measurement, and until a row is vacuumed every first read of it sets hint bits, that
    is writes its page, which would blur "an idle check-in writes nothing".
    """
    times: dict[str, float] = {}
    with _pg(db_url) as conn:
        with conn.transaction():
            for label, sql in CLONE_STEPS:
                start = time.perf_counter()
                conn.execute(sql.format(first=TEMPLATES, last=devices - 1, templates=TEMPLATES))  # type: ignore[arg-type]
                times[label] = time.perf_counter() - start
        start = time.perf_counter()
        for table in ("devices", "ecus", "assignments"):
            conn.execute(f"VACUUM (ANALYZE) {table}")  # type: ignore[arg-type]
        times["vacuum"] = time.perf_counter() - start
    return times


def _table_sizes(db_url: str) -> dict[str, float]:
    with _pg(db_url) as conn:
        rows = conn.execute(
            "SELECT relname, pg_total_relation_size(relid) FROM pg_stat_user_tables "
            "WHERE schemaname = 'public'"
        ).fetchall()
    return {name: size / 2**20 for name, size in rows}


def prepare_fleet(work: Path, devices: int) -> Fleet:
    """Database, data dir, release, templates through the API, then the clones in SQL."""
    name, db_url = _create_database()
    data_dir = work / "srv"
    server = start_otaguard(data_dir, db_url, 1, work / "setup-server.log")
    try:
        image = _release(work, server, data_dir)
        key_files = _enrol_templates(work, server, data_dir, image)
        signer = Fleet(name, db_url, data_dir, 0, key_files[:1], "", "").signers()[0]
        state = _device_state(db_url, device_id(0))
        first = _check_in(server.url, signer, device_id(0), state, None)
        if first.status_code != 200:
            raise RuntimeError(f"first check-in: {first.status_code} {first.text[:200]}")
        etag = first.headers["ETag"]
        again = _check_in(server.url, signer, device_id(0), state, etag)
        if again.status_code != 304:
            raise RuntimeError(f"idle check-in: {again.status_code}, not 304")
    finally:
        server.stop()
    with _pg(db_url) as conn:
        tags = conn.execute("SELECT DISTINCT generation, state_hash FROM devices").fetchall()
    if len(tags) != 1:
        raise RuntimeError(f"the templates differ in generation or state: {tags}")
    fleet = Fleet(name, db_url, data_dir, devices, key_files, state, etag)
    fleet.load_s = _clone(db_url, devices)
    fleet.table_mib = _table_sizes(db_url)
    return fleet


def _device_state(db_url: str, device: str) -> str:
    with _pg(db_url) as conn:
        row = conn.execute("SELECT state_hash FROM devices WHERE id = %s", (device,)).fetchone()
    return str(row[0])


# -- one measurement ----------------------------------------------------------------------


@dataclass
class Measurement:
    service: str
    workers: int
    result: load.WrkResult
    wrk_cpu: float
    server_cpu: float
    pg_cpu: float

    @property
    def rate(self) -> float:
        return self.result.rate


def _pg_backends(db_name: str) -> list[int]:
    with _pg(PG_ADMIN) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s", (db_name,)
        ).fetchall()
    return [int(r[0]) for r in rows]


def run_wrk(
    target: Service,
    requests_file: Path,
    script: Path,
    seconds: int,
    *,
    mode: str,
    db_name: str | None = None,
) -> Measurement:
    """One wrk run against ``target``: the result and the CPU each party used meanwhile."""
    argv = [
        "taskset", "-c", WRK_CPUS, "wrk", "-t1", f"-c{CONNECTIONS}", f"-d{seconds}s",
        "--timeout", "10s", "-s", str(script), target.url + load.CHECK_IN_PATH,
        "--", str(requests_file), mode,
    ]  # fmt: skip
    pids = target.pids()
    server_before = load.cpu_seconds(pids)
    pg_before = {pid: load.cpu_seconds([pid]) for pid in _pg_backends(db_name)} if db_name else {}
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    # wait4 gives exactly wrk's own CPU time (not that of every child we ever reaped)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    assert proc.stdout is not None and proc.stderr is not None
    out, err = proc.stdout.read().decode(), proc.stderr.read().decode()
    server_cpu = load.cpu_seconds(pids) - server_before
    pg_cpu = 0.0
    if db_name:  # backends opened during the run count from zero
        for pid in _pg_backends(db_name):
            pg_cpu += load.cpu_seconds([pid]) - pg_before.get(pid, 0.0)
    if proc.returncode != 0:
        raise RuntimeError(f"wrk exited {proc.returncode}: {(err or out).strip()[-300:]}")
    return Measurement(
        target.name,
        target.workers,
        load.parse_wrk(out),
        usage.ru_utime + usage.ru_stime,
        server_cpu,
        pg_cpu,
    )


class Requests:
    """Pre-signed check-ins for devices drawn without replacement from the fleet."""

    def __init__(self, fleet: Fleet, work: Path) -> None:
        self.fleet = fleet
        self.work = work
        self.signers = fleet.signers()
        order = list(range(fleet.devices))
        random.Random(1).shuffle(order)
        self.order = order
        self.next = 0
        self.files = 0
        self.sign_rate = 0.0

    def batch(self, count: int) -> Path:
        if self.next + count > len(self.order):  # past the fleet: start again (new nonces)
            self.next = 0
        ids = self.order[self.next : self.next + count]
        self.next += count
        devices = ((device_id(i), self.signers[i % len(self.signers)]) for i in ids)
        start = time.perf_counter()
        data = load.presign(
            load.IdleCheckIn(self.fleet.state, self.fleet.etag), devices, now=int(time.time())
        )
        self.sign_rate = count / (time.perf_counter() - start)
        self.files += 1
        path = self.work / f"requests-{self.files}.http"
        path.write_bytes(data)
        return path


# -- the bench ----------------------------------------------------------------------------


def _write_stats(db_url: str) -> dict[str, tuple[int, int, int]]:
    """Rows inserted, updated and deleted per table since the statistics were reset."""
    with _pg(db_url) as conn:
        rows = conn.execute(
            "SELECT relname, n_tup_ins, n_tup_upd, n_tup_del FROM pg_stat_user_tables"
        ).fetchall()
    return {name: (int(i), int(u), int(d)) for name, i, u, d in rows}


def _xacts(db_url: str, db_name: str) -> tuple[int, int]:
    with _pg(db_url) as conn:
        row = conn.execute(
            "SELECT xact_commit + xact_rollback, tup_returned + tup_fetched "
            "FROM pg_stat_database WHERE datname = %s",
            (db_name,),
        ).fetchone()
    return int(row[0]), int(row[1])


def measure(fleet: Fleet, work: Path) -> tuple[list[Measurement], dict[str, Any]]:
    """Rounds of nginx and otaguard, 1 then 2 workers; what the database did meanwhile."""
    script = work / "checkin.lua"
    script.write_text(load.wrk_script(1))
    requests = Requests(fleet, work)
    nginx_file = requests.batch(20_000)
    seconds = _duration()
    results: list[Measurement] = []
    extra: dict[str, Any] = {"checkins": 0, "all_checkins": 0, "loadavg": []}
    writes_before = _write_stats(fleet.db_url)
    xacts_before = _xacts(fleet.db_url, fleet.db_name)
    for workers in (1, 2):
        nginx = start_nginx(work / f"nginx-{workers}", workers)
        server = start_otaguard(fleet.data_dir, fleet.db_url, workers, work / "server.log")
        try:
            # warm-up: connections, caches, and the rate that sizes the pre-signed batches
            run_wrk(nginx, nginx_file, script, 2, mode="cycle")
            warm = run_wrk(
                server, requests.batch(6000), script, 3, mode="once", db_name=fleet.db_name
            )
            extra["all_checkins"] += warm.result.requests
            rate = max(warm.rate, 1500.0)
            for _ in range(_rounds()):
                extra["loadavg"].append(_loadavg())
                results.append(run_wrk(nginx, nginx_file, script, seconds, mode="cycle"))
                batch = requests.batch(int(rate * seconds * 3))
                m = run_wrk(server, batch, script, seconds, mode="once", db_name=fleet.db_name)
                rate = max(rate, m.rate)
                extra["checkins"] += m.result.requests
                extra["all_checkins"] += m.result.requests
                results.append(m)
        finally:
            server.stop()
            nginx.stop()
    time.sleep(1.5)  # PostgreSQL publishes a backend's table statistics within a second
    writes_after = _write_stats(fleet.db_url)
    xacts_after = _xacts(fleet.db_url, fleet.db_name)
    extra["writes"] = {
        table: tuple(a - b for a, b in zip(after, writes_before.get(table, (0, 0, 0)), strict=True))
        for table, after in writes_after.items()
    }
    extra["xacts"] = xacts_after[0] - xacts_before[0]
    extra["sign_rate"] = requests.sign_rate
    return results, extra


@dataclass
class Flush:
    rows: int
    seconds: float
    wal_bytes: int
    hot: int


def last_seen_flush(fleet: Fleet, rows: int) -> Flush:
    """One batched last-seen flush of ``rows`` devices (what a process writes every 5 s),
    through the server's own code; its WAL from the LSN (cluster-wide: other databases'
    writes meanwhile count too, so this is an upper bound)."""
    from otaguard.server.db import Database
    from otaguard.server.lastseen import LastSeen

    db = Database(fleet.db_url)
    try:
        seen = LastSeen(db, 3600)
        now = int(time.time())
        for i in random.Random(2).sample(range(fleet.devices), rows):
            seen.saw(device_id(i), now)
        with _pg(fleet.db_url) as conn:
            lsn = conn.execute("SELECT pg_current_wal_lsn()").fetchone()[0]
            hot_before = _hot_updates(conn)
            start = time.perf_counter()
            written = seen.flush()
            took = time.perf_counter() - start
            wal = conn.execute("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %s)", (lsn,))
            wal_bytes = int(wal.fetchone()[0])
            time.sleep(1.5)
            hot = _hot_updates(conn) - hot_before
    finally:
        db.dispose()
    if written != rows:
        raise RuntimeError(f"the last-seen flush wrote {written} rows, not {rows}")
    return Flush(rows, took, wal_bytes, hot)


def _hot_updates(conn: Any) -> int:
    row = conn.execute(
        "SELECT n_tup_hot_upd FROM pg_stat_user_tables WHERE relname = 'devices'"
    ).fetchone()
    return int(row[0])


def profile(fleet: Fleet, work: Path, seconds: int) -> str:
    """py-spy's samples (collapsed stacks) of the single worker under load."""
    spy = shutil.which("py-spy") or "py-spy"
    script = work / "checkin.lua"
    script.write_text(load.wrk_script(1))
    requests = Requests(fleet, work)
    requests.next = fleet.devices // 2  # devices the measured runs are unlikely to have used
    server = start_otaguard(fleet.data_dir, fleet.db_url, 1, work / "profile-server.log")
    out = work / "profile.txt"
    try:
        batch = requests.batch(int(4000 * (seconds + 3)))
        spy_proc = subprocess.Popen(
            ["taskset", "-c", WRK_CPUS, spy, "record", "--pid", str(server.proc.pid),
             "--duration", str(seconds), "--rate", "250", "--nonblocking", "--gil",
             "--format", "raw", "--output", str(out)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        run_wrk(server, batch, script, seconds + 2, mode="once", db_name=fleet.db_name)
        _, err = spy_proc.communicate(timeout=60)
    finally:
        server.stop()
    if not out.exists():
        raise RuntimeError(f"py-spy wrote no profile: {err.decode(errors='replace')[-300:]}")
    return out.read_text()


def _median(values: Any) -> float:
    return float(statistics.median(values))


def _row(group: list[Measurement], ratio: float | None) -> str:
    rate = _median(m.rate for m in group)
    statuses: dict[int, int] = {}
    for m in group:
        for code, n in m.result.statuses.items():
            statuses[code] = statuses.get(code, 0) + n
    answers = ", ".join(f"{n:,} x {c}" for c, n in sorted(statuses.items()))
    server_us = _median(m.server_cpu / m.result.requests * 1e6 for m in group)
    pg_us = _median(m.pg_cpu / m.result.requests * 1e6 for m in group)
    return (
        f"| {group[0].service} | {group[0].workers} | {rate:,.0f} | "
        f"{'-' if ratio is None else f'{ratio:.3f}x'} | "
        f"{_median(m.result.p50_ms for m in group):.2f} | "
        f"{_median(m.result.p99_ms for m in group):.2f} | "
        f"{server_us:.0f} | {'-' if ratio is None else f'{pg_us:.0f}'} | "
        f"{_median(m.wrk_cpu / m.result.seconds * 100 for m in group):.0f} | "
        f"{' / '.join(f'{m.rate:,.0f}' for m in group)} | {answers} |"
    )


def report(
    fleet: Fleet,
    results: list[Measurement],
    extra: dict[str, Any],
    flush: Flush,
    collapsed: str | None,
) -> tuple[str, list[str]]:
    """The markdown section and the list of problems (a failed measurement)."""
    problems: list[str] = []
    tables = ", ".join(f"{k} {v:,.0f} MiB" for k, v in sorted(fleet.table_mib.items()) if v >= 1)
    lines = [
        f"{fleet.devices:,} devices in PostgreSQL 15, each with one ECU, its reported state "
        f"and an assignment: the rows of {TEMPLATES} devices enrolled through the device API "
        f"(real certificates and ECDSA P-256 keys), cloned in SQL in "
        f"{sum(fleet.load_s.values()):.0f} s ("
        + ", ".join(f"{k} {v:.1f} s" for k, v in fleet.load_s.items())
        + f"); {tables}. Each check-in is pre-signed (a fresh nonce, a device drawn without "
        f"replacement, so no device checks in twice) and sent once by wrk 4.1 (one thread, "
        f"{CONNECTIONS} keep-alive connections, its Lua script) pinned to CPU {WRK_CPUS}; "
        f"nginx gets the same script and requests, and serves a 60-byte file. Servers pinned "
        f"to CPU {SERVER_CPUS[1]} with 1 worker, to CPUs {SERVER_CPUS[2]} with 2 (sharing "
        f"CPU {WRK_CPUS} with wrk); PostgreSQL (a system service) not pinned. "
        f"{_rounds()} rounds of {_duration()} s, nginx then otaguard; medians (vs nginx: "
        f"the median of each otaguard round's rate over the nginx round's just before). "
        f"CPU per request from /proc (server: every process of it; PostgreSQL: the backends "
        f"of the bench's database). Load average before each round: "
        f"{', '.join(extra['loadavg'])} (the machine is shared).",
        "",
        "| server | workers | requests/s | vs nginx | p50 ms | p99 ms | server CPU us/req | "
        "PostgreSQL CPU us/req | wrk CPU % | rounds (req/s) | answers |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    ratios: dict[int, float] = {}
    cpu: dict[str, float] = {}
    for workers in (1, 2):
        nginx = [m for m in results if m.service == "nginx" and m.workers == workers]
        ours = [m for m in results if m.service == "otaguard" and m.workers == workers]
        # each otaguard round against the nginx round just before it
        ratios[workers] = _median(o.rate / n.rate for n, o in zip(nginx, ours, strict=True))
        lines += [_row(nginx, None), _row(ours, ratios[workers])]
        if workers == 1:
            cpu["nginx"] = _median(m.server_cpu / m.result.requests * 1e6 for m in nginx)
            cpu["otaguard"] = _median(m.server_cpu / m.result.requests * 1e6 for m in ours)
            cpu["pg"] = _median(m.pg_cpu / m.result.requests * 1e6 for m in ours)
        for group, expect in ((nginx, 200), (ours, 304)):
            bad = sum(m.result.unexpected(expect) for m in group)
            if bad:
                name = group[0].service
                problems.append(f"{name} ({workers} workers): {bad} answers not {expect}")
    best = max(ratios.values())
    verdict = (
        f"**Goal (>= {GOAL_RATIO}x nginx's rate): met** ({best:.3f}x)."
        if best >= GOAL_RATIO
        else f"**Goal (>= {GOAL_RATIO}x nginx's rate): NOT met**: {best:.3f}x at best, "
        f"{GOAL_RATIO / best:.1f}x short."
    )
    lines += [
        "",
        verdict + f" Per request, one otaguard worker used {cpu['otaguard']:.0f} us of CPU "
        f"(and PostgreSQL {cpu['pg']:.0f} us) where nginx used {cpu['nginx']:.0f} us: "
        f"{cpu['otaguard'] / cpu['nginx']:.0f}x, so one core answers about "
        f"{1e6 / cpu['otaguard']:,.0f} idle check-ins a second where it would serve "
        f"{1e6 / cpu['nginx']:,.0f} static files (nginx's rate here is bounded by the "
        f"generator and the loopback round trips, not by its CPU: the rate ratio "
        f"flatters otaguard).",
    ]
    writes = extra["writes"]
    # The jobs' own rows are not check-ins': the audit log's periodic checkpoint (signed
    # when entries were added since the last, here the enrolments before the run).
    background = ("audit_checkpoints",)
    inserted = sum(i for t, (i, _, _) in writes.items() if t not in background)
    lines += [
        "",
        f"Database writes during the {extra['all_checkins']:,} idle check-ins (measured "
        "rounds and warm-ups), from pg_stat_user_tables: "
        + ", ".join(
            f"{t} {i:,} inserted / {u:,} updated / {d:,} deleted"
            for t, (i, u, d) in sorted(writes.items())
            if i or u or d
        )
        + ". The devices' updates are the last-seen times, one row per device checked in, "
        "written by each process's batched flush every 5 s; the leases' are the job "
        "lease's renewals; an audit checkpoint is the jobs' periodic signing of the log "
        "(entries were added before the run), not a check-in's; by check-ins: "
        + ("no row inserted" if inserted == 0 else "**rows were inserted**")
        + f". {extra['xacts']:,} transactions: one per check-in, the autocommit device "
        f"lookup (read-only). Pre-signing ran at {extra['sign_rate']:,.0f} requests/s.",
        "",
        f"One last-seen flush of {flush.rows:,} devices (a process's 5 s at 5.6 k "
        f"check-ins/s) through `LastSeen.flush`: {flush.seconds:.2f} s "
        f"({flush.rows / flush.seconds:,.0f} rows/s), {flush.wal_bytes / 2**20:.1f} MiB of "
        f"WAL ({flush.wal_bytes / flush.rows:,.0f} bytes a row; cluster-wide, so an upper "
        f"bound), {flush.hot / flush.rows:.0%} HOT updates.",
    ]
    if inserted:
        problems.append("an idle check-in inserted rows")
    if collapsed:
        shares = load.summarise_profile(collapsed)
        lines += [
            "",
            "Where one worker's time goes under this load (py-spy record, 250 Hz, "
            "`--gil`: samples of the thread holding the GIL, that is the Python work that "
            "bounds one process; time in OpenSSL or the kernel without the GIL not shown):",
            "",
            "| part | share of samples |",
            "|---|---|",
        ]
        lines += [f"| {label} | {share:.0%} |" for label, share in shares]
        top = load.top_self(collapsed)
        lines += ["", "Top functions by self time: " + "; ".join(f"`{f}` {s:.0%}" for f, s in top)]
    return "\n".join(lines) + "\n", problems


def run(workdir: Path) -> str:
    for tool in ("wrk", "taskset", "py-spy"):
        if shutil.which(tool) is None:
            raise RuntimeError(f"{tool} is not installed (make bench installs it)")
    fleet = prepare_fleet(workdir, _devices())
    try:
        results, extra = measure(fleet, workdir)
        flush = last_seen_flush(fleet, 5000 if quick() else 28_000)
        collapsed = profile(fleet, workdir, 4 if quick() else 10)
    finally:
        drop_database(fleet.db_name)
    section, problems = report(fleet, results, extra, flush, collapsed)
    if problems:
        raise BenchFailed("; ".join(problems), section)
    return section
