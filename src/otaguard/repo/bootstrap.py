"""Creating a repository and running its online roles: ``repo init`` and ``publish``, as a library.

The CLI (``otaguard repo``) and the fleet server both call this module; neither
re-implements it, so the rules below hold whoever runs the repository. Every
function raises :class:`~otaguard.errors.OtaguardError` subclasses and never prints.

Who holds which key:

* **root** and **targets** (and delegated roles): offline, held by release
  managers (key files on air-gapped machines, or HSMs). A server passes only
  their *public* keys to :func:`init_repository`; version 1 of root and
  targets then stays staged until the release managers have signed it
  (``repo sign``, or :func:`stage_signed` with metadata they signed elsewhere).
* **snapshot** and **timestamp**: online, on the machine that publishes. They
  sign nothing a release manager has not: snapshot and timestamp only list the
  versions of roles that already meet their own thresholds.

The API::

    generate_key(path) -> Path                 a new Ed25519 private key file (0600), never over one
    generate_online_keys(directory) -> {role: Path}    snapshot.pem and timestamp.pem in directory
    online_key_location(base, spec) -> str     THE rule for a configured online key (below)
    RoleKeys.load(specs, threshold, passphrase) -> RoleKeys   key files / pkcs11: URIs / public keys
    init_repository(directory, root=..., targets=..., online=..., expiry_days=...) -> InitResult
    publish(directory, online=None, passphrase=None) -> PublishResult
    stage_signed(directory, role, data) -> SignatureStatus
    status_report(repository) -> dict          published versions, staged roles (JSON-ready)

A fleet server, on its first start and then on every accepted release::

    keys = generate_online_keys("/var/lib/otaguard/online-keys")
    init_repository(
        "/srv/repo",
        root=RoleKeys.load(["root-a.pub", "root-b.pub"], threshold=2),
        targets=RoleKeys.load(["rm1.pub", "rm2.pub", "rm3.pub"], threshold=2),
        online={role: str(path) for role, path in keys.items()},
    )
    stage_signed("/srv/repo", "targets", uploaded)   # signed offline by the release managers
    publish("/srv/repo")      # every staged role meets its threshold -> new snapshot, timestamp
    publish("/srv/repo")      # from a timer, at least daily: a fresh timestamp

**Online key locations** (``config.json`` ``online_keys``): a ``pkcs11:`` URI
or an absolute path is used as it is; a relative path is relative to the
repository directory (keys that ``init`` generates, ``online-keys/<role>.pem``,
so the directory can move). A key passed to :func:`publish` directly is used
as given.

:func:`init_repository` is all or nothing: the repository is built in a
temporary directory beside ``directory`` and renamed into place at the end, so
a failure (a key that does not load, an HSM that refuses, a full disk) leaves
no half-made repository and no generated key behind. :func:`publish` and
:func:`stage_signed` hold the repository's lock (two publishers never interleave).
"""

from __future__ import annotations

import contextlib
import datetime
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from otaguard._atomic import write_atomic
from otaguard.crypto.keys import KeyType, generate_private_key, private_key_pem
from otaguard.crypto.pkcs11 import is_pkcs11_uri
from otaguard.errors import RejectedError, StorageError, UsageError
from otaguard.repo.config import check_expiry_days
from otaguard.repo.layout import ONLINE_ROLES, TOP_ROLES, Layout, parse_metadata
from otaguard.repo.repository import (
    ImageRepository,
    PublishResult,
    SignatureStatus,
    locked,
)
from otaguard.repo.signing import KeyArg, RepoSigner, load_key_arg

#: Where ``init`` generates keys it was not given, relative to the repository.
GENERATED_ONLINE = "online-keys/{role}.pem"


# -- keys -------------------------------------------------------------------------------------


def generate_key(path: str | os.PathLike[str], key_type: KeyType = KeyType.ED25519) -> Path:
    """A new private key file at ``path`` (mode 0600); an existing file is never replaced."""
    path = Path(path)
    if path.exists() or path.is_symlink():
        raise UsageError(f"{path} already exists: not replacing a key file")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(f"cannot create {path.parent}: {exc.strerror or exc}") from exc
    write_atomic(path, private_key_pem(generate_private_key(key_type), None), mode=0o600)
    return path


