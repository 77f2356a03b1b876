"""The plugin's own tests: the core's conformance kit on real FIRST cutouts."""

import os
import warnings
from pathlib import Path

import pytest

from sc_first4 import First4Stage
from survey_classifier.errors import SurveyClassifierWarning
from survey_classifier.io.fits import read_cutout
from survey_classifier.stages.registry import available_stages
from survey_classifier.testing import check_stage

DATA = Path(os.environ.get("SURVEY_CLASSIFIER_DATA", Path(__file__).resolve().parents[4] / "shared" / "data"))


@pytest.fixture(scope="module")
def cutouts():
    paths = sorted((DATA / "mirabest" / "fits").glob("*.fits"))[::100]
    assert len(paths) >= 5, f"no FIRST cutouts found under {DATA}; set SURVEY_CLASSIFIER_DATA"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SurveyClassifierWarning)
        return [read_cutout(p) for p in paths]


def test_registered_through_the_entry_point():
    assert available_stages()["first4"] is First4Stage


def test_conforms(cutouts):
    check_stage(First4Stage(), cutouts)


def test_four_classes_summing_to_one(cutouts):
    stage = First4Stage()
    stage.setup()
    for result in stage.process(cutouts):
        assert set(result["probabilities"]) == {"FRI", "FRII", "Compact", "Bent"}
        assert abs(sum(result["probabilities"].values()) - 1) < 1e-5
