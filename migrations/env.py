"""Alembic environment: the URL comes from flowforge's configuration, never a file."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool, text

from flowforge.schema import metadata
from flowforge.stores.migrations_sql import MIGRATION_LOCK, REVOKE_VERSION_TABLE_WRITES

config = context.config


def _url() -> str:
    url = config.attributes.get("sqlalchemy_url")
    if not url:  # run through the plain `alembic` command: read the environment
        from flowforge.config import load_settings
        from flowforge.db import sqlalchemy_url

        url = sqlalchemy_url(load_settings().database_url)
    return url


def run_migrations_offline() -> None:
    context.configure(url=_url(), target_metadata=metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connectable = config.attributes.get("connection")
    if connectable is not None:
        context.configure(connection=connectable, target_metadata=metadata)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = create_engine(_url(), poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=metadata)
        with context.begin_transaction():
            # Two hosts migrating at once take turns (stores/migrations_sql.py: MIGRATION_LOCK).
            connection.execute(text(MIGRATION_LOCK))
            context.run_migrations()
            # Only the owner (who migrates) writes the version table, whatever the default
            # privileges gave the runtime role when the table was made.
            connection.execute(text(REVOKE_VERSION_TABLE_WRITES))
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
