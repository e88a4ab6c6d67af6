"""The schema is made only by the migrations; each one is reversible; the models agree with them."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from otaguard.server import migrate
from otaguard.server.db import Database
from otaguard.server.models import Base


def _revisions() -> list[str]:
    script = ScriptDirectory(str(migrate.MIGRATIONS))
    return [r.revision for r in reversed(list(script.walk_revisions()))]


def test_every_migration_goes_down_and_up_again(db_url: str) -> None:
    db = Database(db_url)
    try:
        assert migrate.upgrade(db) == (None, migrate.head())
        revisions = _revisions()
        for previous in reversed(["base", *revisions[:-1]]):
            migrate.downgrade(db, previous)
            assert (migrate.current(db) or "base") == previous
        assert migrate.upgrade(db) == (None, migrate.head())
        assert migrate.upgrade(db) == (migrate.head(), migrate.head())  # a later start: nothing
    finally:
        db.dispose()


def test_models_match_the_migrated_schema(db_url: str) -> None:
    db = Database(db_url)
    try:
        migrate.upgrade(db)
        with db.engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            differences = compare_metadata(context, Base.metadata)
        assert differences == []
    finally:
        db.dispose()


def test_migration_files_are_named_for_what_they_do() -> None:
    names = sorted(p.name for p in migrate.MIGRATIONS.joinpath("versions").glob("0*.py"))
    assert len(names) == len(_revisions())
    for name in names:
        number, _, what = name.removesuffix(".py").partition("_")
        assert number.isdigit() and len(what) > 5, name
