"""A fault-injecting TCP proxy on loopback: connections cut, stalled and corrupted, seeded.

Test and demo tooling, not part of the update path: it stands between a
device agent and its server (or mirror) and plays a bad network, so that the
claim "the agent ends with the identical verified image or a refusal, never
an install of corrupt data" is checked against real sockets::

    python -m otaguard.tools.faultproxy --upstream 127.0.0.1:8080 --seed 7 \\
        --cut 0.5 --stall 0.1 --flip 0.05 --port-file proxy.port

Every accepted connection (numbered in accept order) draws its faults from
``random.Random(f"{seed}:{number}")``, so a seed replays the same faults for
the same sequence of connections:

* **cut** (probability ``--cut``): after a random number of bytes of the
  server's answer (below ``--max-offset``), both sides are reset;
* **stall** (``--stall``): at a random offset the answer stops for
  ``--stall-seconds`` (a client with a shorter read timeout gives up);
* **flip** (``--flip``): one byte of the answer at a random offset is XORed
  with a random non-zero mask.

Faults apply to the server-to-client direction (what the agent downloads);
``--both`` applies them to requests too. ``stats`` counts what was injected.
"""

from __future__ import annotations

import argparse
import contextlib
import random
import signal
import socket
import struct
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

PIECE = 64 * 1024


@dataclass(frozen=True)
class Faults:
    """Probabilities (per connection) and the range of offsets the faults fall in."""

    cut: float = 0.0
    stall: float = 0.0
    flip: float = 0.0
    max_offset: int = 256 * 1024
    stall_seconds: float = 5.0
    both: bool = False

    def __post_init__(self) -> None:
        for name in ("cut", "stall", "flip"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} is a probability between 0 and 1")
        if self.max_offset < 1 or self.stall_seconds < 0:
            raise ValueError("max_offset >= 1 and stall_seconds >= 0")


@dataclass
class _Plan:
    """One direction of one connection: where its faults fall (stream offsets), if anywhere."""

    cut_at: int | None = None
    stall_at: int | None = None
    flip_at: int | None = None
    flip_mask: int = 0

    @classmethod
    def draw(cls, rng: random.Random, faults: Faults) -> _Plan:
        plan = cls()
        if rng.random() < faults.cut:
            plan.cut_at = rng.randrange(faults.max_offset)
        if rng.random() < faults.stall:
            plan.stall_at = rng.randrange(faults.max_offset)
        if rng.random() < faults.flip:
            plan.flip_at = rng.randrange(faults.max_offset)
            plan.flip_mask = rng.randrange(1, 256)
        return plan


@dataclass
class Stats:
    connections: int = 0
    cuts: int = 0
    stalls: int = 0
    flips: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, name: str) -> None:
        with self.lock:
            setattr(self, name, getattr(self, name) + 1)

    def as_dict(self) -> dict[str, int]:
        return {k: getattr(self, k) for k in ("connections", "cuts", "stalls", "flips")}


