"""Load-generation helpers of ``bench_server.py``: pre-signed requests, wrk's script, CPU.

Not a bench (run.py discovers ``bench_*.py`` only); ``tests/bench`` tests it.

Why pre-signed requests: every device request carries a signature over the method,
path, query, device id, time and a fresh nonce (``otaguard.protocol.signing``), and
the server refuses a nonce it has seen. A load generator that signs while it sends
measures its own signing (~50 us per ECDSA P-256 signature in Python); one that
replays a few requests is refused as a replay. So the requests are signed *before*
the run -- one per (device, nonce), all at one time within the server's 300 s
window -- and written as raw HTTP/1.1 requests back to back; wrk's Lua script
(:data:`WRK_SCRIPT`) sends each exactly once, counts the status codes it gets and
prints one JSON line at the end (no scraping of wrk's text report).
"""

from __future__ import annotations

import json
import os
import re
import secrets
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from otaguard.crypto.signer import Signer
from otaguard.protocol.signing import sign_request

CHECK_IN_PATH = "/api/v1/device/update"
END = b"\r\n\r\n"


@dataclass(frozen=True)
class IdleCheckIn:
    """What an idle device sends: its stored state's hash and the ETag of its last answer."""

    state: str
    etag: str

    @property
    def query(self) -> str:
        return f"state={self.state}"


