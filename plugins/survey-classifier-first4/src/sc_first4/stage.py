"""The ``first4`` stage: FRI / FRII / Compact / Bent, by ONNX Runtime.

It reuses survey-classifier's ONNX stage machinery (session per process,
CUDA then CPU, preprocessing from the model's metadata) and only changes
the name and the shipped model, which lives inside this package. Like
every third-party stage it runs when named (``--stages measure,first4``)
or once enabled (``survey-classifier plugins enable first4``), never by
default.
"""

from survey_classifier.modelref import ShippedModel
from survey_classifier.stages.cnn import CNNStage

__all__ = ["First4Stage", "FIRST4_CNN", "MODEL_DIR"]

#: The model shipped with this plugin, registered as ``first4-cnn:1`` in every results database.
FIRST4_CNN = ShippedModel(
    name="first4-cnn",
    version="1",
    package="sc_first4",
    resource="model/model.onnx",
    sha256="b577e7c8a136228e7b628cce8bdc7ea5ac3ad4715f14f800dc94fc6ae5e45309",
    card="model/MODEL_CARD.md",
    metrics={"valid_accuracy": 0.763},
)
MODEL_DIR = FIRST4_CNN.path().parent


class First4Stage(CNNStage):
    """Four-class morphology of FIRST sources (FRI, FRII, Compact, Bent).

    Takes the parameters of :class:`survey_classifier.stages.cnn.CNNStage`;
    ``model`` defaults to the registry's default for ``first4`` (the
    ``first4-cnn:1`` model shipped with this plugin).
    """

    name = "first4"
    version = "1"
    enabled_by_default = False
    shipped_models = (FIRST4_CNN,)
