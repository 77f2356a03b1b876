"""The stage plugin API.

A stage is one class with a unique ``name``, a ``version``, keyword-only
parameters and one method, :meth:`Stage.process`, that turns a batch of
cutouts into one result per cutout. Stages are found through the Python
entry-point group ``survey_classifier.stages`` (see
:mod:`survey_classifier.stages.registry`); the built-in stages register
through that same group.

What a stage provides is one of the result kinds of the results database
(:data:`RESULT_KINDS`); each kind has required fields, and any further
keys a stage returns are stored with the result as ``extra``. A stage
describes those further fields in :attr:`Stage.result_columns` (unit, UCD,
description), as the database describes the kinds' own fields.
"""

from __future__ import annotations

import abc
import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from survey_classifier.columns import Column
from survey_classifier.errors import ModelError, StageConfigError
from survey_classifier.modelref import ModelRef, ShippedModel

__all__ = ["RESULT_KINDS", "Stage", "CutoutFailure", "Requirement"]

#: Fields every result of a kind must carry (more keys go to ``extra``).
RESULT_KINDS: dict[str, tuple[str, ...]] = {
    "measurement": (
        "peak_flux_jy",
        "integrated_flux_jy",
        "n_islands",
        "las_arcsec",
        "centroid_offset_arcsec",
    ),
    "classification": ("label", "probabilities"),
    "som": ("node_x", "node_y", "angle_deg", "flip", "distance"),
    "anomaly": ("score", "components", "partial"),
}

#: What a stage may need from a cutout before it can run.
Requirement = str
_INPUT_REQUIREMENTS = ("pixels", "wcs", "beam")


@dataclass(frozen=True)
class CutoutFailure:
    """Returned by :meth:`Stage.process` in place of the result of one cutout.

    The reason is stored against that cutout; the rest of the batch goes on.
    """

    reason: str


