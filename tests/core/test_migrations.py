"""Every migration runs up and down on the engine under test (SQLite or PostgreSQL)."""

from __future__ import annotations

import uuid

from sqlalchemy import create_engine, inspect, text

from carepost.core import migrations
from carepost.core.config import load_settings
from carepost.core.database import Database
from carepost.schema import metadata


def test_every_migration_runs_up_and_down(settings):
    if settings.is_sqlite:
        scratch = load_settings(
            database_url=f"sqlite:///{settings.data_dir / f'mig-{uuid.uuid4().hex}.db'}",
            master_key_file=settings.master_key_file,
        )
        cleanup = None
    else:
        schema = f"{settings.database_schema}_mig"
        admin = create_engine(settings.database_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.execute(text(f'CREATE SCHEMA "{schema}"'))
        scratch = load_settings(
            database_url=settings.database_url,
            database_schema=schema,
            master_key_file=settings.master_key_file,
        )

        def cleanup() -> None:
            with admin.connect() as connection:
                connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
            admin.dispose()

    database = Database(scratch)
    try:
        migrations.upgrade(database.engine)
        tables = set(inspect(database.engine).get_table_names())
        assert set(metadata.tables) <= tables
        migrations.downgrade(database.engine, "base")
        assert set(inspect(database.engine).get_table_names()) <= {"alembic_version"}
        migrations.upgrade(database.engine)
        assert migrations.current_revision(database.engine) is not None
    finally:
        database.dispose()
        if cleanup:
            cleanup()


def test_models_match_the_migrations(runtime):
    """Autogenerate finds nothing to do: the models and the migrations agree."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    with runtime.database.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": False})
        differences = compare_metadata(context, metadata)
    assert differences == []
