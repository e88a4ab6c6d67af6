"""A fleet server with campaigns on loopback: releases, an enrolled device CA, two operators.

Everything is the real thing: ``otaguard server run`` (with ``--mqtt`` at the real
Mosquitto), the release managers' offline repository, ``fleet release publish``,
``fleet enroll``, the campaign REST API with two people (the creator cannot approve).
Used by the HTTP-fleet tests and the campaign bench.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from helpers_fleet import DeviceCa
from otaguard.pki.store import load_ca_dir
from otaguard.sim import http_fleet as hf
from server.helpers_process import ServerProcess
from server.helpers_release import HW, OfflineRepo

POLICY = """
[waves]
fractions = [0.1, 1.0]
min_devices = 1
min_soak_s = 4.0

[advance]
min_confirmed = 5
require_health = false

[halt]
failure_threshold = 0.15
confidence = 0.9
min_sample = 8
methods = ["wilson"]
deadline_s = 300.0
revert_on_halt = true

[health]
window_s = 2.0
min_devices = 5
"""


@dataclass
class CampaignWorld:
    srv: ServerProcess
    data: Path
    repo: OfflineRepo
    ca: DeviceCa
    images: dict[str, hf.Image]
    admin: str
    operator: str

    @property
    def bad(self) -> str:
        return f"{HW}/2.0.0.img"

    @property
    def good(self) -> str:
        return f"{HW}/3.0.0.img"

    def fleet_config(self, **kw: Any) -> hf.FleetConfig:
        published = sorted(
            (self.data / "repo" / "metadata").glob("*.targets.json"),
            key=lambda p: int(p.name.split(".", 1)[0]),
        )
        targets = hf.repository_targets(published[-1].read_bytes())
        return hf.FleetConfig(
            server=self.srv.url,
            hardware_id=HW,
            director_root=hf.director_root_of((self.data / "director-root.json").read_bytes()),
            repository=targets,
            factory=self.images["v1"],
            releases={self.bad: self.images["v2"], self.good: self.images["v3"]},
            **kw,
        )

    def identities(self, prefix: str, count: int) -> list[hf.LightIdentity]:
        ca = load_ca_dir(self.ca.base / "ca")
        return hf.issue_identities(ca.issuer(), list(ca.chain), prefix, count)

    # -- the operators (async: called from inside the fleet's event loop) ----------------

    async def call(self, token: str, method: str, path: str, body: Any = None) -> Any:
        async with httpx.AsyncClient(timeout=60) as client:
            response = await client.request(
                method,
                f"{self.srv.url}/api/v1/campaigns{path}",
                json=body,
                headers={"Authorization": f"Bearer {token}"},
            )
        assert response.status_code in (200, 201), response.text
        return response.json()

    async def launch(self, target: str, policy: str = POLICY) -> str:
        """Create (admin), approve and start (the operator: another person)."""
        made = await self.call(
            self.admin,
            "POST",
            "",
            {
                "name": f"rollout-{target.rsplit('/', 1)[-1]}-{random.randrange(1 << 30)}",
                "targets": [target],
                "selector": {"hardware_id": HW},
                "compatible": {HW: ["1.0.0", "2.0.0"]},
                "policy": policy,
            },
        )
        await self.call(self.operator, "POST", f"/{made['id']}/approve")
        await self.call(self.operator, "POST", f"/{made['id']}/start")
        return str(made["id"])

    async def status(self, campaign: str) -> dict[str, Any]:
        return await self.call(self.operator, "GET", f"/{campaign}")  # type: ignore[no-any-return]

    async def until_status(self, campaign: str, wanted: set[str], timeout: float) -> dict[str, Any]:
        import asyncio

        end = time.monotonic() + timeout
        while True:
            shown = await self.status(campaign)
            if shown["status"] in wanted or time.monotonic() > end:
                return shown
            await asyncio.sleep(0.5)


def start_world(tmp: Path, db_url: str, ca: DeviceCa, cli: Any, *extra: str) -> CampaignWorld:
    data = tmp / "srv"
    srv = ServerProcess.start(data, db_url, *extra)
    try:
        repo = OfflineRepo.init(tmp, data / "online-keys")
        rnd = random.Random(16)
        payloads = [rnd.randbytes(4096) for _ in range(3)]
        images = {}
        for i, payload in enumerate(payloads, start=1):
            name = f"{HW}/{i}.0.0.img"
            data_i = repo.add(name, payload, version=f"{i}.0.0", counter=i).read_bytes()
            images[f"v{i}"] = hf.image_of(name, data_i, f"{i}.0.0", i)
        repo.sign()
        token = data / "admin.token"
        published = cli("fleet", "--server", srv.url, "--token-file", token, "release", "publish",
                        "--repo", repo.dir, "--json")  # fmt: skip
        assert published.code == 0, published.err
        (tmp / "devca.pem").write_bytes(ca.cert.read_bytes())
        enrolled = cli("fleet", "--server", srv.url, "--token-file", token, "enroll", "--ca",
                       tmp / "devca.pem", "--hardware-id", HW, "--region", "eu")  # fmt: skip
        assert enrolled.code == 0, enrolled.err
        made = cli("fleet", "--server", srv.url, "--token-file", token, "token", "create",
                   "--role", "operator", "--name", "olga", "--json")  # fmt: skip
        assert made.code == 0, made.err
        operator = json.loads(made.out)["token"]
        admin = token.read_text().strip()
        return CampaignWorld(srv, data, repo, ca, images, admin, operator)
    except BaseException:
        srv.stop()
        raise
