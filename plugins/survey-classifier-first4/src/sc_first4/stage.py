"""The ``first4`` stage: FRI / FRII / Compact / Bent, by ONNX Runtime.

It reuses survey-classifier's ONNX stage machinery (session per process,
CUDA then CPU, sha256 check, preprocessing from the model's metadata) and
only changes the name and the default model, which ships inside this
package.
"""

from pathlib import Path

from survey_classifier.stages.cnn import CNNStage

__all__ = ["First4Stage", "MODEL_DIR"]

MODEL_DIR = Path(__file__).resolve().parent / "model"


class First4Stage(CNNStage):
    """Four-class morphology of FIRST sources (FRI, FRII, Compact, Bent).

    Takes the parameters of :class:`survey_classifier.stages.cnn.CNNStage`;
    ``model`` defaults to the model shipped with this plugin.
    """

    name = "first4"
    version = "1"

    def _model_path(self) -> Path:
        return Path(self.model) if self.model is not None else MODEL_DIR
