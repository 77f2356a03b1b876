"""Every command that opens a database says in one line what is wrong with it and which command fixes it."""

import socket
import sqlite3
import uuid

import pytest
import sqlalchemy
from click.testing import CliRunner

from survey_classifier.cli import main
from survey_classifier.db import downgrade, make_engine, upgrade
from survey_classifier.db.checks import check_schema, explain, head_revision, open_database
from survey_classifier.errors import DatabaseError

#: Every command that opens a results database, with the arguments it needs to get that far.
COMMANDS = [
    ("classify", "x.fits"),
    ("submit", "x.fits"),
    ("query",),
    ("query", "--errors"),
    ("status", "1"),
    ("retry-failed", "1"),
    ("runs", "list"),
    ("worker",),
    ("serve",),
    ("models", "list"),
    ("models", "show", "fr-cnn"),
    ("plugins", "enable", "cnn"),
    ("plugins", "list"),
    ("train", "anomaly", "-o", "scorer.npz"),
    ("evaluate", "anomaly", "--rare", "a=b"),
]


@pytest.fixture(autouse=True)
def _services(monkeypatch):
    """submit/worker point the Celery app at the services through the environment: restore it afterwards."""
    for name in ("SURVEY_CLASSIFIER_DB", "SURVEY_CLASSIFIER_BROKER"):
        monkeypatch.delenv(name, raising=False)


def one_line_error(*args) -> str:
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 1, (args, result.output, result.exception)
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), (args, result.output)
    return lines[0]


def _missing_postgres_url() -> str:
    from conftest import POSTGRES_ADMIN_URL, _postgres_available

    problem = _postgres_available()
    if problem:
        pytest.skip(f"PostgreSQL not reachable: {problem}")
    name = f"sc_missing_{uuid.uuid4().hex[:8]}"
    return sqlalchemy.engine.make_url(POSTGRES_ADMIN_URL).set(database=name).render_as_string(hide_password=False)


@pytest.mark.postgres
@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c[:2]))
def test_a_missing_postgres_database_is_one_line_with_createdb_and_upgrade(command, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    url = _missing_postgres_url()
    name = sqlalchemy.engine.make_url(url).database
    line = one_line_error(*command, "--db", url)
    assert f"the PostgreSQL database '{name}' does not exist on 127.0.0.1:5432" in line
    assert f"createdb -h 127.0.0.1 -p 5432 -U postgres {name}`" in line
    assert f"survey-classifier db upgrade --db {url}" in line


def test_an_unreachable_server_is_one_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"postgresql+psycopg://postgres@127.0.0.1:{port}/survey"
    for command in (("query",), ("classify", "x.fits"), ("status", "1")):
        line = one_line_error(*command, "--db", url)
        assert f"cannot reach PostgreSQL at 127.0.0.1:{port}" in line
        assert f"pg_isready -h 127.0.0.1 -p {port}" in line


def test_sqlite_file_missing_empty_old_or_newer(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    missing = one_line_error("query", "--db", "sqlite:///nowhere.db")
    assert "no database file nowhere.db" in missing
    assert "survey-classifier db upgrade --db sqlite:///nowhere.db" in missing
    assert not (tmp_path / "nowhere.db").exists()  # a read-only command creates no file

    sqlite3.connect(tmp_path / "other.db").execute("CREATE TABLE notes (x)").connection.close()
    empty = one_line_error("status", "1", "--db", "sqlite:///other.db")
    assert "has no survey-classifier tables" in empty and "db upgrade --db sqlite:///other.db" in empty

    url = f"sqlite:///{tmp_path / 'old.db'}"
    upgrade(url)
    older = head_revision()
    downgrade(url, "0004")
    for command in COMMANDS[2:8]:  # the commands that read or serve a database without upgrading it
        line = one_line_error(*command, "--db", url)
        assert f"is at schema revision 0004, older than the {older} this survey-classifier needs" in line, command
        assert f"upgrade it with `survey-classifier db upgrade --db {url}`" in line

    url = f"sqlite:///{tmp_path / 'new.db'}"
    upgrade(url)
    engine = make_engine(url)
    with engine.begin() as connection:
        connection.exec_driver_sql("UPDATE alembic_version SET version_num = '0999_from_the_future'")
    engine.dispose()
    for command in (("query",), ("classify", "x.fits"), ("db", "upgrade")):
        line = one_line_error(*command, "--db", url)
        assert "0999_from_the_future" in line and "a newer survey-classifier wrote it; install that version" in line

    (tmp_path / "notes.txt").write_text("not a database\n" * 100)
    assert "is not a SQLite database" in one_line_error("query", "--db", "sqlite:///notes.txt")
    folder = one_line_error("classify", "x.fits", "--db", "sqlite:///no/such/folder/r.db")
    assert "cannot open the SQLite database no/such/folder/r.db: its folder" in folder


def test_open_database_at_the_current_schema(sqlite_url):
    upgrade(sqlite_url)
    engine = open_database(sqlite_url)
    assert check_schema(engine) == head_revision()
    engine.dispose()


@pytest.mark.postgres
def test_an_old_postgres_schema_names_the_upgrade(postgres_url):
    upgrade(postgres_url, "0004")
    engine = make_engine(postgres_url)
    with pytest.raises(DatabaseError, match="is at schema revision 0004, older than"):
        check_schema(engine)
    engine.dispose()
    line = one_line_error("query", "--db", postgres_url)
    assert "survey-classifier db upgrade --db postgresql+psycopg://postgres@127.0.0.1:5432/" in line


def test_other_errors_are_not_dressed_as_database_problems():
    assert explain(ValueError("no such table: but not from a database")) is None
    statement_error = sqlalchemy.exc.IntegrityError("INSERT", {}, Exception("UNIQUE constraint failed: models.name"))
    assert explain(statement_error, "sqlite:///x.db") is None
