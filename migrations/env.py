"""Alembic environment of the survey-classifier results database.

The URL comes from ``-x db=URL``, else ``$SURVEY_CLASSIFIER_DB``, else the
``sqlalchemy.url`` of the configuration (set by
:func:`survey_classifier.db.engine.alembic_config`, or alembic.ini).
"""

import os

from alembic import context

from survey_classifier.db.engine import make_engine
from survey_classifier.db.models import Base

config = context.config
if config.config_file_name is not None and config.attributes.get("configure_logger", True):
    from logging.config import fileConfig

    fileConfig(config.config_file_name, disable_existing_loggers=False)

url = (
    context.get_x_argument(as_dictionary=True).get("db")
    or (os.environ.get("SURVEY_CLASSIFIER_DB") if config.config_file_name else None)
    or config.get_main_option("sqlalchemy.url")
)


def run_migrations_offline() -> None:
    context.configure(url=url, target_metadata=Base.metadata, literal_binds=True, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = make_engine(url)
    with engine.connect() as connection:
        if connection.dialect.name == "sqlite":
            # A batch migration rebuilds a table (copy, drop, rename); with foreign keys enforced, dropping
            # ``runs`` would set every result's run_id to NULL. Off for the migration (outside any transaction).
            connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
            connection.commit()
        context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