class FaultProxy:
    """A threaded TCP proxy to ``upstream`` with seeded faults (see the module doc)."""

    def __init__(
        self,
        upstream: tuple[str, int],
        faults: Faults,
        *,
        seed: int = 0,
        listen: tuple[str, int] = ("127.0.0.1", 0),
    ) -> None:
        self.upstream = upstream
        self.faults = faults
        self.seed = seed
        self.stats = Stats()
        self._stop = threading.Event()
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._server = socket.create_server(listen, reuse_port=False)
        self._server.settimeout(0.1)  # accept() wakes up to notice stop()
        self.address: tuple[str, int] = self._server.getsockname()[:2]
        self._thread = threading.Thread(target=self._accept, daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.address[0]}:{self.address[1]}"

    def start(self) -> FaultProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            self._server.close()
        with self._lock:
            for sock in list(self._sockets):
                _reset(sock)
        self._thread.join(timeout=5)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _accept(self) -> None:
        number = 0
        while not self._stop.is_set():
            try:
                client, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            rng = random.Random(f"{self.seed}:{number}")  # noqa: S311 - replayable faults
            number += 1
            self.stats.add("connections")
            down = _Plan.draw(rng, self.faults)
            up = _Plan.draw(rng, self.faults) if self.faults.both else _Plan()
            threading.Thread(target=self._serve, args=(client, up, down), daemon=True).start()

    def _serve(self, client: socket.socket, up: _Plan, down: _Plan) -> None:
        try:
            server = socket.create_connection(self.upstream, timeout=10)
        except OSError:
            _reset(client)
            return
        server.settimeout(None)
        with self._lock:
            self._sockets.update((client, server))
        pair = (client, server)
        threading.Thread(target=self._pump, args=(client, server, up, pair), daemon=True).start()
        self._pump(server, client, down, pair)

    def _pump(
        self, src: socket.socket, dst: socket.socket, plan: _Plan, pair: tuple[socket.socket, ...]
    ) -> None:
        pos = 0
        try:
            while not self._stop.is_set():
                data = src.recv(PIECE)
                if not data:
                    with contextlib.suppress(OSError):
                        dst.shutdown(socket.SHUT_WR)
                    return
                end = pos + len(data)
                if plan.flip_at is not None and pos <= plan.flip_at < end:
                    mutable = bytearray(data)
                    mutable[plan.flip_at - pos] ^= plan.flip_mask
                    data = bytes(mutable)
                    self.stats.add("flips")
                if plan.stall_at is not None and pos <= plan.stall_at < end:
                    dst.sendall(data[: plan.stall_at - pos])
                    data = data[plan.stall_at - pos :]
                    pos = plan.stall_at
                    plan.stall_at = None
                    self.stats.add("stalls")
                    if self._stop.wait(self.faults.stall_seconds):
                        return
                if plan.cut_at is not None and pos <= plan.cut_at < pos + len(data):
                    dst.sendall(data[: plan.cut_at - pos])
                    self.stats.add("cuts")
                    for sock in pair:
                        _reset(sock)
                    return
                dst.sendall(data)
                pos += len(data)
        except OSError:
            for sock in pair:
                _reset(sock)
        finally:
            with self._lock:
                self._sockets.difference_update(s for s in pair if s.fileno() == -1)


def _reset(sock: socket.socket) -> None:
    """Close with a TCP reset (SO_LINGER 0): the peer sees the connection cut, not ended.

    ``shutdown(SHUT_RD)`` first wakes the other pump thread blocked in ``recv`` on
    this socket: the kernel releases (and resets) it only when no call holds it.
    """
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RD)
    with contextlib.suppress(OSError):
        sock.close()


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host, int(port)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m otaguard.tools.faultproxy", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--upstream", type=_address, required=True, help="HOST:PORT to forward to")
    parser.add_argument(
        "--listen",
        type=_address,
        default=("127.0.0.1", 0),
        help="HOST:PORT (default: a free loopback port)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cut", type=float, default=0.0, help="probability a connection is cut")
    parser.add_argument("--stall", type=float, default=0.0, help="probability a connection stalls")
    parser.add_argument("--flip", type=float, default=0.0, help="probability a byte is flipped")
    parser.add_argument("--max-offset", type=int, default=256 * 1024)
    parser.add_argument("--stall-seconds", type=float, default=5.0)
    parser.add_argument("--both", action="store_true", help="fault requests too")
    parser.add_argument("--port-file", type=Path, help="write the listening port here")
    args = parser.parse_args(argv)
    try:
        faults = Faults(
            args.cut, args.stall, args.flip, args.max_offset, args.stall_seconds, args.both
        )
    except ValueError as exc:
        parser.error(str(exc))
    proxy = FaultProxy(args.upstream, faults, seed=args.seed, listen=args.listen)
    stopped = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopped.set())
    proxy.start()
    print(
        f"faultproxy: {proxy.url} -> {args.upstream[0]}:{args.upstream[1]} (seed {args.seed})",
        flush=True,
    )
    if args.port_file is not None:
        tmp = args.port_file.with_name(args.port_file.name + ".tmp")
        tmp.write_text(f"{proxy.address[1]}\n")
        tmp.replace(args.port_file)
    stopped.wait()
    proxy.stop()
    print(f"faultproxy: {proxy.stats.as_dict()}", flush=True)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
