"""Helpers for server tests: PostgreSQL connections, a live uvicorn, operator clients."""

from __future__ import annotations

import asyncio
import datetime as dt
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import uvicorn

from otaguard.server.app import create_app
from otaguard.server.config import ServerConfig, Timing
from otaguard.server.datadir import prepare
from otaguard.server.db import Database

PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test"


def pg_connect(url: str) -> psycopg.Connection[Any]:
    return psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True)


def loopback_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@dataclass
class LiveServer:
    config: ServerConfig
    url: str
    admin_token: str
    server: uvicorn.Server
    thread: threading.Thread
    clients: list[httpx.Client] = field(default_factory=list)

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        client = httpx.Client(base_url=self.url, headers=headers, timeout=30)
        self.clients.append(client)
        return client

    def admin(self) -> httpx.Client:
        return self.client(self.admin_token)

    def token(self, role: str, name: str = "t") -> str:
        answer = self.admin().post("/api/v1/tokens", json={"role": role, "name": name})
        assert answer.status_code == 201, answer.text
        return str(answer.json()["token"])

    @property
    def app_state(self) -> Any:
        return self.server.config.loaded_app.app.state

    def stop(self) -> None:
        for client in self.clients:
            client.close()
        self.server.should_exit = True
        self.thread.join(timeout=30)


def start_live(data_dir: Path, db_url: str, **config: Any) -> LiveServer:
    config.setdefault("timing", Timing(last_seen_flush=0.2, job_interval=3600))
    cfg = ServerConfig.create(data_dir, db_url, **config)
    db = Database(cfg.database_url)
    prepare(cfg, db, now=dt.datetime.now(dt.UTC))
    db.dispose()
    sock = loopback_socket()
    port = sock.getsockname()[1]
    uv = uvicorn.Config(create_app(cfg), log_level="warning", lifespan="on")
    server = uvicorn.Server(uv)
    thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[sock])), daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("the server did not start")
        threading.Event().wait(0.01)
    token = cfg.admin_token_file.read_text().strip()
    return LiveServer(cfg, f"http://127.0.0.1:{port}", token, server, thread)
