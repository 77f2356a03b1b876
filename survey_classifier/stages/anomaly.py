"""The ``anomaly`` stage: one combined oddness score per cutout, with its parts.

It combines the measurements, the SOM placement and the CNN output of the same cutout through
a fitted :class:`~survey_classifier.anomaly.AnomalyScorer` (see that module
for the components and the combination), and, once a run is complete,
ranks the run's cutouts (rank 1 = most anomalous) and gives each its
percentile within the run.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from sqlalchemy import bindparam, select, update

from survey_classifier.columns import Column
from survey_classifier.errors import ModelError, StageConfigError
from survey_classifier.modelref import ShippedModel
from survey_classifier.stages.base import CutoutFailure, Stage

__all__ = ["AnomalyStage", "DEFAULT_SCORER", "ANOMALY_MIRABEST", "ANOMALY_MIRABEST_4", "ANOMALY_MIRABEST_5",
           "upstream_matches"]

#: What each component of the score measures (see :mod:`survey_classifier.anomaly.scorer`).
_COMPONENTS = {
    "som_distance": "SOM distance over the distance typical of that node in the reference catalogue",
    "cnn_entropy": "Entropy of the CNN class probabilities over log(number of classes): 0 certain, 1 uniform",
    "embedding_knn": "Mean distance to the nearest reference embeddings of the CNN",
    "embedding_iforest": "Isolation-forest anomaly score in the CNN embedding space",
    "asymmetry": "Rotational asymmetry of the emission, from the measure stage",
}


def _component_columns() -> tuple[Column, ...]:
    columns = []
    for name, description in _COMPONENTS.items():
        columns.append(Column(name, f"Anomaly component: {description}", unit="", ucd="stat.value", format=".4g"))
        columns.append(Column(f"{name}_pct", f"Percentile (0-1) of {name} in the reference catalogue", unit="",
                              ucd="stat.value", format=".4f"))
    return tuple(columns)

#: Scorer fitted on MiraBest with the distances of ``som-mirabest:1`` and ``fr-cnn:1``; the default of
#: databases made before version 4 was shipped.
ANOMALY_MIRABEST = ShippedModel(
    name="anomaly-mirabest",
    version="3",
    package="survey_classifier",
    resource="models/anomaly-mirabest/scorer.npz",
    sha256="b6fffd2e5d33953468e8aa405685b3583a73967d949db06f0b6055702338877c",
    card="models/anomaly-mirabest/MODEL_CARD.md",
    metrics={"auroc_rare_mirabest": 0.699},
)
#: The same components and weights fitted on the morphology map ``som-mirabest:3`` and ``fr-cnn:1`` (#20):
#: the default of a new results database (with ``som-mirabest:3``); registered beside version 3 in older
#: ones, where ``models set-default som-mirabest 3`` and ``models set-default anomaly-mirabest 4`` switch both.
ANOMALY_MIRABEST_4 = ShippedModel(
    name="anomaly-mirabest",
    version="4",
    package="survey_classifier",
    resource="models/anomaly-mirabest-4/scorer.npz",
    sha256="82de08faf2c689d68d5e1907c16b53fbd67a22e7df1d58b03979f9ee755a0345",
    card="models/anomaly-mirabest-4/MODEL_CARD.md",
    metrics={"auroc_rare_mirabest": 0.705},
)
#: Version 4 refitted on ``fr-cnn:3``'s results (#16): the scorer to run with that CNN, which version 4 refuses
#: (it is pinned to fr-cnn:1's bytes); registered in every database, not the default, as fr-cnn:3 is not.
ANOMALY_MIRABEST_5 = ShippedModel(
    name="anomaly-mirabest",
    version="5",
    package="survey_classifier",
    resource="models/anomaly-mirabest-5/scorer.npz",
    sha256="95e3d32bb0883ae25802592b645f43b13f8e925f5f425d7c1baf4a99e8a72dc2",
    card="models/anomaly-mirabest-5/MODEL_CARD.md",
    metrics={"auroc_rare_mirabest": 0.717},
)
#: The default scorer's file in the installed package.
DEFAULT_SCORER = ANOMALY_MIRABEST_4.path()

#: An upstream reference written before the registry named every model: ``STAGE:FOLDER/FILE@SHA256[:12]``.
_FILE_DERIVED_REF = re.compile(r"^[A-Za-z0-9_]+:[^@]+@(?P<sha>[0-9a-f]{12})$")


def upstream_matches(
    fitted: str, fitted_sha256: str, version: str, model_ref: str, model_sha256: str | None
) -> bool:
    """Whether results of stage ``version`` by a model are those a scorer was fitted on.

    ``fitted`` is the scorer's ``VERSION@REF``. The model must be the same
    bytes (``fitted_sha256``) whatever its name; a scorer that recorded no
    sha256 needs the same ref, except that scorers fitted before the
    registry named every model recorded a SOM by its file
    (``som:FOLDER/FILE@SHA256[:12]``): those match on the bytes too.
    """
    fitted_version, _, fitted_ref = fitted.partition("@")
    if fitted_version != version:
        return False
    if fitted_sha256:
        return fitted_sha256 == model_sha256
    legacy = _FILE_DERIVED_REF.match(fitted_ref)
    if legacy is not None:
        return bool(model_sha256) and model_sha256.startswith(legacy.group("sha"))
    return fitted_ref == model_ref


class AnomalyStage(Stage):
    """Score how odd each cutout is, from its measure, SOM and CNN results.

    Parameters
    ----------
    scorer : str or None
        ``NAME[:VERSION]`` of a registered scorer, or the path of one written
        by ``survey-classifier train anomaly``; None: the registry's default
        (``anomaly-mirabest:4`` in a new database).
    """

    name = "anomaly"
    version = "2"  # 2: asymmetry component, weighted combination
    result_kind = "anomaly"
    requires = ("pixels",)
    uses = ("stage:measure", "stage:som", "stage:cnn")
    enabled_by_default = True
    model_param = "scorer"
    shipped_models = (ANOMALY_MIRABEST_4, ANOMALY_MIRABEST, ANOMALY_MIRABEST_5)  # the first is the default
    result_columns = _component_columns()

    def __init__(self, *, scorer=None):
        self.scorer = scorer

    @classmethod
    def validate_artefact(cls, path: Path) -> dict:
        """A scorer file whose components are known and whose measure version is installed."""
        from survey_classifier.anomaly.scorer import AnomalyScorer
        from survey_classifier.stages.measure import MeasureStage

        try:
            scorer = AnomalyScorer.load(path)
        except (ModelError, ValueError, OSError, KeyError) as exc:
            msg = f"{Path(path).name} is not an anomaly scorer written by `survey-classifier train anomaly`: {exc}"
            raise ModelError(msg) from exc
        fitted = scorer.measure_ref.partition("@")[0]
        if fitted and fitted != MeasureStage.version:
            msg = (
                f"{Path(path).name} was fitted on measure stage {fitted} results, but the installed measure "
                f"stage is version {MeasureStage.version}: it could never run; refit it with "
                "`survey-classifier train anomaly`"
            )
            raise ModelError(msg)
        return {"components": sorted(scorer.reference_), "som_ref": scorer.som_ref, "cnn_ref": scorer.cnn_ref,
                "measure_ref": scorer.measure_ref}

    def setup(self) -> None:
        if not hasattr(self, "_scorer"):
            self._scorer = _load_scorer_once(self.model_.path, self.model_.sha256)

    def _check_versions(self, cutout) -> None:
        scorer = self._scorer
        fitted_on = (
            ("measure", scorer.measure_ref, ""),
            ("som", scorer.som_ref, scorer.som_sha256),
            ("cnn", scorer.cnn_ref, scorer.cnn_sha256),
        )
        for stage, fitted, fitted_sha256 in fitted_on:
            if stage not in cutout.provenance or not fitted:
                continue
            version, model, sha256 = cutout.provenance[stage]
            if not upstream_matches(fitted, fitted_sha256, version, model, sha256):
                given = f"{version}@{model}"
                were = f"{fitted} (sha256 {fitted_sha256[:12]}…)" if fitted_sha256 else fitted
                are = f"{given} (sha256 {(sha256 or '')[:12]}…)" if fitted_sha256 else given
                msg = (
                    f"the anomaly scorer {self.model_ref} was fitted on {stage} results {were} "
                    f"but this run's {stage} results come from {are}; refit it with "
                    f"`survey-classifier train anomaly` on results of {given}"
                )
                raise StageConfigError(msg)

    def process(self, batch):
        self.setup()
        for cutout in batch:
            self._check_versions(cutout)
        scored = self._scorer.score(
            [c.results.get("som") for c in batch],
            [c.results.get("cnn") for c in batch],
            [c.results.get("measure") for c in batch],
        )
        out = []
        for result in scored:
            if result["score"] is None:
                if result["components"]:
                    reason = (
                        f"none of the components present ({', '.join(result['components'])}) has a weight "
                        f"in scorer {self.model_ref}; missing: {', '.join(result['missing'])}"
                    )
                else:
                    reason = f"no upstream result to score (missing: {', '.join(result['missing'])})"
                out.append(CutoutFailure(reason))
                continue
            out.append(
                {
                    "score": result["score"],
                    "components": {
                        **result["components"],
                        **{f"{k}_pct": v for k, v in result["percentiles"].items()},
                    },
                    "partial": result["partial"],
                    "missing": result["missing"],
                }
            )
        return out

    def after_run(self, connection, run_id: int) -> None:
        """Rank the run's scores (1 = most anomalous) and set their percentiles."""
        from survey_classifier.db.models import AnomalyScoreRow

        table = AnomalyScoreRow.__table__
        rows = connection.execute(
            select(table.c.id, table.c.score).where(
                table.c.run_id == run_id,
                table.c.stage == self.name,
                table.c.stage_version == self.version,
                table.c.model_ref == self.model_ref,
                table.c.score.is_not(None),
            )
        ).all()
        if not rows:
            return
        ids = np.array([r.id for r in rows])
        scores = np.array([r.score for r in rows], dtype=float)
        order = np.argsort(-scores, kind="stable")
        ranks = np.empty(len(rows), dtype=np.int64)
        ranks[order] = np.arange(1, len(rows) + 1)
        below = np.searchsorted(np.sort(scores), scores, side="right")
        percentiles = 100.0 * below / len(scores)
        statement = update(table).where(table.c.id == bindparam("row_id")).values(
            rank=bindparam("new_rank"), percentile=bindparam("new_percentile")
        )
        connection.execute(
            statement,
            [
                {"row_id": int(i), "new_rank": int(r), "new_percentile": float(p)}
                for i, r, p in zip(ids, ranks, percentiles)
            ],
        )


_SCORERS: dict[tuple[str, str], object] = {}


def _load_scorer_once(path: Path, sha256: str):
    """The scorer of these bytes, loaded once per process (loading refits its isolation forest;
    workers build stages per run and warm them when they start)."""
    from survey_classifier.anomaly.scorer import AnomalyScorer

    key = (str(path), sha256)
    if key not in _SCORERS:
        _SCORERS[key] = AnomalyScorer.load(path)
    return _SCORERS[key]
