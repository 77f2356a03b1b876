"""`models register` killed or out of disk: nothing partial is kept, the error is one line, registering again works.

Each case runs the real command in a subprocess. A full disk is a file size
limit (``RLIMIT_FSIZE``: writes past it fail with ``EFBIG``, as they fail
with ``ENOSPC`` on a full disk); a crash is a SIGKILL sent while the
artefact's bytes are being written (seen on disk: the store's temporary
file, or SQLite's write-ahead log, growing).
"""

from __future__ import annotations

import os
import resource
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select

from survey_classifier.artefacts import fetch
from survey_classifier.checksum import sha256_file
from survey_classifier.db import make_engine, upgrade
from survey_classifier.db.models import ModelRow
from survey_classifier.registry import register_model, stored_ref
from survey_classifier.stages.anomaly import DEFAULT_SCORER

#: Bytes a process may write to one file: about half of the scorer artefact (300 kB).
LIMIT = 150_000
COMMAND = str(Path(sys.executable).with_name("survey-classifier"))


@pytest.fixture
def place(tmp_path, monkeypatch):
    monkeypatch.setenv("SURVEY_CLASSIFIER_CACHE", str(tmp_path / "cache"))
    url = f"sqlite:///{tmp_path / 'models.db'}"
    upgrade(url)
    engine = make_engine(url)
    yield {"url": url, "engine": engine, "db": tmp_path / "models.db", "store": tmp_path / "store",
           "artefact": DEFAULT_SCORER}
    engine.dispose()


def _register(place: dict, store: str, *, limit: int | None = LIMIT):
    arguments = [COMMAND, "models", "register", "--db", place["url"], "--stage", "anomaly", "--name", "scorer",
                 "--version", "7", str(place["artefact"])]
    if store == "file":
        arguments[-1:-1] = ["--store", place["store"].as_uri()]

    def limited():
        if limit is not None:  # writes past the limit fail with EFBIG (Python ignores SIGXFSZ)
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return subprocess.Popen(arguments, preexec_fn=limited, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=os.environ)


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def _check_nothing_partial(place: dict) -> None:
    """No row without its bytes, no file under its real name that is not the whole artefact."""
    expected = sha256_file(place["artefact"])
    for found in _files(place["store"]):
        if not found.name.startswith("."):
            assert sha256_file(found) == expected, f"partial file {found.name} under its real name"
    with sqlite3.connect(place["db"]) as connection:
        assert connection.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    with place["engine"].connect() as connection:
        rows = connection.execute(select(ModelRow.id).where(ModelRow.name == "scorer")).all()
    if rows:  # recorded: its bytes are whole
        assert fetch(stored_ref(place["engine"], "scorer:7"), place["engine"]).path is not None


def _register_again(place: dict, store: str) -> None:
    """Registering the same name:version works, and leaves only the whole file in the store."""
    where = {"store": place["store"].as_uri()} if store == "file" else {}
    model = register_model(place["engine"], place["artefact"], stage="anomaly", name="scorer", version="7", **where)
    assert model["sha256"] == sha256_file(place["artefact"])
    assert fetch(stored_ref(place["engine"], "scorer:7"), place["engine"]).path.is_file()
    if store == "file":
        assert [p.name for p in _files(place["store"])] == ["scorer.npz"]  # the killed writer's temporary is gone


@pytest.mark.parametrize("store", ["database", "file"])
def test_a_full_disk_is_one_line_and_leaves_nothing(place, store):
    done = _register(place, store)
    _, err = done.communicate(timeout=120)
    assert done.returncode == 1, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), err
    assert "size limit" in lines[0] and "nothing was kept" in lines[0]
    assert _files(place["store"]) == []
    _check_nothing_partial(place)
    _register_again(place, store)


@pytest.fixture
def large_scorer(tmp_path) -> Path:
    """The shipped scorer with 40 MB more in it: a write long enough to be killed in the middle of."""
    arrays = dict(np.load(DEFAULT_SCORER))
    arrays["padding"] = np.random.default_rng(1).integers(0, 255, 40_000_000, dtype=np.uint8)
    np.savez(tmp_path / "scorer.npz", **arrays)
    return tmp_path / "scorer.npz"


def _writing(place: dict, store: str) -> bool:
    if store == "file":
        return any(p.name.startswith(".scorer.npz.") for p in place["store"].glob("*/*"))
    wal = place["db"].with_name(place["db"].name + "-wal")
    return wal.exists() and wal.stat().st_size > 2_000_000


@pytest.mark.parametrize("store", ["database", "file"])
def test_sigkill_in_the_middle_of_the_write_leaves_nothing_partial(place, store, large_scorer):
    place["artefact"] = large_scorer
    running = _register(place, store, limit=None)
    deadline = time.monotonic() + 120
    while not _writing(place, store) and running.poll() is None and time.monotonic() < deadline:
        time.sleep(0.001)
    running.send_signal(signal.SIGKILL)
    running.communicate(timeout=60)
    assert running.returncode == -signal.SIGKILL, "the command ended before its write could be killed"
    if store == "file":  # killed inside the write: its temporary is there, the real name is not
        assert [p.name.startswith(".scorer.npz.") for p in _files(place["store"])] == [True]
    _check_nothing_partial(place)
    with place["engine"].connect() as connection:
        assert connection.execute(select(ModelRow.id).where(ModelRow.name == "scorer")).first() is None
    _register_again(place, store)
