import pytest

from sc_compactness.tuned import TunedCompactness
from survey_classifier.errors import ModelError
from survey_classifier.io.fits import read_cutout
from survey_classifier.synthetic import make_synthetic_cutouts
from survey_classifier.testing import check_stage


def test_tuned_compactness_conforms(tmp_path):
    make_synthetic_cutouts(tmp_path, n=6, seed=1)
    cutouts = [read_cutout(path) for path in sorted(tmp_path.glob("*.fits"))]
    stage = TunedCompactness()                       # no database: its shipped thresholds
    check_stage(stage, cutouts)
    assert stage.model_ref == "compactness-thresholds:1"


def test_an_unusable_thresholds_file_is_refused(tmp_path):
    bad = tmp_path / "thresholds.json"
    bad.write_text('{"min_ratio": 3}')
    with pytest.raises(ModelError, match="expected"):
        TunedCompactness.validate_artefact(bad)
