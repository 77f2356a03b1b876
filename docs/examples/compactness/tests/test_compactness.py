from sc_compactness.stage import Compactness
from survey_classifier.io.fits import read_cutout
from survey_classifier.synthetic import make_synthetic_cutouts
from survey_classifier.testing import check_stage


def test_compactness_conforms(tmp_path):
    make_synthetic_cutouts(tmp_path, n=6, seed=1)       # FIRST-like cutouts; or read your own
    cutouts = [read_cutout(path) for path in sorted(tmp_path.glob("*.fits"))]
    check_stage(Compactness(), cutouts)                 # runs measure first: Compactness requires it
