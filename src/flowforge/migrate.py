"""Alembic, driven from the configuration (no alembic.ini to keep in step)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine

from .config import Settings
from .db import sqlalchemy_url
from .resources import resource_path


def alembic_config(settings: Settings) -> Config:
    config = Config()
    config.set_main_option("script_location", str(resource_path("migrations")))
    # Stored as an attribute, not an ini option: '%' in passwords would break interpolation.
    config.attributes["sqlalchemy_url"] = sqlalchemy_url(settings.database_url)
    return config


@contextmanager
def _quiet_alembic() -> Iterator[None]:
    """Alembic's migration context logs "Context impl PostgresqlImpl." and "Will assume
    transactional DDL." at info whenever it is set up: noise before a status answer."""
    logger = logging.getLogger("alembic.runtime.migration")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def upgrade(settings: Settings, revision: str = "head") -> None:
    command.upgrade(alembic_config(settings), revision)


def downgrade(settings: Settings, revision: str) -> None:
    command.downgrade(alembic_config(settings), revision)


def status(settings: Settings) -> dict[str, object]:
    """Current revision, head, and the revisions still to apply (oldest first)."""
    config = alembic_config(settings)
    script = ScriptDirectory.from_config(config)
    engine = create_engine(config.attributes["sqlalchemy_url"])
    try:
        with engine.connect() as conn, _quiet_alembic():
            current = MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()
    head = script.get_current_head()
    pending = [
        rev.revision
        for rev in reversed(list(script.iterate_revisions(head, current)))
        if rev.revision != current
    ]
    return {"current": current, "head": head, "pending": pending}


def known_revisions(settings: Settings) -> list[str]:
    script = ScriptDirectory.from_config(alembic_config(settings))
    return [rev.revision for rev in script.walk_revisions()]
