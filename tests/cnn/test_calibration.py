"""Calibration maths on known inputs (no TensorFlow needed)."""

import numpy as np
import pytest

from survey_classifier.cnn.calibration import (
    expected_calibration_error,
    fit_temperature,
    negative_log_likelihood,
    reliability_bins,
    softmax,
)
from survey_classifier.errors import StageConfigError


def test_ece_of_known_predictions():
    # bin (0.6, 0.667]: 0.65, 0.65 (one right)    -> |0.5 - 0.65| = 0.15, weight 2/5
    # bin (0.933, 1.0]: 0.95, 0.95, 1.0 (all right) -> |1 - 0.9667| = 0.0333, weight 3/5
    top = np.array([0.65, 0.65, 0.95, 0.95, 1.0])
    probabilities = np.stack([top, 1 - top], axis=1)
    targets = np.array([0, 1, 0, 0, 0])
    expected = 2 / 5 * 0.15 + 3 / 5 * abs(1 - (0.95 + 0.95 + 1.0) / 3)
    assert expected_calibration_error(probabilities, targets, 15) == pytest.approx(expected, abs=1e-12)
    table = reliability_bins(probabilities, targets, 15)
    assert table["count"].sum() == 5 and table["count"][9] == 2 and table["count"][14] == 3
    # perfectly calibrated: 4 at 0.75 with 3 right
    quarter = np.array([[0.75, 0.25]] * 4)
    assert expected_calibration_error(quarter, np.array([0, 0, 0, 1]), 15) == pytest.approx(0.0, abs=1e-12)


def test_temperature_undoes_a_known_overconfidence():
    rng = np.random.default_rng(1)
    true_logits = rng.normal(0, 1.5, size=(4000, 3))
    targets = np.array([rng.choice(3, p=p) for p in softmax(true_logits)])
    overconfident = 2.5 * true_logits  # a network whose logits are 2.5 times too large
    temperature = fit_temperature(overconfident, targets)
    assert temperature == pytest.approx(2.5, rel=0.1)
    assert negative_log_likelihood(overconfident, targets, temperature) < negative_log_likelihood(overconfident,
                                                                                                   targets, 1.0)
    before = expected_calibration_error(softmax(overconfident), targets)
    after = expected_calibration_error(softmax(overconfident / temperature), targets)
    assert after < 0.5 * before


def test_ensemble_members_share_one_temperature_and_empty_validation_is_refused():
    rng = np.random.default_rng(2)
    logits = rng.normal(0, 3, size=(2, 500, 2))
    targets = (softmax(logits[0] / 3)[:, 1] > rng.random(500)).astype(int)
    t = fit_temperature(logits, targets)
    nll = negative_log_likelihood(logits, targets, t)
    assert nll <= negative_log_likelihood(logits, targets, 1.0)
    assert nll <= min(negative_log_likelihood(logits, targets, t * f) for f in (0.9, 1.1))
    with pytest.raises(StageConfigError, match="validation part"):
        fit_temperature(logits[:, :0], targets[:0])
