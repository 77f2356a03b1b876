"""Agreement between two models of a classification stage, on real cutouts run through the pipeline."""

import warnings

import numpy as np
import pytest
from astropy.io import fits
from helpers.stages import peak_classifier

from survey_classifier.compare import agreement_matrix, paired_labels
from survey_classifier.cutout import CutoutSource
from survey_classifier.db import make_engine, upgrade
from survey_classifier.errors import SurveyClassifierError
from survey_classifier.pipeline import run_pipeline


@pytest.fixture(scope="module")
def runs(tmp_path_factory, mirabest_files):
    folder = tmp_path_factory.mktemp("cmp")
    url = f"sqlite:///{folder / 'cmp.db'}"
    upgrade(url)
    engine = make_engine(url)
    files = mirabest_files[::30][:30]
    run_pipeline([CutoutSource(str(p)) for p in files], [peak_classifier(folder, 0.005)], engine)
    # the second model sees only the first 20 cutouts
    run_pipeline([CutoutSource(str(p)) for p in files[:20]], [peak_classifier(folder, 0.02)], engine)
    peaks = {}
    for path in files:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            peaks[str(path)] = float(np.nanmax(fits.getdata(path)))
    yield engine, files, peaks
    engine.dispose()


def test_matrix_counts_the_label_pairs(runs):
    engine, files, peaks = runs
    matrix = agreement_matrix(engine, "peak", "1@peak:0.005", "1@peak:0.02")
    expected = {}
    for path in files[:20]:
        pair = ("bright" if peaks[str(path)] > 0.005 else "faint", "bright" if peaks[str(path)] > 0.02 else "faint")
        expected[pair] = expected.get(pair, 0) + 1
    labels = list(matrix["label_a"])
    found = {(a, b): int(matrix[b][labels.index(a)]) for a in labels for b in labels if matrix[b][labels.index(a)]}
    assert found == expected
    assert matrix.meta["n_common"] == 20 and matrix.meta["n_only_a"] == 10 and matrix.meta["n_only_b"] == 0
    diagonal = sum(n for (a, b), n in expected.items() if a == b)
    assert matrix.meta["agreement"] == pytest.approx(diagonal / 20)
    assert ("faint", "bright") not in expected  # a higher threshold never turns faint into bright
    assert len(set(expected)) >= 2, "the cutouts chosen should not all agree: the test would prove little"


def test_a_model_agrees_with_itself(runs):
    engine, _, _ = runs
    matrix = agreement_matrix(engine, "peak", "1@peak:0.02", "1@peak:0.02")
    assert matrix.meta["agreement"] == 1.0 and matrix.meta["kappa"] == pytest.approx(1.0)
    pairs = paired_labels(engine, "peak", "1@peak:0.02", "1@peak:0.02")
    assert len(pairs) == 20 and list(pairs["label_a"]) == list(pairs["label_b"])


@pytest.mark.parametrize(
    "a, b, match",
    [
        ("2", "1@peak:0.02",
         "no classifications of stage 'peak' version '2'; stored: \\['1@peak:0.005', '1@peak:0.02'\\]"),
        ("1", "1@peak:0.02", "ran with several models"),
        ("1@peak:9", "1@peak:0.02", "has no results of model 'peak:9'"),
        ("@x", "1", "VERSION or VERSION@MODEL"),
    ],
)
def test_unknown_variants_are_named(runs, a, b, match):
    engine, _, _ = runs
    with pytest.raises(SurveyClassifierError, match=match):
        agreement_matrix(engine, "peak", a, b)


def test_stored_rows_carry_the_bound_model(runs):
    engine, _, _ = runs
    from sqlalchemy import select

    from survey_classifier.db.models import ClassificationRow

    with engine.connect() as connection:
        stored = set(connection.execute(select(ClassificationRow.model_ref, ClassificationRow.model_sha256)).all())
    assert {ref for ref, _ in stored} == {"peak:0.005", "peak:0.02"}
    assert all(len(sha) == 64 for _, sha in stored)


def test_cli_prints_the_matrix(runs):
    from click.testing import CliRunner

    from survey_classifier.cli import main as cli

    engine, _, _ = runs
    url = engine.url.render_as_string(hide_password=False)
    done = CliRunner().invoke(cli, ["models", "compare", "peak", "1@peak:0.005", "1@peak:0.02", "--db", url])
    assert done.exit_code == 0, done.output
    expected = agreement_matrix(engine, "peak", "1@peak:0.005", "1@peak:0.02").meta
    assert f"agreement {expected['agreement']:.3f}" in done.output and "20 cutouts classified by both" in done.output
    refused = CliRunner().invoke(cli, ["models", "compare", "peak", "7", "1", "--db", url])
    assert refused.exit_code == 1 and "no classifications of stage 'peak' version '7'" in refused.output
