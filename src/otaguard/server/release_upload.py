"""What ``fleet release publish`` uploads from an ``otaguard repo`` directory; what it keeps.

From the release managers' working copy (``otaguard repo`` made it, ``repo sign``
signed it; they cannot publish themselves, the online keys are the server's):

* every root: ``metadata/N.root.json`` and a staged ``root`` (a rotation);
* every targets role: the staged version if there is one, else the newest published;
* every image a role names, from ``targets/<dir>/<sha256>.<name>``.

After the server accepted them, the uploaded roles and roots are moved from
``staged/`` into ``metadata/`` (they are what is published now) with the
server's snapshot and timestamp (checked against the root's keys first), so the
next ``repo add-target`` edits the next version, as after a local ``repo publish``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tuf.api.exceptions import UnsignedMetadataError
from tuf.api.metadata import Metadata, Root, Snapshot, TargetFile, Targets, Timestamp

from otaguard._atomic import write_atomic
from otaguard.errors import RejectedError, UsageError
from otaguard.repo.layout import ONLINE_ROLES, Layout, to_bytes

if TYPE_CHECKING:
    from otaguard.server.client import FleetClient

CHUNK = 1 << 20


@dataclass
class LocalRelease:
    roots: dict[int, bytes] = field(default_factory=dict)
    roles: dict[str, bytes] = field(default_factory=dict)
    #: sha256 -> (file, length) of every image the roles name
    images: dict[str, tuple[Path, int]] = field(default_factory=dict)
    staged: list[str] = field(default_factory=list)


def _newest_published(layout: Layout, role: str) -> Path | None:
    found = sorted(
        (int(p.name.split(".", 1)[0]), p)
        for p in layout.metadata.glob(f"*.{role}.json")
        if p.name.split(".", 1)[0].isdigit()
    )
    return found[-1][1] if found else None


def _role_names(layout: Layout) -> set[str]:
    names = set(layout.staged_roles())
    for path in layout.metadata.glob("*.json"):
        head, _, rest = path.name.partition(".")
        if head.isdigit():
            names.add(rest.removesuffix(".json"))
    return names - {Root.type, *ONLINE_ROLES}


def collect(repo_dir: Path) -> LocalRelease:
    layout = Layout(repo_dir)
    layout.require()
    release = LocalRelease()
    for version in layout.root_versions():
        release.roots[version] = layout.read_bytes(layout.published_path(Root.type, version))
    staged_root = layout.staged_path(Root.type)
    if staged_root.exists():
        root_md = layout.load(staged_root, Root.type)
        release.roots[root_md.signed.version] = to_bytes(root_md)
        release.staged.append(Root.type)
    for role in sorted(_role_names(layout)):
        staged = layout.staged_path(role)
        source = staged if staged.exists() else _newest_published(layout, role)
        if source is None:
            continue
        if source == staged:
            release.staged.append(role)
        md: Metadata[Any] = layout.load(source, role)
        release.roles[role] = to_bytes(md)
        for info in md.signed.targets.values():
            _add_image(release, layout, info)
    return release


def _add_image(release: LocalRelease, layout: Layout, info: TargetFile) -> None:
    sha256 = info.hashes.get("sha256")
    if sha256 is None or sha256 in release.images:
        return
    directory, sep, base = info.path.rpartition("/")
    path = layout.targets / f"{directory}{sep}{sha256}.{base}"
    if not path.is_file():
        raise UsageError(f"{path}: the image of {info.path} is not in the repository directory")
    release.images[sha256] = (path, info.length)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def mark_published(repo_dir: Path, release: LocalRelease, fetch: Callable[[str], bytes]) -> None:
    """Record locally what the server published: our own roots and roles, its online roles."""
    layout = Layout(repo_dir)
    for version, data in sorted(release.roots.items()):
        path = layout.published_path(Root.type, version)
        if not path.exists():
            write_atomic(path, data)
    for role, data in release.roles.items():
        md: Metadata[Targets] = Metadata.from_bytes(data)
        path = layout.published_path(role, md.signed.version)
        if not path.exists():
            write_atomic(path, data)
    root: Root = Metadata[Root].from_bytes(release.roots[max(release.roots)]).signed
    timestamp_bytes = fetch("timestamp.json")
    timestamp: Metadata[Timestamp] = Metadata.from_bytes(timestamp_bytes)
    version = timestamp.signed.snapshot_meta.version
    snapshot_bytes = fetch(f"{version}.snapshot.json")
    snapshot: Metadata[Snapshot] = Metadata.from_bytes(snapshot_bytes)
    try:
        root.verify_delegate(Timestamp.type, timestamp.signed_bytes, timestamp.signatures)
        root.verify_delegate(Snapshot.type, snapshot.signed_bytes, snapshot.signatures)
    except UnsignedMetadataError as exc:
        raise RejectedError(f"the server's snapshot or timestamp does not verify: {exc}") from exc
    write_atomic(layout.published_path(Snapshot.type, version), snapshot_bytes)
    write_atomic(layout.published_path(Timestamp.type, 0), timestamp_bytes)
    for role in release.staged:
        layout.staged_path(role).unlink(missing_ok=True)


def publish_release(client: FleetClient, repo_dir: Path) -> dict[str, Any]:
    """Upload what the server lacks of ``repo_dir``'s release, then the release itself.

    Images the server already holds at their length are not sent again; the server
    checks the signed roles and publishes; the local repository then records what the
    server published (``mark_published``). The server's answer, with ``images_uploaded``.
    """
    local = collect(repo_dir)
    uploaded = 0
    for sha256, (path, length) in sorted(local.images.items()):
        if client.has_artifact(sha256) != length:
            client.upload_artifact(sha256, path)
            uploaded += 1
    result = client.upload_release([local.roots[v] for v in sorted(local.roots)], local.roles)
    mark_published(repo_dir, local, client.repo_file)
    result["images_uploaded"] = uploaded
    return result
