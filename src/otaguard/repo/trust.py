"""The TUF trust engine: bytes in, verified metadata out, time passed in explicitly.

:class:`TrustEngine` holds the metadata a client currently trusts and decides,
for every new piece of metadata, whether it may replace what is trusted. It
does no I/O at all: no network, no files, no clock. The caller (the
``tuf-client`` command, later the device agent) fetches bytes however it
likes and hands them over; the engine either accepts them or raises
:class:`tuf.api.exceptions.RepositoryError` (or a subclass) and leaves the
trusted state unchanged.

The per-role checks of the TUF client workflow (signature thresholds, version
rollback, expiry, snapshot/timestamp hash and length, fast-forward recovery)
are python-tuf's ``TrustedMetadataSet`` (a private class, reached only through
:mod:`otaguard.repo.tuf_adapter`); this module pins the reference time and
adds the delegation walk (:meth:`TrustEngine.delegation_walk`), which is where
a cached delegated role is re-verified against the delegator of the *current*
path, never trusted because another path verified it earlier.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from dataclasses import dataclass

from tuf.api import exceptions
from tuf.api.metadata import Root, Snapshot, TargetFile, Targets, Timestamp

from otaguard.repo.tuf_adapter import trusted_set

#: Default caps. Every download has a length cap; walks and rotations are bounded.
MAX_ROOT_ROTATIONS = 256
MAX_DELEGATIONS = 32
ROOT_MAX_LENGTH = 512_000
TIMESTAMP_MAX_LENGTH = 16_384
SNAPSHOT_MAX_LENGTH = 2_000_000
TARGETS_MAX_LENGTH = 5_000_000


@dataclass(frozen=True)
class Limits:
    """Caps on what a client will download or walk."""

    max_root_rotations: int = MAX_ROOT_ROTATIONS
    max_delegations: int = MAX_DELEGATIONS
    root_max_length: int = ROOT_MAX_LENGTH
    timestamp_max_length: int = TIMESTAMP_MAX_LENGTH
    snapshot_max_length: int = SNAPSHOT_MAX_LENGTH
    targets_max_length: int = TARGETS_MAX_LENGTH


class TrustEngine:
    """The trusted metadata of one client session, updated role by role.

    ``now`` is the reference time for every expiry check in this session; it
    never changes while the engine lives (a session that started before an
    expiry finishes consistently).
    """

    def __init__(self, root_bytes: bytes, now: datetime.datetime) -> None:
        if now.tzinfo is None:
            raise ValueError("now must be timezone-aware")
        self._set = trusted_set(root_bytes, now.astimezone(datetime.UTC))

    @property
    def root(self) -> Root:
        return self._set.root

    @property
    def timestamp(self) -> Timestamp | None:
        return self._set.timestamp if Timestamp.type in self._set else None

    @property
    def snapshot(self) -> Snapshot | None:
        return self._set.snapshot if Snapshot.type in self._set else None

    def update_root(self, data: bytes) -> Root:
        """Accept the next root version (N+1), signed by old and new thresholds."""
        return self._set.update_root(data)

    def update_timestamp(self, data: bytes) -> Timestamp:
        """Accept a timestamp; raises ``EqualVersionNumberError`` if unchanged.

        An expired timestamp is kept (for rollback protection of the next one)
        but raises ``ExpiredMetadataError``: the session cannot go further.
        """
        return self._set.update_timestamp(data)

    def update_snapshot(self, data: bytes, *, trusted: bool = False) -> Snapshot:
        """Accept a snapshot. ``trusted`` skips the hash check for the local copy."""
        return self._set.update_snapshot(data, trusted=trusted)

    def update_targets(self, data: bytes, role: str, delegator: str) -> Targets:
        """Verify ``role`` against ``delegator``'s keys and the snapshot's version."""
        return self._set.update_delegated_targets(data, role, delegator)

    def verified(self, role: str, delegator: str) -> Targets | None:
        """``role`` if it was verified against ``delegator`` in this session."""
        if self._set.contains(role, delegator):
            signed = self._set[role]
            assert isinstance(signed, Targets)
            return signed
        return None

    def snapshot_meta_for(self, role: str) -> tuple[int, int | None]:
        """(version, length) the trusted snapshot lists for ``role``; raise if absent."""
        snapshot = self.snapshot
        if snapshot is None:
            raise RuntimeError("snapshot not loaded")
        meta = snapshot.meta.get(f"{role}.json")
        if meta is None:
            raise exceptions.RepositoryError(f"role {role!r} is not listed in snapshot")
        return meta.version, meta.length

    def delegation_walk(
        self,
        target_path: str,
        load: Callable[[str, str], Targets],
        max_delegations: int = MAX_DELEGATIONS,
    ) -> TargetFile | None:
        """Find ``target_path`` by a pre-order depth-first walk of the delegations.

        ``load(role, delegator)`` must return ``role`` verified against
        ``delegator`` (via :meth:`update_targets`); it is called for every
        (role, delegator) edge visited, so a role reached through a second
        delegator is verified again against that delegator's keys. Raises
        :class:`tuf.api.exceptions.RepositoryError` if more than
        ``max_delegations`` roles would be visited.
        """
        to_visit: list[tuple[str, str]] = [(Targets.type, Root.type)]
        visited: set[str] = set()
        while to_visit:
            role, delegator = to_visit.pop()
            if role in visited:
                continue  # a cycle, or a role already searched on another path
            if len(visited) >= max_delegations:
                raise exceptions.RepositoryError(
                    f"more than {max_delegations} delegated roles to walk for {target_path!r}"
                )
            targets = load(role, delegator)
            found = targets.targets.get(target_path)
            if found is not None:
                return found
            visited.add(role)
            children: list[tuple[str, str]] = []
            if targets.delegations is not None:
                for child, terminating in targets.delegations.get_roles_for_target(target_path):
                    children.append((child, role))
                    if terminating:
                        to_visit = []  # do not backtrack past a terminating delegation
                        break
            to_visit.extend(reversed(children))
        return None