def presign(
    check_in: IdleCheckIn,
    devices: Iterable[tuple[str, Signer]],
    *,
    now: int,
    nonce: Callable[[], str] = lambda: secrets.token_hex(16),
) -> bytes:
    """One raw ``GET`` check-in per (device id, signer), signed at ``now`` with a fresh nonce.

    The requests are HTTP/1.1 with keep-alive, no body, separated only by their own
    blank line (``\\r\\n\\r\\n``), which is how :data:`WRK_SCRIPT` splits them.
    """
    out = bytearray()
    target = f"{CHECK_IN_PATH}?{check_in.query}"
    for device_id, signer in devices:
        headers = sign_request(
            signer,
            device_id=device_id,
            method="GET",
            path=CHECK_IN_PATH,
            query=check_in.query,
            time=now,
            nonce=nonce(),
        )
        lines = [f"GET {target} HTTP/1.1", "Host: bench", f"If-None-Match: {check_in.etag}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        out += ("\r\n".join(lines)).encode("ascii") + END
    return bytes(out)


def split_requests(data: bytes) -> list[bytes]:
    """The requests of a :func:`presign` file (what the Lua script does, for the tests)."""
    parts = data.split(END)
    if parts[-1]:
        raise ValueError("trailing bytes after the last request")
    return [p + END for p in parts[:-1]]


#: wrk's script. Arguments: the request file, then "once" (each request sent once; past
#: the end it sends ``GET /exhausted``, which the server answers 404, so the run shows
#: answers that are not 304) or "cycle" (start again: for nginx, which checks nothing).
#: Each of wrk's threads takes every n-th request, so no two threads send the same one.
WRK_SCRIPT = r"""
local threads = {}
local counter = 0

function setup(thread)
  thread:set("index", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

function init(args)
  local f = assert(io.open(args[1], "rb"))
  local data = f:read("*a")
  f:close()
  mode = args[2] or "once"
  requests = {}
  local n, k = 0, 0
  for r in data:gmatch("(.-\r\n\r\n)") do
    if k % counter_total == index then
      n = n + 1
      requests[n] = r
    end
    k = k + 1
  end
  total = n
  sent = 0
  statuses = {}
  exhausted = 0
end

function request()
  sent = sent + 1
  if sent > total then
    if mode == "cycle" then
      sent = 1
    else
      exhausted = exhausted + 1
      return "GET /exhausted HTTP/1.1\r\nHost: bench\r\n\r\n"
    end
  end
  return requests[sent]
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  local codes = {}
  local exhausted_all = 0
  for _, t in ipairs(threads) do
    for code, n in pairs(t:get("statuses")) do
      codes[tostring(code)] = (codes[tostring(code)] or 0) + n
    end
    exhausted_all = exhausted_all + t:get("exhausted")
  end
  local parts = {}
  for code, n in pairs(codes) do
    table.insert(parts, string.format('"%s": %d', code, n))
  end
  local e = summary.errors
  io.write(string.format(
    'WRK-JSON {"requests": %d, "duration_us": %d, "bytes": %d, ' ..
    '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, ' ..
    '"latency_us": {"p50": %d, "p90": %d, "p99": %d, "max": %d, "mean": %.1f}, ' ..
    '"statuses": {%s}, "exhausted": %d}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean, table.concat(parts, ", "), exhausted_all))
end
"""


def wrk_script(threads: int) -> str:
    """The script for ``threads`` wrk threads (each thread's Lua state needs the count)."""
    return f"counter_total = {threads}\n" + WRK_SCRIPT


@dataclass(frozen=True)
class WrkResult:
    requests: int
    seconds: float
    errors: dict[str, int]
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    statuses: dict[int, int]
    exhausted: int

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def unexpected(self, status: int) -> int:
        """Answers other than ``status``, and requests that got none (socket errors,
        timeouts); wrk's ``status`` errors are answers >= 400, already counted, and so
        are the requests sent past the end of the file (answered 404)."""
        others = sum(n for code, n in self.statuses.items() if code != status)
        failed = sum(n for kind, n in self.errors.items() if kind != "status")
        return others + failed


def parse_wrk(stdout: str) -> WrkResult:
    """The JSON line the script's ``done()`` prints."""
    match = re.search(r"^WRK-JSON (\{.*\})$", stdout, re.MULTILINE)
    if match is None:
        raise ValueError("wrk printed no result line (did the script run?)")
    raw = json.loads(match.group(1))
    lat = raw["latency_us"]
    return WrkResult(
        requests=int(raw["requests"]),
        seconds=raw["duration_us"] / 1e6,
        errors={k: int(v) for k, v in raw["errors"].items()},
        p50_ms=lat["p50"] / 1000,
        p90_ms=lat["p90"] / 1000,
        p99_ms=lat["p99"] / 1000,
        max_ms=lat["max"] / 1000,
        statuses={int(k): int(v) for k, v in raw["statuses"].items()},
        exhausted=int(raw["exhausted"]),
    )


# -- CPU accounting (Linux /proc) -------------------------------------------------------

TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name (field 2) may hold spaces and parentheses: split after the last ')'
    return text[text.rindex(")") + 2 :].split()


def cpu_seconds(pids: Iterable[int]) -> float:
    """User + system CPU time of live processes (children that exited and were reaped
    included), in seconds; processes already gone count 0."""
    total = 0
    for pid in pids:
        fields = _stat_fields(pid)
        if fields is None:
            continue
        # fields[0] is /proc's field 3 (state): utime, stime, cutime, cstime are 14-17
        total += sum(int(fields[i]) for i in (11, 12, 13, 14))
    return total / TICK


def process_tree(root: int) -> list[int]:
    """``root`` and every live descendant."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _stat_fields(int(entry))
        if fields is not None:
            parents.setdefault(int(fields[1]), []).append(int(entry))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo += parents.get(pid, [])
    return tree


# -- profiles (py-spy's raw/collapsed output) -------------------------------------------

#: Where a sample's time goes: the deepest frame (nearest the top of the stack) whose
#: text holds one of a category's needles decides, so a psycopg call made by the device
#: lookup counts as database and a lock taken by anyio as the thread hand-off.
CATEGORIES: Sequence[tuple[str, Sequence[str]]] = (
    (
        "request signature check (ECDSA P-256 verify, key loading)",
        ("otaguard/crypto/", "otaguard/protocol/"),
    ),
    ("database client (SQLAlchemy, psycopg)", ("sqlalchemy/", "psycopg/")),
    ("thread hand-off (anyio, threading)", ("anyio/", "threading.py", "starlette/concurrency")),
    ("pydantic", ("pydantic",)),
    ("FastAPI (routing, dependencies, parameters)", ("fastapi/",)),
    ("Starlette (requests, responses, middleware)", ("starlette/",)),
    ("uvicorn and httptools (HTTP/1.1)", ("uvicorn/", "httptools")),
    ("otaguard server code (ETag, caches, handler)", ("otaguard/server/",)),
    ("event loop", ("asyncio/", "uvloop", "selectors.py")),
)


def summarise_profile(
    collapsed: str, categories: Sequence[tuple[str, Sequence[str]]] = CATEGORIES
) -> list[tuple[str, float]]:
    """Share of samples per category, largest first; what matches none is "other"."""
    counts: Counter[str] = Counter()
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        label = "other"
        for frame in reversed(stack.split(";")):
            found = next((n for n, needles in categories if any(x in frame for x in needles)), None)
            if found is not None:
                label = found
                break
        counts[label] += int(count)
    total = sum(counts.values())
    if not total:
        return []
    return [(label, n / total) for label, n in counts.most_common()]


def top_self(collapsed: str, n: int = 8) -> list[tuple[str, float]]:
    """The functions that were on top of the stack most often (self time)."""
    counts: Counter[str] = Counter()
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        counts[stack.rsplit(";", 1)[-1]] += int(count)
    total = sum(counts.values())
    return [(frame, k / total) for frame, k in counts.most_common(n)] if total else []
