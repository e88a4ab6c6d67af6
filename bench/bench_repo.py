"""Image repository: what a fleet's poll costs at 100k targets in 1024 hashed bins, and signing.

Why (issue 5, "Interop and benchmarks"): every vehicle polls the repository, so bytes and
requests per poll, multiplied by the fleet, are the bill; and a release of 100k targets must
sign and verify in reasonable time. python-tuf's published figures for the same layout are
the reference: an idle poll is 2 requests / ~470 B; a change in one unrelated bin costs a
~30 KB snapshot re-download at 1024 bins.

The repository is built with ``otaguard.repo.repository`` (the code behind ``otaguard repo``,
without the image verification of add-target: the targets are synthetic TargetFiles with the
same custom fields as real ones). The client is otaguard's ``TufClient`` with a counting
fetcher that reads the published files (the same bytes a mirror would serve; HTTP adds no
requests). Ed25519 keys throughout.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from _common import quick

TITLE = "Repository: polling and signing at 100k targets"


def _setup() -> None:
    root = Path(__file__).resolve().parent.parent
    sys.path.insert(0, str(root / "src"))


class CountingFetcher:
    """Serves ``base/<path>`` for ``http://mirror/<path>``; counts requests and bytes."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.requests = 0
        self.bytes = 0

    def fetch(self, url: str, max_length: int) -> bytes:
        from otaguard.repo.fetcher import FetchError

        self.requests += 1
        path = self.base / url.removeprefix("http://mirror/")
        if not path.is_file():
            raise FetchError(url, "HTTP 404", 404)
        data = path.read_bytes()
        if len(data) > max_length:
            raise FetchError(url, "over the cap")
        self.bytes += len(data)
        return data


def _target(i: int) -> object:
    from tuf.api.metadata import TargetFile

    custom = {
        "format": "otaguard",
        "version": f"1.{i % 50}.0",
        "security_counter": i % 50,
        "hardware_ids": [f"acme-ecu-{i % 97}"],
        "payload_kind": "full",
        "delta_base": None,
    }
    sha = f"{i:064x}"
    return TargetFile(
        4_000_000 + i, {"sha256": sha}, f"fleet/ecu-{i % 97}/{i}.img", {"custom": custom}
    )


def _fmt_bytes(n: float) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e6 else f"{n / 1e3:.1f} KB" if n >= 1e4 else f"{n:.0f} B"


def _flat(targets: list[object]) -> list[str]:
    """Sign and verify one targets role holding every target (what bins avoid)."""
    from securesystemslib.signer import CryptoSigner
    from tuf.api.metadata import Metadata, Targets
    from tuf.api.serialization.json import JSONSerializer

    signer = CryptoSigner.generate_ed25519()
    md = Metadata(Targets(targets={t.path: t for t in targets}))  # type: ignore[attr-defined]
    t0 = time.perf_counter()
    md.sign(signer)
    data = md.to_bytes(JSONSerializer(compact=True))
    sign_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    parsed = Metadata[Targets].from_bytes(data)
    key = signer.public_key
    key.verify_signature(parsed.signatures[key.keyid], parsed.signed_bytes)
    verify_s = time.perf_counter() - t0
    return [
        f"| one targets role, {len(targets):,} targets | {_fmt_bytes(len(data))} "
        f"| {sign_s:.2f} s | {verify_s:.2f} s |"
    ]


