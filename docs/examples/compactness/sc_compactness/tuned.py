"""A stage with a model: the compactness cut, its threshold kept in the model registry."""

import json
from pathlib import Path

from sc_compactness.stage import COLUMNS, compactness
from survey_classifier.errors import ModelError
from survey_classifier.modelref import ShippedModel
from survey_classifier.stages.base import Stage

#: sha256 of thresholds.json as released (`sha256sum sc_compactness/thresholds.json`)
THRESHOLDS_SHA256 = "67e58e9cbf0c9455549e6138f3eac4919bf704348703c048123eb59787c38f89"


def read_thresholds(path):
    """The thresholds in a JSON file, checked."""
    try:
        thresholds = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        msg = f"{Path(path).name} is not a JSON file of thresholds: {exc}"
        raise ModelError(msg) from exc
    ratio = thresholds.get("min_ratio") if isinstance(thresholds, dict) else None
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0 < ratio <= 1:
        msg = f'{Path(path).name}: expected {{"min_ratio": a number in (0, 1]}}, got {thresholds!r}'
        raise ModelError(msg)
    return thresholds


class TunedCompactness(Stage):
    name = "tuned_compactness"
    version = "1"
    result_kind = "classification"
    requires = ("pixels", "stage:measure")
    result_columns = COLUMNS
    model_param = "thresholds"            # None | "NAME[:VERSION]" | a file path
    shipped_models = (
        ShippedModel(name="compactness-thresholds", version="1", package="sc_compactness",
                     resource="thresholds.json", sha256=THRESHOLDS_SHA256),
    )

    def __init__(self, *, thresholds=None):
        self.thresholds = thresholds

    @classmethod
    def validate_artefact(cls, path: Path) -> dict:
        """Called by `models register`: open the file as setup() would; raise ModelError if unusable."""
        return read_thresholds(path)      # facts recorded with the registry entry

    def setup(self):
        self.thresholds_ = read_thresholds(self.model_.path)   # the verified local copy

    def process(self, batch):
        return [compactness(cutout.results["measure"], self.thresholds_["min_ratio"]) for cutout in batch]
