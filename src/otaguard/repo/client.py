"""The TUF client workflow: a :class:`TrustEngine`, a :class:`Fetcher` and a metadata directory.

:class:`TufClient` runs the TUF specification's client workflow (5.3 root,
5.4 timestamp, 5.5 snapshot, 5.6 targets, then the delegation walk and the
target download). It keeps every trusted metadata file byte for byte under its
unversioned name (``root.json``, ``timestamp.json``, ``snapshot.json``,
``targets.json``, ``<quoted role>.json``) in the metadata directory and writes
nothing else there except short-lived temporary files (``.*.tmp``).
Local files are only ever a cache: each is re-verified by the engine before
use, exactly as if it had just been downloaded.

Errors: the trust engine's refusals are python-tuf's
:class:`tuf.api.exceptions.RepositoryError` (the metadata is not acceptable);
the fetcher's are :class:`~otaguard.repo.fetcher.FetchError` (transport, exit
2; or a cap refusing a hostile server, exit 1); the client's own are
:class:`TufClientError` (:class:`NoTrustedRootError`, exit 2;
:class:`RotationLimitError`, exit 1). A refusal leaves the trusted files as they
were: a file is replaced only by bytes the engine has just accepted.
"""

from __future__ import annotations

import datetime
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from urllib import parse

from tuf.api import exceptions
from tuf.api.metadata import Root, Snapshot, TargetFile, Targets, Timestamp

from otaguard._atomic import write_atomic
from otaguard.errors import OtaguardError, RepositoryRejectedError, StorageError
from otaguard.repo.fetcher import Fetcher, FetchError
from otaguard.repo.trust import ROOT_MAX_LENGTH, Limits, TrustEngine

logger = logging.getLogger(__name__)


class TufClientError(OtaguardError):
    """The update could not be completed; the message says which step failed."""


class NoTrustedRootError(TufClientError, StorageError):
    """The metadata directory holds no trusted root (``init`` was not run)."""


class RotationLimitError(TufClientError, RepositoryRejectedError):
    """The repository offers more root versions than one session may walk."""


class ClientRefusal(TufClientError):
    """A refusal whose message says all there is to say (a front end prints it bare)."""


def install_trusted_root(
    metadata_dir: str | os.PathLike[str],
    trusted_root: str | os.PathLike[str],
    *,
    now: datetime.datetime | None = None,
) -> None:
    """Install the file ``trusted_root`` as ``metadata_dir``'s trust anchor (no network).

    Why checked here: a client that starts from garbage would refuse every refresh
    later with a less useful message. The root must be a root signed by its own
    threshold and at most ``ROOT_MAX_LENGTH`` bytes; its expiry is checked on
    refresh (an expired root may still rotate forward). Nothing is written on refusal.
    """
    with open(trusted_root, "rb") as handle:
        data = handle.read(ROOT_MAX_LENGTH + 1)
    if len(data) > ROOT_MAX_LENGTH:
        raise ClientRefusal(f"{trusted_root}: larger than {ROOT_MAX_LENGTH} bytes")
    TrustEngine(data, now or datetime.datetime.now(datetime.UTC))
    os.makedirs(metadata_dir, exist_ok=True)
    write_atomic(os.path.join(metadata_dir, "root.json"), data)


def _quote(role: str) -> str:
    return parse.quote(role, "")


def _with_slash(url: str) -> str:
    return url if url.endswith("/") else url + "/"


