"""The model of a stage used without a results database (tests, notebooks, the conformance kit).

Through ``classify`` and ``submit`` the registry resolves every model
(:func:`survey_classifier.registry.model_for`). Without a database, a
stage runs what its model parameter names, identified the same way:
its first shipped model when the parameter is None, a shipped model named
``NAME`` or ``NAME:VERSION``, or a file, which takes the identity of the
shipped model with the same bytes, else ``file:NAME@SHA256[:12]``.
"""

from __future__ import annotations

from pathlib import Path

from survey_classifier.artefacts import fetch
from survey_classifier.checksum import sha256_file
from survey_classifier.errors import StageConfigError
from survey_classifier.modelref import ModelRef

__all__ = ["offline_model"]


def offline_model(stage) -> ModelRef:
    """The :class:`ModelRef` (with its verified local path) ``stage`` runs without a registry."""
    spec = getattr(stage, stage.model_param)
    shipped = stage.shipped_models
    if spec is None:
        if not shipped:
            msg = (
                f"stage {stage.name!r} ships no model: give {stage.model_param}= a model file, or run it "
                "through classify/submit so that the registry's default is used"
            )
            raise StageConfigError(msg)
        return fetch(shipped[0].ref(stage.name))
    path = Path(str(spec)).expanduser()
    if path.exists():
        path = stage.artefact_file(path)
        sha256 = sha256_file(path)
        for model in shipped:
            if model.sha256 == sha256:
                return model.ref(stage.name).at(path)
        return ModelRef(
            stage=stage.name, name=path.name, version=sha256[:12], sha256=sha256, filename=path.name,
            store=f"file://{path.resolve()}", registered=False,
        ).at(path)
    for model in shipped:
        if str(spec) in (model.name, f"{model.name}:{model.version}"):
            return fetch(model.ref(stage.name))
    msg = (
        f"stage {stage.name!r}: {spec!r} is no file and no model shipped with the stage; registered models are "
        "resolved through the results database (classify or submit with --db)"
    )
    raise StageConfigError(msg)
