"""Connection and schema problems of the results database, each told in one line with the command that fixes it.

Two halves:

- :func:`open_database` is how a command opens a database it reads or
  serves without upgrading it (``query``, ``status``, ``serve``,
  ``worker``...): the file or server must be there and the schema at the
  revision this version of survey-classifier needs (:func:`check_schema`);
  otherwise a :class:`~survey_classifier.errors.DatabaseError` says what
  is wrong and which command fixes it.
- :func:`explain` turns a driver's error (SQLAlchemy, psycopg, SQLite,
  Alembic) into such a :class:`~survey_classifier.errors.DatabaseError`
  when it is a connection or schema problem it recognises. The command
  line calls it for any such error a command lets rise
  (:class:`survey_classifier.cli.group.CommandGroup`), so commands need no
  ``try``/``except`` of their own.
"""

from __future__ import annotations

import functools
import re
import shlex
from pathlib import Path

from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from survey_classifier.db.engine import alembic_config, current_revision, make_engine, resolve_db_url
from survey_classifier.errors import DatabaseError

__all__ = [
    "open_database", "check_schema", "head_revision", "explain", "unreachable", "shown_url", "upgrade_command",
]


def shown_url(url: str | None) -> str:
    """The database URL as it may be printed (password hidden)."""
    return make_url(resolve_db_url(url)).render_as_string(hide_password=True)


def upgrade_command(url: str | None) -> str:
    """The command that creates or upgrades the schema of the database at ``url``."""
    return f"survey-classifier db upgrade --db {shlex.quote(shown_url(url))}"


def _createdb_command(url: str) -> str:
    parsed = make_url(url)
    words = ["createdb"]
    if parsed.host:
        words += ["-h", parsed.host]
    if parsed.port:
        words += ["-p", str(parsed.port)]
    if parsed.username:
        words += ["-U", parsed.username]
    words.append(parsed.database or "DBNAME")
    return " ".join(shlex.quote(w) for w in words)


@functools.cache
def _revisions() -> tuple[str, tuple[str, ...]]:
    """The head revision and every revision this version's migrations know."""
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(alembic_config("sqlite://"))
    return script.get_current_head(), tuple(r.revision for r in script.walk_revisions())


def head_revision() -> str:
    """The schema revision this version of survey-classifier needs."""
    return _revisions()[0]


def check_schema(engine: Engine) -> str:
    """The database's schema revision, when it is the one this version needs.

    Raises
    ------
    DatabaseError
        Naming the revision found, the one needed, and the command that
        upgrades (or, for a newer database, what to install).
    """
    url = engine.url.render_as_string(hide_password=False)
    try:
        revision = current_revision(engine)
    except DBAPIError as exc:
        raise (explain(exc, url) or exc) from exc
    head, known = _revisions()
    if revision == head:
        return revision
    if revision is None:
        msg = (
            f"the database {shown_url(url)} has no survey-classifier tables: create them with "
            f"`{upgrade_command(url)}`"
        )
    elif revision in known:
        msg = (
            f"the database {shown_url(url)} is at schema revision {revision}, older than the {head} this "
            f"survey-classifier needs: upgrade it with `{upgrade_command(url)}`"
        )
    else:
        msg = (
            f"the database {shown_url(url)} is at schema revision {revision}, which this survey-classifier "
            f"({_version()}, schema {head}) does not know: a newer survey-classifier wrote it; install that version"
        )
    raise DatabaseError(msg)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("survey-classifier")
    except PackageNotFoundError:  # pragma: no cover - run from a source tree
        return "this version"


def open_database(url: str | None = None) -> Engine:
    """An engine on an existing results database at the schema this version needs.

    Raises
    ------
    DatabaseError
        When the SQLite file or the PostgreSQL database is missing or
        unreachable, or its schema is absent, older or newer; the message
        names the command that fixes it.
    """
    url = resolve_db_url(url)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        path = Path(parsed.database)
        if not path.exists():
            msg = (
                f"no database file {path} (from --db {shown_url(url)}): check the path, or create it with "
                f"`{upgrade_command(url)}` (classify and submit create it too)"
            )
            raise DatabaseError(msg)
    engine = make_engine(url)
    try:
        check_schema(engine)
    except BaseException:
        engine.dispose()
        raise
    return engine


