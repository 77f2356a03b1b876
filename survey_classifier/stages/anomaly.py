"""The ``anomaly`` stage: one combined oddness score per cutout, with its parts.

It combines the measurements, the SOM placement and the CNN output of the same cutout through
a fitted :class:`~survey_classifier.anomaly.AnomalyScorer` (see that module
for the components and the combination), and, once a run is complete,
ranks the run's cutouts (rank 1 = most anomalous) and gives each its
percentile within the run.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from sqlalchemy import bindparam, select, update

from survey_classifier.errors import StageConfigError
from survey_classifier.stages.base import CutoutFailure, Stage

__all__ = ["AnomalyStage", "DEFAULT_SCORER"]

#: Scorer shipped with survey-classifier, fitted on MiraBest with the shipped SOM and CNN.
DEFAULT_SCORER = Path(__file__).resolve().parent.parent / "models" / "anomaly-mirabest" / "scorer.npz"


class AnomalyStage(Stage):
    """Score how odd each cutout is, from its measure, SOM and CNN results.

    Parameters
    ----------
    scorer : str or None
        Path of a scorer written by ``survey-classifier train anomaly``;
        None uses the shipped MiraBest scorer.
    """

    name = "anomaly"
    version = "2"  # 2: asymmetry component, weighted combination
    result_kind = "anomaly"
    requires = ("pixels",)
    uses = ("stage:measure", "stage:som", "stage:cnn")
    enabled_by_default = True
    model_param = "scorer"

    def __init__(self, *, scorer=None):
        self.scorer = scorer

    @property
    def scorer_path(self) -> Path:
        return Path(self.scorer) if self.scorer else DEFAULT_SCORER

    @property
    def model_ref(self) -> str:
        """``name:version`` from the scorer file's metadata (read once)."""
        from survey_classifier.anomaly.scorer import AnomalyScorer

        if getattr(self, "_model_ref", None) is None:
            if not self.scorer_path.exists():
                return f"{self.scorer_path.stem}:missing"
            params = AnomalyScorer.read_meta(self.scorer_path)["params"]
            self._model_ref = f"{params.get('name', 'anomaly-scorer')}:{params.get('version', '1')}"
        return self._model_ref

    def setup(self) -> None:
        from survey_classifier.anomaly.scorer import AnomalyScorer

        if not hasattr(self, "_scorer"):
            if not self.scorer_path.exists():
                msg = (
                    f"anomaly scorer {self.scorer_path} not found; fit one with "
                    "`survey-classifier train anomaly` and pass --param anomaly.scorer=PATH"
                )
                raise StageConfigError(msg)
            self._scorer = AnomalyScorer.load(self.scorer_path)

    def _check_versions(self, cutout) -> None:
        scorer = self._scorer
        for stage, fitted in (("measure", scorer.measure_ref), ("som", scorer.som_ref), ("cnn", scorer.cnn_ref)):
            if stage not in cutout.provenance or not fitted:
                continue
            version, model = cutout.provenance[stage]
            given = f"{version}@{model}"
            if given != fitted:
                msg = (
                    f"the anomaly scorer {self.scorer_path.name} was fitted on {stage} results {fitted} "
                    f"but this run's {stage} results come from {given}; refit it with "
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
                    "components": dict(result["components"], **{f"{k}_pct": v for k, v in result["percentiles"].items()}),
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