def generate_online_keys(
    directory: str | os.PathLike[str],
    roles: Sequence[str] = ONLINE_ROLES,
    key_type: KeyType = KeyType.ED25519,
) -> dict[str, Path]:
    """``<role>.pem`` in ``directory`` for each role (snapshot and timestamp by default)."""
    paths = {role: Path(directory) / f"{role}.pem" for role in roles}
    for path in paths.values():
        if path.exists():
            raise UsageError(f"{path} already exists: not replacing a key file")
    return {role: generate_key(path, key_type) for role, path in paths.items()}


def online_key_location(base: str | os.PathLike[str], spec: str) -> str:
    """Where a configured online key is: URIs and absolute paths as given, else under ``base``."""
    if is_pkcs11_uri(spec) or os.path.isabs(spec):
        return spec
    return str(Path(base) / spec)


def load_keys(
    specs: Sequence[str], passphrase: bytes | None = None, *, signing: bool = False
) -> list[KeyArg]:
    """Key arguments (files, ``pkcs11:`` URIs); the same key twice is refused.

    ``signing``: every key must be able to sign (a private key file or an HSM key).
    """
    args = [load_key_arg(spec, passphrase) for spec in specs]
    if len({a.keyid for a in args}) != len(args):
        raise UsageError("the same key was given twice")
    if signing:
        for spec, arg in zip(specs, args, strict=True):
            if arg.signer is None:
                raise UsageError(f"{spec} is a public key: signing needs the private key")
    return args


def load_signers(specs: Sequence[str], passphrase: bytes | None = None) -> list[RepoSigner]:
    """Signers for key files or ``pkcs11:`` URIs (public keys refused); close them after use."""
    return [a.signer for a in load_keys(specs, passphrase, signing=True) if a.signer is not None]


@contextlib.contextmanager
def closing(signers: Sequence[RepoSigner | None]) -> Iterator[None]:
    """Close every signer (HSM sessions) however the block ends."""
    try:
        yield
    finally:
        for signer in signers:
            if signer is not None:
                signer.close()


@dataclass(frozen=True)
class RoleKeys:
    """The keys of root or targets and their threshold.

    No keys: ``init_repository`` generates one Ed25519 key into ``offline-keys/``.
    Public keys are recorded; private keys (or HSM URIs) also sign version 1.
    """

    keys: tuple[KeyArg, ...] = ()
    threshold: int = 1

    @classmethod
    def load(
        cls, specs: Sequence[str], threshold: int = 1, passphrase: bytes | None = None
    ) -> RoleKeys:
        return cls(tuple(load_keys(specs, passphrase)), threshold)

    @property
    def signers(self) -> list[RepoSigner]:
        return [a.signer for a in self.keys if a.signer is not None]


# -- init -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class InitResult:
    directory: Path
    #: Root and targets keys generated into offline-keys/: move them off this machine.
    generated_offline_keys: tuple[Path, ...]
    #: Each staged role after init's own signatures.
    staged: tuple[SignatureStatus, ...]
    #: None: root or targets still need offline signatures before the first publish.
    published: PublishResult | None = None
    online_keys: Mapping[str, str] = field(default_factory=dict)


def check_new_directory(directory: str | os.PathLike[str]) -> Path:
    """``directory`` if a repository may be created there: absent, or an empty directory."""
    path = Path(directory)
    if (path / "config.json").exists():
        raise UsageError(f"{path} already holds a repository")
    if path.exists() and not path.is_dir():
        raise UsageError(f"{path} exists and is not a directory")
    if path.is_dir() and any(path.iterdir()):
        raise UsageError(f"{path} is not empty: give a new or empty directory")
    return path


def _check_expiry(expiry_days: Mapping[str, int]) -> None:
    for role, days in expiry_days.items():
        if role not in TOP_ROLES:
            raise UsageError(f"expiry for {role[:40]!r}: not a role of a new repository")
        check_expiry_days(role, days)


