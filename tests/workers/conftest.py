"""Real Redis, real PostgreSQL and real worker processes for the distributed tests."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from helpers.services import PrivatePostgres, PrivateRedis

BIN = Path(sys.executable).parent
REDIS_URL = os.environ.get("SURVEY_CLASSIFIER_TEST_REDIS", "redis://127.0.0.1:6379")


def _redis_ok(url: str) -> str | None:
    import redis

    try:
        redis.Redis.from_url(url, socket_connect_timeout=2).ping()
        return None
    except Exception as exc:
        return str(exc)


@pytest.fixture
def broker_url():
    """A Redis database of its own on the machine's Redis, flushed before and after."""
    import redis

    problem = _redis_ok(REDIS_URL)
    if problem:
        if os.environ.get("CI"):
            pytest.fail(f"Redis at {REDIS_URL} is required in CI: {problem}")
        pytest.skip(f"Redis not reachable: {problem}")
    url = f"{REDIS_URL}/{random.randint(1, 15)}"
    client = redis.Redis.from_url(url)
    client.flushdb()
    yield url
    client.flushdb()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Worker:
    """A `survey-classifier worker` process (and its pool) in its own process group."""

    def __init__(self, name: str, db_url: str, broker: str, log_dir: Path, env: dict | None = None, concurrency=1):
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        environment = dict(os.environ, **(env or {}))
        environment.setdefault("SURVEY_CLASSIFIER_STALL_AFTER", "6")
        self._log_file = open(self.log_path, "w")
        self.process = subprocess.Popen(
            [str(BIN / "survey-classifier"), "worker", "--db", db_url, "--broker", broker,
             "--queues", "cpu", "-c", str(concurrency), "-n", f"{name}@%h", "--loglevel", "INFO"],
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            env=environment,
            start_new_session=True,
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout=90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if " ready." in self.log():
                return
            if self.process.poll() is not None:
                pytest.fail(f"worker {self.name} exited with {self.process.returncode}:\n{self.log()[-3000:]}")
            time.sleep(0.2)
        pytest.fail(f"worker {self.name} not ready after {timeout} s:\n{self.log()[-3000:]}")

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL the whole worker: main process and pool children."""
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait(timeout=30)
        self._log_file.close()

    def stop(self) -> None:
        if self.alive:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()
        self._log_file.close()


@pytest.fixture
def workers(tmp_path):
    """Factory of worker processes, all stopped at the end of the test."""
    started: list[Worker] = []

    def start(name, db_url, broker, **kwargs) -> Worker:
        worker = Worker(name, db_url, broker, tmp_path, **kwargs)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()


SLOW_PLUGIN = '''
"""A third-party stage installed for the tests: measure, slowly (for killing mid-batch)."""
import time
from survey_classifier.stages.measure import MeasureStage


class SlowMeasure(MeasureStage):
    name = "slow_measure"

    def __init__(self, *, delay_s=0.05, threshold_sigma=3.0):
        super().__init__(threshold_sigma=threshold_sigma)
        self.delay_s = delay_s

    def process(self, batch):
        time.sleep(self.delay_s * len(batch))
        return super().process(batch)
'''


@pytest.fixture
def slow_plugin(tmp_path, monkeypatch):
    """Install a real plugin distribution (a dist-info with an entry point) on a path."""
    site = tmp_path / "site"
    (site / "slow_plugin-0.1.dist-info").mkdir(parents=True)
    (site / "slow_plugin.py").write_text(textwrap.dedent(SLOW_PLUGIN))
    metadata = "Metadata-Version: 2.1\nName: slow-plugin\nVersion: 0.1\n"
    (site / "slow_plugin-0.1.dist-info" / "METADATA").write_text(metadata)
    (site / "slow_plugin-0.1.dist-info" / "entry_points.txt").write_text(
        "[survey_classifier.stages]\nslow_measure = slow_plugin:SlowMeasure\n"
    )
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")])))
    return site


class TCPProxy:
    """Forwards a local port to PostgreSQL; `outage()` makes the database unreachable."""

    def __init__(self, target_port=5432):
        self.port = free_port()
        self.target = ("127.0.0.1", target_port)
        self.up = threading.Event()
        self.up.set()
        self.connections: list[socket.socket] = []
        self.every_socket: list[socket.socket] = []
        self.server = socket.create_server(("127.0.0.1", self.port))
        self.server.settimeout(0.2)
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.closed:
            try:
                client, _ = self.server.accept()
            except (TimeoutError, OSError):
                continue
            if not self.up.is_set():
                client.close()
                continue
            if self.closed:
                client.close()
                return
            upstream = socket.create_connection(self.target)
            self.connections += [client, upstream]
            self.every_socket += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source, sink):
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def outage(self, seconds: float) -> None:
        """Drop every open connection and refuse new ones for `seconds`."""
        self.up.clear()
        for s in self.connections:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.connections.clear()
        time.sleep(seconds)
        self.up.set()

    def close(self):
        self.closed = True
        self.server.close()
        for s in self.every_socket:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()


@pytest.fixture
def pg_proxy():
    proxy = TCPProxy()
    yield proxy
    proxy.close()


@pytest.fixture
def own_redis(tmp_path):
    """A Redis server of the test's own, on another port, persisting to an AOF."""
    server = PrivateRedis(tmp_path / "redis", persistent=True)
    yield server
    server.stop()


@pytest.fixture
def pg(postgres_url):
    """The shared PostgreSQL test database, upgraded: its URL and an engine."""
    from survey_classifier.db import make_engine, upgrade

    upgrade(postgres_url)
    engine = make_engine(postgres_url)
    yield postgres_url, engine
    engine.dispose()


@pytest.fixture
def private_broker(tmp_path):
    """A Redis server of the test's own (no other session's worker can take its messages); its URL."""
    server = PrivateRedis(tmp_path / "private-redis", persistent=False)
    yield server.url
    server.stop()


@pytest.fixture
def private_postgres(tmp_path):
    """A PostgreSQL server of the test's own, upgraded to the current schema, to stop and start at will."""
    server = PrivatePostgres(tmp_path / "postgres")
    from survey_classifier.db import upgrade

    upgrade(server.url)
    yield server
    server.close()


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry))
    return found


def _rss_bytes(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, IndexError, ValueError):
        return 0


class MemoryWatchdog:
    """SIGKILLs a worker's pool process whose resident memory passes ``limit_bytes``, as a container's
    OOM killer would; counts the kills."""

    def __init__(self, worker: Worker, limit_bytes: int, poll_s: float = 0.02):
        self.worker = worker
        self.limit_bytes = limit_bytes
        self.poll_s = poll_s
        self.kills: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._stop.is_set():
            for pid in _children(self.worker.process.pid):
                if _rss_bytes(pid) > self.limit_bytes:
                    try:
                        os.kill(pid, signal.SIGKILL)
                        self.kills.append(pid)
                    except ProcessLookupError:
                        pass
            time.sleep(self.poll_s)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


@pytest.fixture
def memory_watchdog():
    """Factory: ``memory_watchdog(worker, limit_bytes)``; every watchdog is stopped at the end of the test."""
    started: list[MemoryWatchdog] = []

    def start(worker, limit_bytes) -> MemoryWatchdog:
        watchdog = MemoryWatchdog(worker, limit_bytes)
        started.append(watchdog)
        return watchdog

    yield start
    for watchdog in started:
        watchdog.stop()
