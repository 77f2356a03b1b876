"""Real workers reading their inputs from an object store (a local S3 server): cutout files, and cutouts cut
from mosaic tiles in a bucket, give the results of the same inputs read from local disk."""

from __future__ import annotations

import shutil

import pytest
from astropy.table import Table
from helpers.mosaics import stage_results

from survey_classifier.db import make_engine, upgrade
from survey_classifier.distributed import submit_run, wait_for_run
from survey_classifier.footprints import mosaic_sources
from survey_classifier.io.inputs import expand_inputs
from survey_classifier.io.mosaics import CutoutSize
from survey_classifier.pipeline import run_pipeline
from survey_classifier.query import query_results
from survey_classifier.stages.plan import build_stages
from survey_classifier.synthetic import make_synthetic_mosaic
from survey_classifier.workers.app import use_broker

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow]

STAGES = ["measure", "cnn", "som"]


def _local_results(tmp_path, name, sources):
    url = f"sqlite:///{tmp_path / f'{name}.db'}"
    upgrade(url)
    engine = make_engine(url)
    run_pipeline(sources, build_stages(STAGES, {}, engine), engine, batch_size=8)
    results = stage_results(query_results(engine))
    engine.dispose()
    return results


def test_workers_read_files_and_mosaics_from_a_bucket(s3_server, postgres_url, broker_url, workers, tmp_path,
                                                      mirabest_files):
    folder = tmp_path / "cutouts"
    folder.mkdir()
    for path in mirabest_files[200:224]:
        shutil.copy(path, folder)
    Table({"file": [p.name for p in mirabest_files[200:224]],
           "id": [f"MB{i}" for i in range(24)]}).write(folder / "catalogue.csv")
    make_synthetic_mosaic(tmp_path / "survey", n_sources=24, seed=8, tile_shape=(900, 900), overlap=160)
    files_url = s3_server.upload(folder, "s3://survey/cutouts")
    mosaic_url = s3_server.upload(tmp_path / "survey", "s3://survey/first")

    upgrade(postgres_url)
    engine = make_engine(postgres_url)
    use_broker(broker_url)
    worker = workers("s3", postgres_url, broker_url, env=s3_server.environment, concurrency=2)
    worker.wait_ready()
    stages = build_stages(STAGES, {}, engine)
    size = CutoutSize.parse("270arcsec")
    inputs = {
        "files": (expand_inputs([f"{files_url}/catalogue.csv"]), expand_inputs([str(folder / "catalogue.csv")])),
        "mosaic": (
            mosaic_sources(engine, [f"{mosaic_url}/catalogue.csv"], f"{mosaic_url}/tiles", size),
            mosaic_sources(engine, [str(tmp_path / "survey" / "catalogue.csv")], str(tmp_path / "survey" / "tiles"),
                           size),
        ),
    }
    for name, (in_bucket, on_disk) in inputs.items():
        assert all(s.path.startswith(("s3://", "mosaic:s3://")) for s in in_bucket)
        config = {"save_cutouts": "s3://survey/saved"} if name == "mosaic" else None  # as submit --save-cutouts
        run_id, n_batches = submit_run(engine, in_bucket, stages, batch_size=8, config=config)
        status = wait_for_run(engine, run_id, timeout_s=300)
        assert status.status == "finished" and status.n_failed == 0, (name, status, worker.log()[-3000:])
        from_workers = stage_results(query_results(engine, run_id=run_id))
        assert len(from_workers) == 24 and n_batches == 3
        assert from_workers == _local_results(tmp_path, name, on_disk), name
    saved = sorted(s3_server.filesystem().ls("survey/saved"))
    assert saved == sorted(f"survey/saved/{s.catalogue_id}.fits" for s in inputs["mosaic"][0])
    engine.dispose()