class Stage(abc.ABC):
    """Base class of every stage, built-in or third-party.

    Subclasses set the class attributes and implement :meth:`process`.
    ``__init__`` takes keyword-only parameters and stores each under its own
    name (as scikit-learn estimators do), so :meth:`get_params` can report
    them and a run records exactly how each stage was configured.

    Class attributes
    ----------------
    name : str
        Unique name, used on the command line and in the database.
    version : str
        Bump it whenever the stage's outputs change for the same input;
        results of a new version are stored beside the old ones.
    result_kind : str
        One of :data:`RESULT_KINDS`.
    requires : tuple of str
        ``"pixels"``, ``"wcs"``, ``"beam"``, or ``"stage:NAME"`` for the
        result of an earlier stage. A cutout lacking one gets a failure
        recorded for this stage instead of a call to :meth:`process`.
    uses : tuple of str
        ``"stage:NAME"`` results used when present but not required (the
        stage is handed whatever is there). They order the stages too.
    enabled_by_default : bool
        Whether ``classify`` runs the stage when ``--stages`` is not given.
        Honoured for survey-classifier's own stages only: a third-party stage
        runs when named with ``--stages`` or enabled with ``survey-classifier
        plugins enable NAME``.
    model_param : str or None
        The keyword parameter that names the stage's model: None (the
        registry's default for the stage), ``NAME[:VERSION]`` of a registered
        model, or the path of a model file. The registry resolves it into a
        :class:`~survey_classifier.modelref.ModelRef` and hands it to
        :meth:`bind_model`; the stage loads ``self.model_.path`` in
        :meth:`setup` and never derives its own identity.
    shipped_models : tuple of ShippedModel
        Models shipped inside the stage's package; the registry records them
        when a database is created or upgraded. The first is the stage's
        default: that of a new database (an existing one keeps its own), and
        what the stage runs when used without a database.
    model_companions : tuple of str
        Names of the files a model of this stage keeps beside its artefact
        (a SOM map's ``neurons.json``): ``models register`` takes those it
        finds beside the artefact, checks each with
        :meth:`validate_companion` and keeps it where the artefact is kept,
        with its sha256 (:meth:`ModelRef.companion <survey_classifier.modelref.ModelRef.companion>`).
    result_columns : tuple of Column
        The fields a result carries beyond those of its kind (stored as
        ``extra``) that come back as columns (numbers, text, flags), and the
        keys of the kind's mappings the stage fills (an anomaly stage's
        ``components``): each a :class:`~survey_classifier.columns.Column`
        with unit, UCD and description, named as the key. Queries show them
        as ``STAGE_KEY`` with that description; the conformance kit checks
        every such field a stage returns is declared.
    """

    name: ClassVar[str]
    version: ClassVar[str]
    result_kind: ClassVar[str]
    requires: ClassVar[tuple[Requirement, ...]] = ("pixels",)
    uses: ClassVar[tuple[Requirement, ...]] = ()
    enabled_by_default: ClassVar[bool] = False
    model_param: ClassVar[str | None] = None
    shipped_models: ClassVar[tuple[ShippedModel, ...]] = ()
    model_companions: ClassVar[tuple[str, ...]] = ()
    result_columns: ClassVar[tuple[Column, ...]] = ()

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        for attribute in ("model_ref", "model_sha256", "model_"):
            if attribute in cls.__dict__:
                msg = (
                    f"stage class {cls.__qualname__} must not define {attribute!r}: a model's identity comes "
                    "from the registry (Stage.bind_model), never from the stage"
                )
                raise TypeError(msg)
        if inspect.isabstract(cls):
            return
        for attribute in ("name", "version", "result_kind"):
            if not isinstance(getattr(cls, attribute, None), str):
                msg = f"stage class {cls.__qualname__} must define a string {attribute!r}"
                raise TypeError(msg)
        if cls.result_kind not in RESULT_KINDS:
            msg = (
                f"stage {cls.name!r} declares result_kind {cls.result_kind!r}; "
                f"expected one of {sorted(RESULT_KINDS)}"
            )
            raise TypeError(msg)
        for column in cls.result_columns:
            if not isinstance(column, Column):
                msg = f"stage {cls.name!r}: result_columns must hold survey_classifier.columns.Column, got {column!r}"
                raise TypeError(msg)
            try:
                column.checked()
            except ValueError as exc:
                msg = f"stage {cls.name!r}: {exc}"
                raise TypeError(msg) from None
        for requirement in (*cls.requires, *cls.uses):
            if requirement not in _INPUT_REQUIREMENTS and not requirement.startswith("stage:"):
                msg = (
                    f"stage {cls.name!r} has unknown requirement {requirement!r}; use one of "
                    f"{_INPUT_REQUIREMENTS} or 'stage:NAME'"
                )
                raise TypeError(msg)

    @classmethod
    def _param_names(cls) -> list[str]:
        signature = inspect.signature(cls.__init__)
        names = []
        for parameter in list(signature.parameters.values())[1:]:
            if parameter.kind is parameter.VAR_KEYWORD:
                continue
            if parameter.kind is not parameter.KEYWORD_ONLY:
                msg = f"stage {cls.name!r}: parameter {parameter.name!r} must be keyword-only"
                raise TypeError(msg)
            names.append(parameter.name)
        return names

    def get_params(self) -> dict[str, Any]:
        """The keyword parameters this stage was built with.

        Raises
        ------
        StageConfigError
            When ``__init__`` did not store a parameter under its own name
            (the rule that lets a run record, and a worker rebuild, the stage).
        """
        params = {}
        for name in self._param_names():
            try:
                params[name] = getattr(self, name)
            except AttributeError as exc:
                msg = (
                    f"stage {self.name!r} ({type(self).__qualname__}): __init__ takes the parameter {name!r} but "
                    f"does not store it as self.{name}; store every keyword parameter under its own name "
                    f"(self.{name} = {name}), as runs record the parameters and workers rebuild the stage "
                    f"from them (derived values belong in setup(), or in attributes ending in '_')"
                )
                raise StageConfigError(msg) from exc
        return params

    # -- the model ------------------------------------------------------
    @classmethod
    def validate_artefact(cls, path: Path) -> dict[str, Any]:  # noqa: ARG003 (the hook's signature)
        """Check that ``path`` is a model this stage can run; called by ``models register``.

        Stages with a model override it: open the artefact as :meth:`setup`
        would and compare it with what the stage needs (input shape against
        the preprocessing, settings, versions). Returns JSON-ready facts
        recorded with the registry entry.

        Raises
        ------
        ModelError
            With one line saying what is wrong with the file.
        """
        msg = f"stage {cls.name!r} takes no model"
        raise ModelError(msg)

    @classmethod
    def validate_companion(cls, path: Path, artefact: Path) -> dict[str, Any]:  # noqa: ARG003 (the hook's signature)
        """Check that the file ``path`` (one of :attr:`model_companions`) belongs with the model ``artefact``.

        Called by ``models register`` after :meth:`validate_artefact`, before
        anything is kept. Returns JSON-ready facts recorded with the file.

        Raises
        ------
        ModelError
            With one line saying why the file does not fit the model.
        """
        msg = f"stage {cls.name!r} keeps no files beside its model (model_companions is empty)"
        raise ModelError(msg)

    @classmethod
    def artefact_file(cls, path: Path) -> Path:
        """The artefact file a user-given path names (a folder may name the file inside it)."""
        if not path.is_file():
            msg = f"stage {cls.name!r}: the model {path} is not a file"
            raise ModelError(msg)
        return path

    def bind_model(self, ref: ModelRef) -> None:
        """Run the model ``ref``, whose bytes are at ``ref.path`` (fetched and verified)."""
        if self.model_param is None:
            msg = f"stage {self.name!r} takes no model, but was handed {ref.ref}"
            raise StageConfigError(msg)
        if ref.stage != self.name:
            msg = f"stage {self.name!r} was handed {ref.ref}, a model of stage {ref.stage!r}"
            raise StageConfigError(msg)
        if ref.path is None:
            msg = f"stage {self.name!r}: model {ref.ref} has no local copy; fetch it first (artefacts.fetch)"
            raise StageConfigError(msg)
        self._bound_model = ref

    @property
    def model_(self) -> ModelRef | None:
        """The model this stage runs (None for a stage without one).

        Bound by the registry (:meth:`bind_model`); a stage used without a
        database runs the file its model parameter names, or its first
        shipped model.
        """
        if self.model_param is None:
            return None
        if getattr(self, "_bound_model", None) is None:
            from survey_classifier.stages._offline import offline_model

            self.bind_model(offline_model(self))
        return self._bound_model

    @property
    def model_ref(self) -> str:
        """``"name:version"`` of the model this stage runs, or ``""``.

        Part of the identity of a result: a new model version stores its
        results beside those of the old one.
        """
        model = self.model_
        return "" if model is None else model.ref

    @property
    def model_sha256(self) -> str | None:
        """sha256 of the model this stage runs, stored beside ``model_ref``."""
        model = self.model_
        return None if model is None else model.sha256

    @property
    def preprocess_config(self):
        """The :class:`~survey_classifier.preprocess.PreprocessConfig` this stage
        reads through ``cutout.preprocessed(config)``, or None.

        The pipeline prepares (and times) it before calling :meth:`process`,
        and records a preprocessing failure against the cutout.
        """
        return None

    @property
    def stage_requirements(self) -> tuple[str, ...]:
        """Names of the earlier stages whose results this stage needs."""
        return tuple(r.split(":", 1)[1] for r in self.requires if r.startswith("stage:"))

    @property
    def stage_uses(self) -> tuple[str, ...]:
        """Names of earlier stages whose results this stage takes if present."""
        return tuple(r.split(":", 1)[1] for r in self.uses if r.startswith("stage:"))

    def describe(self) -> dict[str, Any]:
        """JSON-ready description recorded with every run."""
        model = self.model_
        return {
            "name": self.name,
            "version": self.version,
            "result_kind": self.result_kind,
            "model": self.model_ref,
            "model_sha256": self.model_sha256,
            "model_artefact": None if model is None else model.to_message(),
            "params": {k: _jsonable(v) for k, v in self.get_params().items()},
        }

    def setup(self) -> None:
        """Load expensive resources (model sessions); called once per process.

        The default does nothing. It runs before the first batch, so
        constructing a stage stays cheap (e.g. for ``plugins list``).
        """

    def after_run(self, connection, run_id: int) -> None:
        """Called once when every batch of a run is stored, inside a transaction.

        For results that depend on the whole run (e.g. anomaly ranks and
        percentiles). The default does nothing.
        """

    @abc.abstractmethod
    def process(self, batch: Sequence) -> list[dict[str, Any] | CutoutFailure]:
        """Process a batch of :class:`~survey_classifier.cutout.Cutout`.

        Returns one entry per cutout, in order: a dict holding the fields of
        :data:`RESULT_KINDS` for ``result_kind`` (more keys are kept as
        ``extra``), or a :class:`CutoutFailure`. An exception raised here is
        caught by the pipeline, which then processes the batch one cutout at
        a time so that only the cutout at fault is marked failed.

        Earlier stages' results are in ``cutout.results[stage_name]``.
        """

    def __repr__(self) -> str:
        try:
            params = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        except StageConfigError:  # a repr never raises; get_params() says what is wrong
            params = "..."
        return f"{type(self).__name__}({params})"


def _jsonable(value):
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return str(value)


def check_result(stage: Stage, result: Any) -> None:
    """Raise :class:`StageConfigError` unless ``result`` fits the stage's kind."""
    if isinstance(result, CutoutFailure):
        return
    if not isinstance(result, dict):
        msg = f"stage {stage.name!r} returned {type(result).__name__}, expected a dict or CutoutFailure"
        raise StageConfigError(msg)
    missing = [key for key in RESULT_KINDS[stage.result_kind] if key not in result]
    if missing:
        msg = f"stage {stage.name!r} result lacks {missing} required for kind {stage.result_kind!r}"
        raise StageConfigError(msg)
