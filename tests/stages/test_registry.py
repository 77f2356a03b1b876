"""Stage discovery through entry points, ordering and the declaration rules."""

import pytest

from survey_classifier.errors import StageConfigError
from survey_classifier.stages.base import Stage
from survey_classifier.stages.registry import available_stages, load_stage, order_stages


class _Needs(Stage):
    name = "needs_measure"
    version = "1"
    result_kind = "anomaly"
    requires = ("pixels", "stage:measure")

    def __init__(self, *, weight=1.0):
        self.weight = weight

    def process(self, batch):
        return [{"score": c.results["measure"]["peak_flux_jy"] * self.weight, "components": {}, "partial": False}
                for c in batch]


def test_builtin_measure_found_through_the_entry_point_group():
    stages = available_stages()
    assert "measure" in stages
    assert stages["measure"].__module__ == "survey_classifier.stages.measure"


def test_load_stage_unknown_name_lists_installed():
    with pytest.raises(StageConfigError, match="no stage named 'nope'.*measure"):
        load_stage("nope")


def test_load_stage_rejects_unknown_parameter():
    with pytest.raises(StageConfigError, match="rejected its parameters"):
        load_stage("measure", no_such_option=3)


def test_order_puts_requirements_first_and_refuses_missing():
    measure = load_stage("measure")
    needs = _Needs()
    assert [s.name for s in order_stages([needs, measure])] == ["measure", "needs_measure"]
    with pytest.raises(StageConfigError, match="requires the results of \\['measure'\\]"):
        order_stages([needs])


def test_declaration_errors_name_the_stage():
    with pytest.raises(TypeError, match="result_kind 'colour'"):
        type("Bad", (Stage,), {"name": "bad", "version": "1", "result_kind": "colour", "process": lambda s, b: []})
    with pytest.raises(TypeError, match="unknown requirement 'pixel'"):
        type("Bad", (Stage,), {"name": "bad", "version": "1", "result_kind": "som", "requires": ("pixel",),
                               "process": lambda s, b: []})


def test_positional_parameters_are_refused():
    class Positional(Stage):
        name = "positional"
        version = "1"
        result_kind = "measurement"

        def __init__(self, threshold=3.0):
            self.threshold = threshold

        def process(self, batch):
            return []

    with pytest.raises(TypeError, match="must be keyword-only"):
        Positional().get_params()
