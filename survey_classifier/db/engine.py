"""Engines for the results database and its Alembic migrations.

The embedded default is a SQLite file in the working directory; PostgreSQL
(or any SQLAlchemy URL) is chosen by URL, on the command line (``--db``) or
through the ``SURVEY_CLASSIFIER_DB`` environment variable.
"""

from __future__ import annotations

import json
import os
from importlib.resources import files

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError

from survey_classifier.errors import SurveyClassifierError

__all__ = [
    "DEFAULT_DB_URL",
    "resolve_db_url",
    "make_engine",
    "alembic_config",
    "upgrade",
    "downgrade",
    "current_revision",
]

DEFAULT_DB_URL = "sqlite:///survey-classifier.db"


def resolve_db_url(url: str | None = None) -> str:
    """``url``, else ``$SURVEY_CLASSIFIER_DB``, else the SQLite default."""
    url = url or os.environ.get("SURVEY_CLASSIFIER_DB") or DEFAULT_DB_URL
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        msg = f"not a database URL: {url!r} (expected e.g. sqlite:///results.db or postgresql+psycopg://user@host/db)"
        raise SurveyClassifierError(msg) from exc
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def _sqlite_pragmas(dbapi_connection, _record):
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def _json_loads(text: str):
    """A JSON column's value: read by orjson (several times faster), by ``json`` where orjson refuses it.

    ``json`` writes NaN and the infinities as bare words and reads integers
    of any size; orjson reads neither, and those values go to ``json``.
    """
    try:
        return _orjson_loads(text)
    except ValueError:  # orjson.JSONDecodeError is a ValueError
        return json.loads(text)


try:
    from orjson import loads as _orjson_loads
except ImportError:  # pragma: no cover - orjson is a dependency
    _orjson_loads = json.loads


def make_engine(url: str | None = None, **kwargs) -> Engine:
    """Create an engine; SQLite gets foreign keys, WAL and a busy timeout; JSON columns are read by orjson."""
    url = resolve_db_url(url)
    kwargs.setdefault("json_deserializer", _json_loads)
    if url.startswith("sqlite"):
        engine = create_engine(url, **kwargs)
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    return create_engine(url, **kwargs)


def alembic_config(url: str | None = None) -> Config:
    """An Alembic configuration pointing at the packaged migrations."""
    config = Config()
    config.set_main_option("script_location", str(files("survey_classifier") / "_migrations"))
    config.set_main_option("sqlalchemy.url", resolve_db_url(url).replace("%", "%%"))
    return config


def upgrade(url: str | None = None, revision: str = "head") -> None:
    """Create or upgrade the schema through Alembic (the only way it changes).

    At ``head``, the models shipped with survey-classifier and its installed
    plugins are then recorded in the registry (those not there yet).
    """
    command.upgrade(alembic_config(url), revision)
    if revision == "head":
        from survey_classifier.registry import seed_shipped_models

        engine = make_engine(url)
        try:
            seed_shipped_models(engine)
        finally:
            engine.dispose()


def downgrade(url: str | None = None, revision: str = "base") -> None:
    """Downgrade the schema through Alembic."""
    command.downgrade(alembic_config(url), revision)


def current_revision(engine: Engine) -> str | None:
    """The Alembic revision the database is at, or None for an empty database."""
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()
