"""``otaguard server run`` as a real process: started on an ephemeral port, killed or stopped."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

STARTUP_S = 60


@dataclass
class ServerProcess:
    proc: subprocess.Popen[str]
    url: str
    output: list[str] = field(default_factory=list)

    @classmethod
    def start(
        cls, data_dir: Path, db_url: str, *extra: str, env: dict[str, str] | None = None
    ) -> ServerProcess:
        args = [
            sys.executable, "-m", "otaguard.cli.main", "server", "run",
            "--data-dir", str(data_dir), "--database", db_url, "--port", "0", *extra,
        ]  # fmt: skip
        proc = subprocess.Popen(
            args,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, **(env or {})},
        )
        output: list[str] = []
        found = threading.Event()
        url: list[str] = []

        def read() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                output.append(line)
                match = re.search(r"listening on (http://\S+)", line)
                if match:
                    url.append(match.group(1))
                    found.set()
            found.set()

        threading.Thread(target=read, daemon=True).start()
        found.wait(STARTUP_S)
        if not url:
            proc.kill()
            raise RuntimeError("server did not start:\n" + "".join(output))
        server = cls(proc, url[0], output)
        server.wait_ready()
        return server

    def wait_ready(self) -> None:
        import time

        import httpx

        for _ in range(STARTUP_S * 20):
            try:
                if httpx.get(f"{self.url}/openapi.json", timeout=5).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None:
                raise RuntimeError("server exited:\n" + "".join(self.output))
            time.sleep(0.05)
        raise RuntimeError("server never answered")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def terminate(self, wait: bool = True) -> int | None:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(60) if wait else None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)


#: how long a test waits for another process to do something (takeovers, drains)
WAIT_S = 120


def wait_for(check: Any, why: Any = None) -> Any:
    """``check()``'s first truthy value, polled until :data:`WAIT_S` runs out; on giving up,
    ``why()`` (what the test was waiting on) goes into the failure."""
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError("gave up waiting" + (f": {why()}" if why is not None else ""))