def run(workdir: Path) -> str:
    _setup()
    from tuf.api.metadata import SuccinctRoles

    from otaguard.crypto.keys import KeyType, generate_private_key
    from otaguard.crypto.signer import KeySigner
    from otaguard.repo.client import TufClient
    from otaguard.repo.repository import ImageRepository
    from otaguard.repo.signing import RepoSigner

    n_targets = 5_000 if quick() else 100_000
    bins = 1024
    signers = {
        r: RepoSigner(KeySigner(generate_private_key(KeyType.ED25519)))
        for r in ("root", "targets", "snapshot", "timestamp", "bins")
    }
    base = workdir / "repo"
    repo = ImageRepository.create(
        base,
        root_keys=[signers["root"].public_key],
        root_threshold=1,
        targets_keys=[signers["targets"].public_key],
        targets_threshold=1,
        snapshot_key=signers["snapshot"].public_key,
        timestamp_key=signers["timestamp"].public_key,
        online_key_specs={},
    )
    repo.sign("root", [signers["root"]])
    repo.delegate_bins(bins, [signers["bins"].public_key])
    targets = [_target(i) for i in range(n_targets)]
    t0 = time.perf_counter()
    repo.add_targets(targets)  # type: ignore[arg-type]
    route_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    repo.sign("targets", [signers["targets"]])
    for role in repo.layout.staged_roles():
        if role.startswith("bins-"):
            repo.sign(role, [signers["bins"]])
    sign_s = time.perf_counter() - t0
    online = ([signers["snapshot"]], [signers["timestamp"]])
    t0 = time.perf_counter()
    repo.publish(*online)
    publish_s = time.perf_counter() - t0
    meta = base / "metadata"
    bin_sizes = [p.stat().st_size for p in meta.glob("*.bins-*.json")]
    snapshot_size = next(meta.glob("*.snapshot.json")).stat().st_size

    # verify every bin as a client would (parse + signature), one cold client walk
    from tuf.api.metadata import Metadata, Targets

    t0 = time.perf_counter()
    top = Metadata[Targets].from_bytes(next(meta.glob("1.targets.json")).read_bytes()).signed
    for path in meta.glob("*.bins-*.json"):
        md = Metadata[Targets].from_bytes(path.read_bytes())
        top.verify_delegate(path.name.split(".")[1], md.signed_bytes, md.signatures)
    verify_s = time.perf_counter() - t0

    client_dir = workdir / "client"
    client_dir.mkdir()
    (client_dir / "root.json").write_bytes((meta / "1.root.json").read_bytes())
    mine = targets[0].path  # type: ignore[attr-defined]
    succinct = SuccinctRoles([], 1, 10, "bins")

    def poll() -> tuple[int, int]:
        fetcher = CountingFetcher(base)
        client = TufClient(client_dir, "http://mirror/metadata/", fetcher)
        client.refresh()
        assert client.target_info(mine) is not None
        return fetcher.requests, fetcher.bytes

    first = poll()
    idle = poll()
    other = next(
        t
        for i in range(n_targets, n_targets + 10_000)
        if succinct.get_role_for_target((t := _target(i)).path)  # type: ignore[attr-defined]
        != succinct.get_role_for_target(mine)
    )
    repo = ImageRepository(base)
    placed = repo.add_targets([other])  # type: ignore[list-item]
    for role in placed:
        repo.sign(role, [signers["bins"]])
    repo.publish(*online)
    changed = poll()

    lines = [
        f"{n_targets:,} targets in {bins} succinct hashed bins "
        f"(~{n_targets // bins} per bin), Ed25519.",
        "",
        "| client poll (TufClient, warm cache) | requests | bytes downloaded "
        "| python-tuf reference |",
        "|---|---|---|---|",
        f"| first contact (root, timestamp, snapshot, targets, 1 bin) | {first[0]} "
        f"| {_fmt_bytes(first[1])} | |",
        f"| nothing changed | {idle[0]} | {_fmt_bytes(idle[1])} | 2 requests / ~470 B |",
        f"| an unrelated bin changed | {changed[0]} | {_fmt_bytes(changed[1])} "
        "| ~30 KB snapshot re-download |",
        "",
        "Requests include the `N+1.root.json` probe that ends in a 404 (counted, 0 bytes).",
        f"Snapshot: {_fmt_bytes(snapshot_size)} ({bins + 1} roles listed); "
        f"a bin: {_fmt_bytes(sum(bin_sizes) / len(bin_sizes))} on average.",
        "",
        "| metadata | size | sign | verify |",
        "|---|---|---|---|",
        f"| {bins} bins + targets, {n_targets:,} targets (sign: stage, sign, write each; "
        f"verify: parse + check each bin) | {_fmt_bytes(sum(bin_sizes))} | {sign_s:.2f} s "
        f"| {verify_s:.2f} s |",
    ]
    lines += _flat(targets)
    lines += [
        "",
        f"Routing {n_targets:,} targets to their bins and staging them: {route_s:.2f} s; "
        f"publish (check thresholds of {bins + 1} staged roles, write all, snapshot, "
        f"timestamp): {publish_s:.2f} s.",
        "One targets role holding everything is over the client's 5 MB cap for targets "
        "metadata at 100k targets (the repository refuses to publish it): hence the bins.",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        print(run(Path(tmp)))