def init_repository(
    directory: str | os.PathLike[str],
    *,
    root: RoleKeys | None = None,
    targets: RoleKeys | None = None,
    online: Mapping[str, str] | None = None,
    expiry_days: Mapping[str, int] | None = None,
    passphrase: bytes | None = None,
    now: datetime.datetime | None = None,
) -> InitResult:
    """Create a repository in ``directory`` (absent or empty), all or nothing.

    ``online``: role -> key file or ``pkcs11:`` URI for snapshot and timestamp; a role
    left out gets a key generated into ``online-keys/``. Version 1 is published at once
    if the root and targets keys given can sign it (private keys, HSM URIs); otherwise it
    stays staged for the release managers. The signers of ``root`` and ``targets`` are
    closed when this returns.
    """
    given = [k for k in (root, targets) if k is not None]
    with closing([s for keys in given for s in keys.signers]):
        final = check_new_directory(directory)
        _check_expiry(expiry_days or {})
        unknown = set(online or {}) - set(ONLINE_ROLES)
        if unknown:
            raise UsageError(f"online keys are for snapshot and timestamp, not {min(unknown)!r}")
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            work = Path(tempfile.mkdtemp(prefix=f".{final.name}.init-", dir=final.parent))
        except OSError as exc:
            raise StorageError(f"cannot create {final}: {exc.strerror or exc}") from exc
        try:
            result = _build(work, final, root, targets, online or {}, expiry_days, passphrase, now)
            _move_into_place(work, final)
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
        return result


def _build(
    work: Path,
    final: Path,
    root: RoleKeys | None,
    targets: RoleKeys | None,
    online: Mapping[str, str],
    expiry_days: Mapping[str, int] | None,
    passphrase: bytes | None,
    now: datetime.datetime | None,
) -> InitResult:
    """The whole repository in ``work``; returns what it will be once renamed to ``final``."""
    layout = Layout(work)
    generated: list[Path] = []
    generated_roles: list[str] = []
    offline: dict[str, RoleKeys] = {}
    for role, given in (("root", root), ("targets", targets)):
        keys = given or RoleKeys()
        if not keys.keys:
            path = generate_key(layout.offline_keys / f"{role}.pem")
            generated.append(final / path.relative_to(work))
            generated_roles.append(role)
            keys = RoleKeys(tuple(load_keys([str(path)])), keys.threshold)
        offline[role] = keys
    specs: dict[str, str] = {}
    for role in ONLINE_ROLES:
        given_spec = online.get(role)
        if given_spec:
            specs[role] = given_spec if is_pkcs11_uri(given_spec) else os.path.abspath(given_spec)
        else:
            specs[role] = GENERATED_ONLINE.format(role=role)
            generate_key(work / specs[role])
    # An online key may be public: a fleet server's (online-keys/<role>.pub), which the
    # release managers name in their offline repository; the server signs, not them.
    online_args = {
        role: load_keys([online_key_location(work, spec)], passphrase)[0]
        for role, spec in specs.items()
    }
    generated_signers = [s for role in generated_roles for s in offline[role].signers]
    online_signers = [a.signer for a in online_args.values() if a.signer is not None]
    with closing([*generated_signers, *online_signers]), locked(work):
        repository = ImageRepository.create(
            work,
            root_keys=[a.key for a in offline["root"].keys],
            root_threshold=offline["root"].threshold,
            targets_keys=[a.key for a in offline["targets"].keys],
            targets_threshold=offline["targets"].threshold,
            snapshot_key=online_args["snapshot"].key,
            timestamp_key=online_args["timestamp"].key,
            online_key_specs=specs,
            expiry_days=dict(expiry_days or {}),
            now=now,
        )
        for role, keys in offline.items():
            if keys.signers:
                repository.sign(role, keys.signers)
        staged = tuple(s for _, s in repository.staged_statuses() if s is not None)
        published = None
        if all(s.ok for s in staged) and len(online_signers) == len(online_args):
            published = repository.publish(
                [_signer(online_args["snapshot"])], [_signer(online_args["timestamp"])]
            )
    return InitResult(final, tuple(generated), staged, published, specs)


def _signer(arg: KeyArg) -> RepoSigner:
    assert arg.signer is not None  # checked by the caller
    return arg.signer


