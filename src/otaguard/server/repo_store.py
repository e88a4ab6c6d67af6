"""The published image repository in the data dir, as check-ins and the file routes see it.

``DATA_DIR/repo`` is an ``otaguard repo`` directory (``repo.layout``): what the
server publishes is exactly what ``otaguard repo publish`` would, and the same
files can be copied to any mirror. The database row ``repository_state`` says
which snapshot is current; check-ins read the targets of that snapshot from an
in-process index, rebuilt when the snapshot version changes.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuf.api.metadata import Metadata, Snapshot, TargetFile, Targets, Timestamp

from otaguard.repo.layout import Layout
from otaguard.server.db import Database
from otaguard.server.models import RepositoryState

#: How long a process trusts its copy of the repository's versions (seconds).
STATE_TTL = 1.0


@dataclass(frozen=True)
class RepoVersions:
    root: int
    snapshot: int
    timestamp: int
    timestamp_expires: int


@dataclass
class TargetIndex:
    """Every target of one snapshot (top-level targets and every delegated role)."""

    snapshot_version: int
    targets: dict[str, TargetFile] = field(default_factory=dict)

    def deltas_to(self, full: TargetFile, base_sha256: str, hardware_id: str) -> TargetFile | None:
        """A delta target that makes ``full`` from the image whose SHA-256 is ``base_sha256``."""
        want = f"sha256:{base_sha256}"
        version = full.custom.get("version")
        counter = full.custom.get("security_counter")
        for info in self.targets.values():
            custom: dict[str, Any] = info.custom
            if (
                custom.get("payload_kind") == "delta"
                and custom.get("delta_base") == want
                and custom.get("version") == version
                and custom.get("security_counter") == counter
                and hardware_id in (custom.get("hardware_ids") or ())
            ):
                return info
        return None


class RepoStore:
    def __init__(self, base: Path, db: Database) -> None:
        self.layout = Layout(base)
        self.db = db
        self._lock = threading.Lock()
        self._versions: tuple[float, RepoVersions | None] = (0.0, None)
        self._index: TargetIndex | None = None

    def cached_versions(self) -> tuple[bool, RepoVersions | None]:
        """(True, versions) when this process's copy is fresh: no database, no thread needed."""
        at, cached = self._versions
        return bool(at) and time.monotonic() - at < STATE_TTL, cached

    def versions(self) -> RepoVersions | None:
        """The published versions (None before the first release), cached for a second."""
        fresh, cached = self.cached_versions()
        if fresh:
            return cached
        now = time.monotonic()
        with self.db.reading() as session:
            row = session.get(RepositoryState, 1)
            value = (
                None
                if row is None
                else RepoVersions(
                    row.root_version,
                    row.snapshot_version,
                    row.timestamp_version,
                    row.timestamp_expires,
                )
            )
        self._versions = (now, value)
        return value

    def forget(self) -> None:
        self._versions = (0.0, None)

    def index(self) -> TargetIndex | None:
        versions = self.versions()
        if versions is None:
            return None
        with self._lock:
            if self._index is None or self._index.snapshot_version != versions.snapshot:
                self._index = self._load(versions.snapshot)
            return self._index

    def _load(self, snapshot_version: int) -> TargetIndex:
        snapshot: Metadata[Snapshot] = self.layout.load(
            self.layout.published_path(Snapshot.type, snapshot_version), Snapshot.type
        )
        index = TargetIndex(snapshot_version)
        for name, meta in snapshot.signed.meta.items():
            role = name.removesuffix(".json")
            md: Metadata[Targets] = self.layout.load(
                self.layout.published_path(role, meta.version), role
            )
            for path, info in md.signed.targets.items():
                index.targets.setdefault(path, info)
        return index

    def timestamp(self) -> Metadata[Timestamp] | None:
        path = self.layout.published_path(Timestamp.type, 0)
        if not path.exists():
            return None
        return self.layout.load(path, Timestamp.type)
