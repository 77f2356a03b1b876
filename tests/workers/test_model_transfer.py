"""A worker on a machine that shares no files runs a model registered elsewhere.

The worker starts with an empty home, a model cache of its own and another
working directory; the model is trained and registered by this process from
a folder deleted before the run. Its bytes reach the worker only through the
results database; the worker checks their sha256 and stores the registry's
``name:version`` with every result.
"""

from __future__ import annotations

import shutil

import pytest
from sqlalchemy import func, select

from survey_classifier.checksum import sha256_file
from survey_classifier.cutout import CutoutSource
from survey_classifier.db import make_engine, upgrade
from survey_classifier.db.models import SOMPlacementRow
from survey_classifier.distributed import submit_run, wait_for_run
from survey_classifier.io.fits import read_cutout
from survey_classifier.preprocess import PreprocessConfig
from survey_classifier.registry import register_model
from survey_classifier.stages.plan import build_stages
from survey_classifier.workers.app import use_broker

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow]


def _train_tiny_som(files, folder):
    """A real 2x2 map on 24 cutouts (seconds): bytes no worker has seen."""
    from survey_classifier.som import RotationInvariantSOM

    config = PreprocessConfig(size=32)
    images = [read_cutout(path).preprocessed(config) for path in files]
    import numpy as np

    som = RotationInvariantSOM(grid_shape=(2, 2), neuron_size=32, region_diameter=24, n_rotations=24, n_epochs=1,
                               random_state=0, preprocess_config=config)
    som.fit(np.stack(images))
    return som.save(folder / "som.npz")


def test_an_isolated_worker_runs_a_model_it_has_never_seen(postgres_url, broker_url, workers, mirabest_files,
                                                            tmp_path, monkeypatch):
    upgrade(postgres_url)
    engine = make_engine(postgres_url)
    monkeypatch.setenv("SURVEY_CLASSIFIER_CACHE", str(tmp_path / "submitter-cache"))
    private = tmp_path / "registering-machine"
    private.mkdir()
    path = _train_tiny_som(mirabest_files[:24], private)
    sha256 = sha256_file(path)
    model = register_model(engine, path, stage="som", name="som-tiny", version="1", make_default=True)
    assert model["store"] == "database"
    shutil.rmtree(private)  # nothing of the registering process's files is left to share

    home, cache, workdir = (tmp_path / "worker" / name for name in ("home", "cache", "cwd"))
    for folder in (home, cache, workdir):
        folder.mkdir(parents=True)
    use_broker(broker_url)
    worker = workers("isolated", postgres_url, broker_url,
                     env={"HOME": str(home), "SURVEY_CLASSIFIER_CACHE": str(cache), "XDG_CACHE_HOME": str(home),
                          "MPLCONFIGDIR": str(home)})
    worker.wait_ready()
    stages = build_stages(["som"], {}, engine)
    assert stages[0].model_ref == "som-tiny:1"
    sources = [CutoutSource(str(p)) for p in mirabest_files[100:130]]
    run_id, n_batches = submit_run(engine, sources, stages, batch_size=10)
    status = wait_for_run(engine, run_id, timeout_s=300)
    assert status.status == "finished" and status.n_failed == 0, (status, worker.log()[-3000:])
    with engine.connect() as connection:
        stored = connection.execute(
            select(SOMPlacementRow.model_ref, SOMPlacementRow.model_sha256, func.count())
            .group_by(SOMPlacementRow.model_ref, SOMPlacementRow.model_sha256)
        ).all()
    assert stored == [("som-tiny:1", sha256, 30)]
    fetched = cache / "artefacts" / sha256 / "som.npz"
    assert fetched.is_file() and sha256_file(fetched) == sha256  # fetched from the database, verified
    assert "som 2 (som-tiny:1)" in worker.log()
    engine.dispose()