def _move_into_place(work: Path, final: Path) -> None:
    """Rename the finished repository to ``final`` (replacing an empty directory only)."""
    try:
        os.rename(work, final)
    except OSError as exc:
        raise UsageError(
            f"{final} appeared while the repository was built ({exc.strerror or exc}): "
            "give a new or empty directory"
        ) from exc
    with contextlib.suppress(OSError):  # durability of the rename; the files are synced
        fd = os.open(final.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# -- publish ----------------------------------------------------------------------------------


def online_signer(
    repository: ImageRepository,
    role: str,
    given: str | None = None,
    passphrase: bytes | None = None,
) -> RepoSigner:
    """The signer of online ``role``: ``given`` as it is, else the configured key."""
    if not given:
        spec = repository.config.online_keys.get(role)
        if spec is None:
            raise UsageError(f"no {role} key configured: pass --{role}-key")
        given = online_key_location(repository.layout.base, spec)
    return load_signers([given], passphrase)[0]


def publish_repository(
    repository: ImageRepository,
    online: Mapping[str, str | None] | None = None,
    passphrase: bytes | None = None,
) -> PublishResult:
    """:meth:`ImageRepository.publish` with the online signers loaded (caller holds the lock)."""
    given = online or {}
    snapshot = online_signer(repository, "snapshot", given.get("snapshot"), passphrase)
    with closing([snapshot]):
        timestamp = online_signer(repository, "timestamp", given.get("timestamp"), passphrase)
        with closing([timestamp]):
            return repository.publish([snapshot], [timestamp])


def publish(
    directory: str | os.PathLike[str],
    online: Mapping[str, str | None] | None = None,
    passphrase: bytes | None = None,
    *,
    now: datetime.datetime | None = None,
) -> PublishResult:
    """Publish every staged role (all or nothing) and sign a new snapshot and timestamp.

    With nothing staged this renews the timestamp (and the snapshot when half its
    lifetime has passed): run it at least daily. ``online`` overrides the configured
    snapshot/timestamp keys (after a rotation).
    """
    with locked(directory):
        return publish_repository(ImageRepository(directory, now=now), online, passphrase)


def stage_signed(directory: str | os.PathLike[str], role: str, data: bytes) -> SignatureStatus:
    """Stage ``role`` as signed elsewhere (offline): the next version, with its signatures.

    The bytes must be ``role``'s metadata at a version above the published one. If the
    same content is staged already (version 1 after :func:`init_repository`, or another
    release manager's upload), the signatures are added to it, as ``repo sign`` does;
    other pending work staged for ``role`` is never replaced. Every signature uploaded
    must be a valid one by a key of ``role`` (a forged or foreign one is refused, so
    the uploader hears of it now); :func:`publish` goes ahead only when every staged
    role meets its threshold.
    """
    with locked(directory):
        repository = ImageRepository(directory)
        md = parse_metadata(data, role, f"uploaded {role}")
        published = repository.published_version(role)
        if md.signed.version <= published:
            raise UsageError(
                f"{role} v{md.signed.version} is not newer than the published v{published}"
            )
        valid = repository.status(role, md).signed  # raises if nobody delegates to role
        if valid != len(md.signatures):
            raise RejectedError(
                f"uploaded {role}: {len(md.signatures) - valid} signature(s) not made by a "
                f"key of {role} (forged, or the wrong key)"
            )
        pending = repository.staged(role, fresh=True)
        if pending is not None and not repository.leftover(role, pending):
            if pending.signed_bytes != md.signed_bytes:
                raise UsageError(
                    f"staged/{role}.json holds other pending work: publish or remove it first"
                )
            md.signatures = {**pending.signatures, **md.signatures}
        repository.stage(role, md)
        return repository.status(role, md)


def status_report(repository: ImageRepository) -> dict[str, Any]:
    """Published versions and what each staged role still needs, ready for JSON."""
    staged = repository.staged_statuses()
    return {
        "published": {role: repository.published_version(role) for role in TOP_ROLES},
        "staged": [
            {"role": role, "already_published": True}
            if state is None
            else {**state.as_dict(), "already_published": False}
            for role, state in staged
        ],
        "ready": all(state is None or state.ok for _, state in staged),
    }
