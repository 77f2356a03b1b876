"""The results database: SQLAlchemy 2 models, engine set-up and Alembic."""

from survey_classifier.db.engine import DEFAULT_DB_URL, downgrade, make_engine, upgrade

__all__ = ["DEFAULT_DB_URL", "make_engine", "upgrade", "downgrade"]
