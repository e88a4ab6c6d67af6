"""``otaguard server run``: the fleet server (docs/server.md).

On an empty data dir the server initialises itself (schema, online keys,
director root, admin token) and says what it made; later starts upgrade the
schema. With ``--workers N`` uvicorn runs N processes on one listening socket,
each building the application from the environment this command sets. SIGTERM
(or Ctrl-C) stops accepting connections, lets the requests in flight finish,
then exits: a rolling restart loses nothing.
"""

from __future__ import annotations

import datetime as dt
import os
import socket

import click

DRAIN_SECONDS = 30


@click.group("server")
def server() -> None:
    """The fleet server."""


@server.command("run")
@click.option("--data-dir", required=True, type=click.Path(file_okay=False), help="State and keys.")
@click.option(
    "--database", help="Database URL (default: sqlite in the data dir), e.g. postgresql://..."
)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535))
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64))
@click.option("--repo-url", help="Where devices fetch repository files (a mirror); default: here.")
@click.option(
    "--audit-key",
    help="Key signing the audit log's checkpoints: a key file or pkcs11: URI "
    "(default: DATA_DIR/online-keys/audit.pem, made at the first start).",
)
@click.option("--audit-origin", help="The audit log's name, fixed at the first start.")
@click.option(
    "--mqtt",
    "mqtt_url",
    envvar="OTAGUARD_MQTT",
    help="MQTT broker for push (mqtt://[USER@]host:port; env OTAGUARD_MQTT; the password "
    "from env OTAGUARD_MQTT_PASSWORD); default: polling only.",
)
@click.option(
    "--log-level",
    default="warning",
    show_default=True,
    type=click.Choice(["critical", "error", "warning", "info", "debug"]),
)
def run(
    data_dir: str,
    database: str | None,
    host: str,
    port: int,
    workers: int,
    repo_url: str | None,
    audit_key: str | None,
    audit_origin: str | None,
    mqtt_url: str | None,
    log_level: str,
) -> None:
    """Serve the device and operator APIs and the repository files."""
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    from otaguard.errors import UsageError
    from otaguard.server.config import ENV_MQTT_PASSWORD, ServerConfig
    from otaguard.server.datadir import prepare
    from otaguard.server.db import Database, normalise_url

    config = ServerConfig.create(
        data_dir,
        normalise_url(database) if database else None,
        repo_url=repo_url,
        audit_key=audit_key,
        audit_origin=audit_origin,
        mqtt_url=mqtt_url or None,
        mqtt_password=os.environ.get(ENV_MQTT_PASSWORD),
    )
    db = Database(config.database_url)
    try:
        report = prepare(config, db, now=dt.datetime.now(dt.UTC))
    finally:
        db.dispose()
    if report.initialised:
        click.echo(f"initialised a new server in {config.data_dir}")
    for line in report.lines():
        click.echo(line)
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as exc:
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    # Listening now (not when uvicorn gets to it) makes "listening on" true when printed:
    # a client that connects at once waits in the backlog instead of being refused.
    sock.listen(2048)
    sock.set_inheritable(True)
    bound = sock.getsockname()[1]
    os.environ.update(config.to_env())
    shown = f"[{host}]" if ":" in host else host
    click.echo(f"listening on http://{shown}:{bound} ({workers} worker{'s' * (workers > 1)})")
    uv = uvicorn.Config(
        "otaguard.server.app:create_app_from_env",
        factory=True,
        workers=workers,
        log_level=log_level,
        access_log=log_level in ("info", "debug"),
        timeout_graceful_shutdown=DRAIN_SECONDS,
        timeout_keep_alive=int(config.timing.keep_alive),
        lifespan="on",
        server_header=False,
    )
    if workers > 1:
        Multiprocess(uv, sockets=[sock]).run()
    else:
        uvicorn.Server(uv).run(sockets=[sock])
