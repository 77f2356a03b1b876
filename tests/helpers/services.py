"""Private Redis and PostgreSQL servers for tests that stop, restart or lose them.

Each is a real server process of the test's own, on a port of a range
that no shared service uses (``SURVEY_CLASSIFIER_TEST_PORTS`` may move the
ranges: ``REDIS_FIRST,POSTGRES_FIRST``), with its data in the test's
temporary folder.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

__all__ = ["PrivateRedis", "PrivatePostgres", "port_in_range"]

_REDIS_FIRST, _POSTGRES_FIRST = (
    int(p) for p in os.environ.get("SURVEY_CLASSIFIER_TEST_PORTS", "6420,25420").split(",")
)


def port_in_range(first: int, count: int = 10) -> int:
    """The first port of ``first`` .. ``first + count - 1`` nothing listens on and a server can bind.

    Nothing listening is not enough: a client's connection may hold the port as its local end (ports
    from 32768 up are the kernel's ephemeral ones, hence defaults below them), and a server's bind
    then fails with "Address already in use".
    """
    for port in range(first, first + count):
        if not _listening(port) and _bindable(port):
            return port
    msg = f"no free port in {first}-{first + count - 1}"
    raise RuntimeError(msg)


def _wait_for(ready, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not ready():
        if time.monotonic() > deadline:
            msg = f"{what} not ready after {timeout_s} s"
            raise RuntimeError(msg)
        time.sleep(0.05)


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def _bindable(port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers do: TIME_WAIT does not block
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


class PrivateRedis:
    """``redis-server`` on a port of its own; ``persistent=False`` runs it as the README does (no AOF, no RDB)."""

    def __init__(self, folder: Path, *, persistent: bool):
        self.binary = shutil.which("redis-server")
        if self.binary is None:
            msg = "redis-server is not installed"
            raise RuntimeError(msg)
        self.port = port_in_range(_REDIS_FIRST)
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.persistence = ["--appendonly", "yes", "--appendfsync", "always"] if persistent else ["--appendonly", "no"]
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.start()

    def start(self) -> None:
        subprocess.run(
            [self.binary, "--daemonize", "yes", "--bind", "127.0.0.1", "--port", str(self.port), "--dir",
             str(self.folder), "--save", "", *self.persistence, "--pidfile", str(self.folder / "redis.pid")],
            check=True, capture_output=True,
        )
        _wait_for(lambda: _listening(self.port), 20, f"redis on {self.port}")

    def stop(self) -> None:
        """Shut the server down (without saving: what it held in memory only is gone)."""
        subprocess.run([shutil.which("redis-cli") or "redis-cli", "-p", str(self.port), "shutdown", "nosave"],
                       capture_output=True)
        _wait_for(lambda: not _listening(self.port), 20, f"redis on {self.port} to stop")

    def client(self):
        import redis

        return redis.Redis.from_url(self.url)


class PrivatePostgres:
    """A PostgreSQL cluster of its own (``initdb``, ``pg_ctl``), trust authentication, database ``survey``."""

    def __init__(self, folder: Path):
        # PostgreSQL refuses to run as root: run it as the postgres user when we are root, in a
        # folder of its own (it cannot enter the test's private temporary folder).
        self.as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self.as_user:
            folder = Path(tempfile.mkdtemp(prefix="sc-test-postgres-"))
            shutil.chown(folder, "postgres")
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.port = port_in_range(_POSTGRES_FIRST)
        self.data = folder / "data"
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")
        self.start()
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "survey")
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/survey"

    def _run(self, *command: str) -> None:
        subprocess.run([*self.as_user, *command], check=True, capture_output=True)

    def start(self) -> None:
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.folder / "log"), "-w", "start")

    def stop(self, *, mode: str = "fast") -> None:
        """Stop the server: ``fast`` closes open connections, ``immediate`` is a crash (no shutdown checkpoint)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def close(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self.stop()
        if self.as_user:
            shutil.rmtree(self.folder, ignore_errors=True)