class TufClient:
    """One update session against one repository."""

    def __init__(
        self,
        metadata_dir: str | os.PathLike[str],
        metadata_url: str,
        fetcher: Fetcher,
        *,
        now: datetime.datetime | None = None,
        limits: Limits | None = None,
    ) -> None:
        self._dir = Path(metadata_dir)
        self._url = _with_slash(metadata_url)
        self._fetcher = fetcher
        self._limits = limits or Limits()
        root_bytes = self._read_local(Root.type)
        if root_bytes is None:
            raise NoTrustedRootError(f"no trusted root.json in {self._dir} (run init first)")
        self.engine = TrustEngine(root_bytes, now or datetime.datetime.now(datetime.UTC))
        self._refreshed = False

    # -- local storage -------------------------------------------------------------------

    def _path(self, role: str) -> Path:
        return self._dir / f"{_quote(role)}.json"

    def _read_local(self, role: str) -> bytes | None:
        try:
            with open(self._path(role), "rb") as handle:
                return handle.read(self._cap_for(role) + 1)
        except OSError:
            return None

    def _cap_for(self, role: str) -> int:
        caps = {
            Root.type: self._limits.root_max_length,
            Timestamp.type: self._limits.timestamp_max_length,
            Snapshot.type: self._limits.snapshot_max_length,
        }
        return caps.get(role, self._limits.targets_max_length)

    def _persist(self, role: str, data: bytes) -> None:
        write_atomic(self._path(role), data)

    def _download(self, role: str, max_length: int, version: int | None = None) -> bytes:
        name = _quote(role) if version is None else f"{version}.{_quote(role)}"
        return self._fetcher.fetch(f"{self._url}{name}.json", max_length)

    # -- the workflow ----------------------------------------------------------------------

    def refresh(self) -> None:
        """Update root, timestamp, snapshot and top-level targets (once per session)."""
        if self._refreshed:
            return
        self._update_root()
        self._update_timestamp()
        self._update_snapshot()
        self._load_targets(Targets.type, Root.type)
        self._refreshed = True

    def _update_root(self) -> None:
        first = self.engine.root.version + 1
        for version in range(first, first + self._limits.max_root_rotations):
            try:
                data = self._download(Root.type, self._limits.root_max_length, version)
            except FetchError as exc:
                if exc.status_code in {403, 404}:
                    return  # the current root is the newest
                raise
            self.engine.update_root(data)
            self._persist(Root.type, data)
            logger.info("trusted root is now version %d", version)
        raise RotationLimitError(
            f"more than {self._limits.max_root_rotations} root rotations in one update"
        )

    def _update_timestamp(self) -> None:
        local = self._read_local(Timestamp.type)
        if local is not None:
            try:
                self.engine.update_timestamp(local)
            except exceptions.RepositoryError as exc:
                logger.debug("local timestamp not usable as final: %s", exc)
        data = self._download(Timestamp.type, self._limits.timestamp_max_length)
        try:
            self.engine.update_timestamp(data)
        except exceptions.EqualVersionNumberError:
            return  # unchanged: keep the stored copy
        self._persist(Timestamp.type, data)

    def _update_snapshot(self) -> None:
        local = self._read_local(Snapshot.type)
        if local is not None:
            try:
                self.engine.update_snapshot(local, trusted=True)
                return
            except exceptions.RepositoryError as exc:
                logger.debug("local snapshot not usable as final: %s", exc)
        timestamp = self.engine.timestamp
        assert timestamp is not None
        meta = timestamp.snapshot_meta
        version = meta.version if self.engine.root.consistent_snapshot else None
        length = meta.length or self._limits.snapshot_max_length
        data = self._download(Snapshot.type, length, version)
        self.engine.update_snapshot(data)
        self._persist(Snapshot.type, data)

    def _load_targets(self, role: str, delegator: str) -> Targets:
        cached = self.engine.verified(role, delegator)
        if cached is not None:
            return cached
        local = self._read_local(role)
        if local is not None:
            try:
                return self.engine.update_targets(local, role, delegator)
            except exceptions.RepositoryError as exc:
                logger.debug("local %s not usable: %s", role, exc)
        version, length = self.engine.snapshot_meta_for(role)
        data = self._download(
            role,
            length or self._limits.targets_max_length,
            version if self.engine.root.consistent_snapshot else None,
        )
        targets = self.engine.update_targets(data, role, delegator)
        self._persist(role, data)
        return targets

    def target_info(self, target_path: str) -> TargetFile | None:
        """The verified :class:`TargetFile` for ``target_path``, or None if no role lists it."""
        self.refresh()
        return self.engine.delegation_walk(
            target_path, self._load_targets, self._limits.max_delegations
        )

    # -- targets --------------------------------------------------------------------------

    @staticmethod
    def target_file(target_dir: str | os.PathLike[str], info: TargetFile) -> Path:
        """Where ``info`` is stored in ``target_dir``: one flat, quoted name per target path."""
        return Path(target_dir) / _quote(info.path)

    @staticmethod
    def is_cached(path: Path, info: TargetFile) -> bool:
        try:
            with open(path, "rb") as handle:
                info.verify_length_and_hashes(handle)
        except (OSError, exceptions.LengthOrHashMismatchError):
            return False
        return True

    def download_targets(
        self,
        names: Sequence[str],
        target_base_url: str,
        target_dir: str | os.PathLike[str],
    ) -> Iterator[tuple[str, Path]]:
        """Download and verify each of ``names`` in order: (name, stored path) as each lands.

        Stops at the first failure; a name the repository does not list is refused.
        """
        for name in names:
            info = self.target_info(name)
            if info is None:
                raise ClientRefusal(f"target {name!r} is not in the repository")
            yield name, self.download_target(info, target_base_url, target_dir)

    def download_target(
        self, info: TargetFile, target_base_url: str, target_dir: str | os.PathLike[str]
    ) -> Path:
        """Download ``info`` (unless already present and intact), verify, store atomically."""
        path = self.target_file(target_dir, info)
        if self.is_cached(path, info):
            return path
        remote = info.path
        if self.engine.root.consistent_snapshot and info.hashes:
            directory, sep, name = remote.rpartition("/")
            remote = f"{directory}{sep}{next(iter(info.hashes.values()))}.{name}"
        data = self._fetcher.fetch(f"{_with_slash(target_base_url)}{remote}", info.length)
        info.verify_length_and_hashes(data)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, data)
        return path
