"""``otaguard repo``: the TUF image repository (init, add-target, sign, publish, delegate, rotate).

Every change to root, targets or a delegated role is *staged* first; release
managers sign it one by one (``repo sign``, offline keys, files or ``pkcs11:``
URIs); ``repo publish`` makes it live only when every staged role meets its
threshold, and re-signs snapshot and timestamp with the online keys.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING

import click

from otaguard.cli import audit_log, params
from otaguard.cli.common import passphrase_from_env

if TYPE_CHECKING:
    from otaguard.repo.repository import PublishResult, SignatureStatus

_PASSPHRASE = click.option(
    "--passphrase-env", metavar="VAR", help="Passphrase of encrypted private key files."
)


@click.group()
def repo() -> None:
    """Run a TUF image repository (consistent snapshots, threshold signing)."""


def _print_publish(result: PublishResult, as_json: bool = False) -> None:
    if as_json:
        click.echo(json.dumps(result.as_dict(), indent=2, sort_keys=True))
        return
    for role in result.leftovers:
        click.echo(f"dropped staged {role}: already published (an earlier publish was cut short)")
    roles = ", ".join(result.published) or "no role changed"
    click.echo(
        f"published ({roles}); snapshot v{result.snapshot_version}, "
        f"timestamp v{result.timestamp_version}"
    )


def _print_staged(staged: Sequence[tuple[str, SignatureStatus | None]]) -> None:
    for role, status in staged:
        if status is None:
            click.echo(f"staged {role}: already published (dropped at the next publish)")
        else:
            click.echo(f"staged {status.describe()}")


# -- init ---------------------------------------------------------------------------------


@repo.command("init")
@click.argument("directory", type=click.Path(file_okay=False))
@click.option("--root-key", "root_keys", multiple=True, help="Root key (file or pkcs11: URI).")
@click.option("--root-threshold", type=click.IntRange(1, 64), default=1, show_default=True)
@click.option("--targets-key", "targets_keys", multiple=True, help="Targets key.")
@click.option("--targets-threshold", type=click.IntRange(1, 64), default=1, show_default=True)
@click.option("--snapshot-key", help="Online snapshot key (default: generated).")
@click.option("--timestamp-key", help="Online timestamp key (default: generated).")
@click.option(
    "--expires", "expires", multiple=True, metavar="ROLE=DAYS", help="Expiry of a top-level role."
)
@_PASSPHRASE
def init(
    directory: str,
    root_keys: tuple[str, ...],
    root_threshold: int,
    targets_keys: tuple[str, ...],
    targets_threshold: int,
    snapshot_key: str | None,
    timestamp_key: str | None,
    expires: tuple[str, ...],
    passphrase_env: str | None,
) -> None:
    """Create a repository in DIRECTORY and publish version 1 when the keys given suffice.

    Root and targets keys may be private keys or HSM URIs (they sign version 1)
    or public keys (version 1 stays staged until signed with 'repo sign').
    Without --root-key/--targets-key, Ed25519 keys are generated into
    DIRECTORY/offline-keys/ (move them offline); snapshot and timestamp keys
    default to generated keys in DIRECTORY/online-keys/. All or nothing: a
    failure leaves no repository behind.
    """
    from otaguard.repo.bootstrap import RoleKeys, check_new_directory, init_repository
    from otaguard.repo.config import parse_expiry_days

    passphrase = passphrase_from_env(passphrase_env)
    expiry_days = parse_expiry_days(expires)
    check_new_directory(directory)
    root = RoleKeys.load(root_keys, root_threshold, passphrase)
    targets = RoleKeys.load(targets_keys, targets_threshold, passphrase)
    online = {"snapshot": snapshot_key or "", "timestamp": timestamp_key or ""}
    result = init_repository(
        directory,
        root=root,
        targets=targets,
        online={role: spec for role, spec in online.items() if spec},
        expiry_days=expiry_days,
        passphrase=passphrase,
    )
    if result.generated_offline_keys:
        click.echo(
            f"warning: generated offline keys {', '.join(map(str, result.generated_offline_keys))}"
            ": move them off this machine (offline storage or an HSM) before the first release",
            err=True,
        )
    click.echo(f"repository created in {directory}")
    _print_staged([(status.role, status) for status in result.staged])
    if result.published is not None:
        _print_publish(result.published)
    else:
        click.echo("not published yet: sign with 'otaguard repo sign', then publish")


# -- targets --------------------------------------------------------------------------------


@repo.command("add-target")
@click.argument("directory", type=click.Path(file_okay=False, exists=True))
@click.argument("image", type=click.Path(dir_okay=False))
@click.option("--name", help="Target path, e.g. eu/acme-ecu-v2/1.5.0.img (default: file name).")
@click.option("--role", help="Role to record it in (default: where clients look for it).")
@click.option("--trusted-key", "trusted_keys", multiple=True, help="Release key (public).")
@click.option("--threshold", type=click.IntRange(1, 64), default=1, show_default=True)
@click.option("--max-size", type=click.IntRange(1), help="Largest image accepted (bytes).")
@click.option(
    "--compatible-with",
    "compatible_with",
    multiple=True,
    metavar="VERSION",
    help="An installed version this image may replace (repeatable; vehicles refuse others).",
)
def add_target(
    directory: str,
    image: str,
    name: str | None,
    role: str | None,
    trusted_keys: tuple[str, ...],
    threshold: int,
    max_size: int | None,
    compatible_with: tuple[str, ...],
) -> None:
    """Verify IMAGE (otaguard envelope or MCUboot) and stage it as a target."""
    from otaguard.repo.staging import stage_target

    staged = stage_target(
        directory,
        image,
        name=name,
        role=role,
        trusted_keys=trusted_keys,
        threshold=threshold,
        max_size=max_size,
        compatible_with=compatible_with,
    )
    click.echo(staged.describe())


@repo.command("remove-target")
@click.argument("directory", type=click.Path(file_okay=False, exists=True))
@click.argument("name")
def remove_target(directory: str, name: str) -> None:
    """Stage the removal of target NAME (a release pulled: clients stop finding it).

    Like any change it goes live when its role's keys have signed and `publish` ran.
    The image file stays under targets/: published files never change under a mirror,
    and no client is told of it any more.
    """
    from otaguard.repo.staging import stage_removal

    target, role = stage_removal(directory, name)
    click.echo(f"staged removal of {target} from {role}")


@repo.command("sign")
@click.argument("directory", type=click.Path(file_okay=False, exists=True))
@click.argument("roles", nargs=-1)
@click.option("--key", "keys", multiple=True, required=True, help="Private key or pkcs11: URI.")
@_PASSPHRASE
@audit_log.audited(audit_log.repo_signed)
def sign(
    directory: str, roles: tuple[str, ...], keys: tuple[str, ...], passphrase_env: str | None
) -> None:
    """Add signatures to staged ROLES (default: every staged role these keys may sign)."""
    from otaguard.repo.bootstrap import closing, load_signers
    from otaguard.repo.staging import sign_staged

    signers = load_signers(keys, passphrase_from_env(passphrase_env))
    with closing(signers):
        sign_staged(
            directory, signers, roles, signed=lambda s: click.echo(f"signed {s.describe()}")
        )


@repo.command("status")
@click.argument("directory", type=click.Path(file_okay=False, exists=True))
@params.JSON
def status(directory: str, as_json: bool) -> None:
    """Show published versions and what each staged role still needs."""
    from otaguard.repo.bootstrap import status_report
    from otaguard.repo.repository import ImageRepository

    repository = ImageRepository(directory)
    if as_json:
        click.echo(json.dumps(status_report(repository), indent=2, sort_keys=True))
        return
    for role in ("root", "targets", "snapshot", "timestamp"):
        click.echo(f"published {role} v{repository.published_version(role)}")
    staged = repository.staged_statuses()
    if not staged:
        click.echo("nothing staged")
    _print_staged(staged)


@repo.command("publish")
@click.argument("directory", type=click.Path(file_okay=False, exists=True))
@click.option("--snapshot-key", help="Online snapshot key (default: the configured one).")
@click.option("--timestamp-key", help="Online timestamp key (default: the configured one).")
@_PASSPHRASE
@params.JSON
@audit_log.audited(audit_log.repo_published)
def publish(
    directory: str,
    snapshot_key: str | None,
    timestamp_key: str | None,
    passphrase_env: str | None,
    as_json: bool,
) -> None:
    """Publish staged roles (all must meet their thresholds), new snapshot and timestamp.

    With nothing staged this renews the timestamp (run it from cron: clients
    refuse an expired timestamp).
    """
    from otaguard.repo import bootstrap

    online = {"snapshot": snapshot_key, "timestamp": timestamp_key}
    result = bootstrap.publish(directory, online, passphrase_from_env(passphrase_env))
    _print_publish(result, as_json)


# -- delegations and rotation ---------------------------------------------------------------


@repo.command("delegate")
@click.argument("directory", type=click.Path(file_okay=False, exists=True))
@click.option("--name", help="Delegated role name (e.g. a region or product line).")
@click.option("--path", "paths", multiple=True, help="Target path pattern, e.g. 'eu/*'.")
@click.option("--hashed-bins", type=int, help="Delegate every path to this many hashed bins.")
@click.option("--key", "keys", multiple=True, required=True, help="Public key of the new role.")
@click.option("--threshold", type=click.IntRange(1, 64), default=1, show_default=True)
@click.option("--delegator", default="targets", show_default=True, help="Delegating role.")
@click.option("--terminating", is_flag=True, help="Clients look no further for matching paths.")
@click.option(
    "--expires", "expiry_days", type=int, metavar="DAYS", help="Expiry of the new role(s)."
)
def delegate(
    directory: str,
    name: str | None,
    paths: tuple[str, ...],
    hashed_bins: int | None,
    keys: tuple[str, ...],
    threshold: int,
    delegator: str,
    terminating: bool,
    expiry_days: int | None,
) -> None:
    """Stage a delegation (by --name and --path, or to --hashed-bins) and the new roles.

    Each new version of a delegated role is valid for --expires DAYS (default:
    as long as targets).
    """
    from otaguard.repo.staging import stage_delegation

    staged = stage_delegation(
        directory,
        keys,
        threshold,
        name=name,
        paths=paths,
        hashed_bins=hashed_bins,
        delegator=delegator,
        terminating=terminating,
        expiry_days=expiry_days,
    )
    if hashed_bins is not None:
        click.echo(f"staged {delegator} delegating to {len(staged)} hashed bins {staged[0]}..")
    else:
        click.echo(f"staged {delegator} delegating {', '.join(paths)} to {name}")
    click.echo("sign the staged roles ('otaguard repo sign'), then publish")


@repo.command("rotate")
@click.argument("directory", type=click.Path(file_okay=False, exists=True))
@click.argument("role")
@click.option("--add-key", "add", multiple=True, help="Public key to add to ROLE.")
@click.option("--remove-key", "remove", multiple=True, help="Key id (or 8+ digit prefix).")
@click.option("--threshold", type=click.IntRange(1, 64), help="New threshold of ROLE.")
@click.option("--key", "keys", multiple=True, help="Sign the new delegator version with this key.")
@_PASSPHRASE
def rotate(
    directory: str,
    role: str,
    add: tuple[str, ...],
    remove: tuple[str, ...],
    threshold: int | None,
    keys: tuple[str, ...],
    passphrase_env: str | None,
) -> None:
    """Change ROLE's keys or threshold: stages a new root (or delegator) version.

    For root, the new version needs the threshold of the current root AND of
    the new one: pass old and new root keys with --key (or 'repo sign' later).
    """
    from otaguard.repo.staging import stage_rotation

    passphrase = passphrase_from_env(passphrase_env)
    delegator, signed = stage_rotation(
        directory,
        role,
        add=add,
        remove=remove,
        threshold=threshold,
        keys=keys,
        passphrase=passphrase,
    )
    click.echo(f"staged {delegator} with new keys for {role}")
    if signed is not None:
        click.echo(f"signed {signed.describe()}")
    click.echo("publish with 'otaguard repo publish' once the thresholds are met")