#: A driver's message for a server that cannot be reached or dropped the connection.
_UNREACHABLE = re.compile(
    r"connection refused|could not connect|no route to host|timeout expired|name or service not known|"
    r"could not translate host name|server closed the connection|terminating connection|connection is closed|"
    r"the database system is (starting up|shutting down)",
    re.IGNORECASE,
)
#: (pattern in the driver's message, what it means) for PostgreSQL; ``{fix}`` etc. filled in by :func:`explain`.
_POSTGRES_PROBLEMS = (
    (re.compile(r'database "(?P<name>[^"]+)" does not exist'),
     "the PostgreSQL database {name!r} does not exist on {server}: create it with `{createdb}`, "
     "then `{upgrade}`"),
    (_UNREACHABLE,
     "cannot reach PostgreSQL at {server} ({reason}): is the server running and the --db URL right? "
     "(`pg_isready -h {host} -p {port}`)"),
    (re.compile(r"password authentication failed|role \"[^\"]+\" does not exist|no password supplied|"
                r"pg_hba.conf", re.IGNORECASE),
     "PostgreSQL at {server} refused the connection ({reason}): check the user and password in the --db URL"),
)
#: Messages of a database reached but without (some of) survey-classifier's tables or columns.
_SCHEMA_PROBLEM = re.compile(
    r"no such table|no such column|relation \"[^\"]+\" does not exist|column \"?[^\"]+\"? does not exist|"
    r"UndefinedTable|UndefinedColumn",
    re.IGNORECASE,
)

#: Messages of a database that could not write: a full disk, a file size limit (SQLite, PostgreSQL).
_DISK_PROBLEM = re.compile(
    r"database or disk is full|disk I/O error|No space left on device|could not extend file|DiskFull|"
    r"File too large|Disk quota exceeded",
    re.IGNORECASE,
)

def explain(exc: BaseException, url: str | None = None) -> DatabaseError | None:
    """The one-line :class:`DatabaseError` for a connection or schema problem, or None if ``exc`` is another error.

    Parameters
    ----------
    exc : BaseException
        What the driver, SQLAlchemy or Alembic raised.
    url : str, optional
        The database URL the command used (default: as resolved from the
        environment), for the commands in the message.
    """
    if isinstance(exc, DatabaseError):
        return exc
    url = resolve_db_url(url)
    text = " ".join(str(getattr(exc, "orig", None) or exc).split())
    if type(exc).__module__.startswith("alembic") and "Can't locate revision" in text:
        head = head_revision()
        msg = (
            f"the database {shown_url(url)} is at a schema revision this survey-classifier ({_version()}, "
            f"schema {head}) does not know ({text}): a newer survey-classifier wrote it; install that version"
        )
        return DatabaseError(msg)
    if not isinstance(exc, DBAPIError):
        return None
    if _SCHEMA_PROBLEM.search(text):
        msg = (
            f"the database {shown_url(url)} lacks survey-classifier's tables or columns (an empty or older "
            f"schema: {_first_clause(text)}): upgrade it with `{upgrade_command(url)}`"
        )
        return DatabaseError(msg)
    if _DISK_PROBLEM.search(text):
        msg = (
            f"the database {shown_url(url)} could not be written ({_first_clause(text)}): its disk is full or a "
            "file size limit was reached; the change was rolled back, nothing was kept"
        )
        return DatabaseError(msg)
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "postgresql":
        host, port = parsed.host or "localhost", parsed.port or 5432
        fields = {
            "server": f"{host}:{port}", "host": host, "port": port, "createdb": _createdb_command(url),
            "upgrade": upgrade_command(url), "reason": _first_clause(text), "name": parsed.database,
        }
        for pattern, template in _POSTGRES_PROBLEMS:
            found = pattern.search(text)
            if found:
                return DatabaseError(template.format(**{**fields, **found.groupdict()}))
    if backend == "sqlite" and "unable to open database file" in text:
        path = Path(parsed.database or "")
        msg = (
            f"cannot open the SQLite database {path}: its folder {path.parent.resolve()} does not exist or "
            "is not writable"
        )
        return DatabaseError(msg)
    if backend == "sqlite" and "file is not a database" in text:
        msg = f"{parsed.database} is not a SQLite database: check the --db URL"
        return DatabaseError(msg)
    return None


def unreachable(exc: BaseException) -> bool:
    """True when ``exc`` says the database server could not be reached or dropped the connection: an
    outage or a restart, worth trying again (not a missing database, a refused login or a bad query)."""
    if not isinstance(exc, (OperationalError, InterfaceError)):
        return False
    if getattr(exc, "connection_invalidated", False):
        return True
    return bool(_UNREACHABLE.search(" ".join(str(getattr(exc, "orig", None) or exc).split())))


def _first_clause(text: str) -> str:
    """The driver's reason, without its connection preamble and SQL."""
    text = text.split("[SQL:", 1)[0].split("(Background on this error", 1)[0]
    text = re.sub(r"^\(\S+\)\s*", "", text.strip())
    text = re.sub(r'^.*?failed:\s*', "", text)
    text = text.removeprefix("FATAL:").strip()
    return text[:200].rstrip(" .")
