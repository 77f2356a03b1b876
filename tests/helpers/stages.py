"""A small real classifier whose model is a file, bound the way the registry binds models."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from survey_classifier.checksum import sha256_file
from survey_classifier.modelref import ModelRef
from survey_classifier.stages.base import Stage

__all__ = ["PeakClassifier", "peak_classifier"]


class PeakClassifier(Stage):
    """Bright / faint by the peak flux (measured, else the brightest pixel); its model holds the threshold."""

    name = "peak"
    version = "1"
    result_kind = "classification"
    requires = ("pixels",)
    uses = ("stage:measure",)
    model_param = "model"

    def __init__(self, *, model=None):
        self.model = model

    def setup(self):
        self.threshold_jy_ = json.loads(self.model_.path.read_text())["threshold_jy"]

    def process(self, batch):
        self.setup()
        out = []
        for cutout in batch:
            measured = cutout.results.get("measure")
            peak = measured["peak_flux_jy"] if measured else float(np.nanmax(cutout.data))
            p_bright = float(1.0 / (1.0 + np.exp(-(peak - self.threshold_jy_) / 0.004)))
            probabilities = {"bright": p_bright, "faint": 1.0 - p_bright}
            out.append({"label": max(probabilities, key=probabilities.get), "probabilities": probabilities})
        return out


def peak_classifier(folder: Path, threshold_jy: float) -> PeakClassifier:
    """The stage bound, as the registry binds a model, to ``peak:THRESHOLD`` (a JSON file in ``folder``)."""
    path = Path(folder) / f"peak-{threshold_jy}.json"
    path.write_text(json.dumps({"threshold_jy": threshold_jy}))
    stage = PeakClassifier(model=f"peak:{threshold_jy}")
    ref = ModelRef(stage="peak", name="peak", version=str(threshold_jy), sha256=sha256_file(path),
                   filename=path.name, store=f"file://{path}")
    stage.bind_model(ref.at(path))
    return stage
