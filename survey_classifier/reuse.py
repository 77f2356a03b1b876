"""Results of upstream stages read back from the database instead of computed again.

``classify --stages compactness`` (a stage that requires ``measure``)
needs measure results; when the same cutouts were measured before by the
same measure stage, those stored results are exactly what it would
compute, so a run reads them. A stored result counts as the same only if
all of these hold:

- the cutout is the same file with the same bytes (``cutouts.sha256``
  equals the sha256 of the file read now);
- the stage version and the model (``model_ref`` and ``model_sha256``)
  are those of the stage this run would run;
- the run that wrote it recorded the same parameters for that stage.

Each result read keeps the provenance it was stored with, so a
downstream stage sees in ``cutout.provenance`` exactly which version and
model made its input. Where nothing fits, a required upstream stage is
computed (and stored) as usual; an optional one (``uses``) is left out.
``--recompute`` reads nothing.

:func:`survey_classifier.stages.plan.plan_stages` decides which stages of
a run are read this way (:data:`FILL` or :data:`ONLY`), the run records it
in its configuration (``config["reuse"]``), and
:class:`~survey_classifier.pipeline.Pipeline` asks :class:`StoredResults`
for each batch, in process and on workers alike.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

from sqlalchemy import select
from sqlalchemy.engine import Engine

from survey_classifier.cutout import Cutout
from survey_classifier.db.models import RESULT_TABLES, CutoutRow, RunRow
from survey_classifier.db.store import result_from_row
from survey_classifier.stages.base import Stage

__all__ = ["FILL", "ONLY", "StoredResults"]

#: Read stored results where they fit; compute the stage for the other cutouts (a required upstream).
FILL = "fill"
#: Read stored results where they fit; leave the others without (an optional upstream, ``uses``).
ONLY = "only"
MODES = (FILL, ONLY)

_CHUNK = 500


class StoredResults:
    """Stored results of the stages a run reads instead of computing them.

    Parameters
    ----------
    engine : Engine
        The results database.
    modes : mapping
        ``{stage name: FILL or ONLY}``.
    """

    def __init__(self, engine: Engine, modes: Mapping[str, str]):
        unknown = sorted(set(modes.values()) - set(MODES))
        if unknown:
            msg = f"unknown reuse modes {unknown}; expected {list(MODES)}"
            raise ValueError(msg)
        self.engine = engine
        self.modes = dict(modes)
        self._run_params: dict[int, dict] = {}

    def __bool__(self) -> bool:
        return bool(self.modes)

    def lookup(self, stage: Stage, cutouts: Sequence[Cutout]) -> list[tuple[dict, tuple] | None]:
        """For each cutout, ``(result, provenance)`` of a stored result that fits, or None.

        ``provenance`` is ``(stage_version, model_ref, model_sha256)`` as stored.
        """
        if not cutouts:
            return []
        table = RESULT_TABLES[stage.result_kind].__table__
        c = CutoutRow.__table__.c
        wanted_params = _canonical(stage.describe()["params"])
        found: dict[str, tuple[dict, tuple]] = {}
        with self.engine.connect() as connection:
            for start in range(0, len(cutouts), _CHUNK):
                chunk = cutouts[start : start + _CHUNK]
                rows = connection.execute(
                    select(table, c.path, c.sha256.label("file_sha256"))
                    .join(CutoutRow.__table__, c.id == table.c.cutout_id)
                    .where(
                        c.path.in_([cutout.path for cutout in chunk]),
                        table.c.stage == stage.name,
                        table.c.stage_version == stage.version,
                        table.c.model_ref == stage.model_ref,
                    )
                ).all()
                for row in rows:
                    if row.model_sha256 != stage.model_sha256:
                        continue
                    if self._params_of(connection, row.run_id, stage.name) != wanted_params:
                        continue
                    provenance = (row.stage_version, row.model_ref, row.model_sha256)
                    found[row.path] = (row.file_sha256, result_from_row(stage.result_kind, row), provenance)
        out = []
        for cutout in cutouts:
            hit = found.get(cutout.path)
            out.append(hit[1:] if hit is not None and hit[0] == cutout.sha256 else None)
        return out

    def _params_of(self, connection, run_id: int | None, stage_name: str) -> str | None:
        """The parameters run ``run_id`` recorded for ``stage_name`` (canonical JSON), None if unknown."""
        if run_id is None:
            return None
        if run_id not in self._run_params:
            described = connection.execute(select(RunRow.stages).where(RunRow.id == run_id)).scalar_one_or_none()
            self._run_params[run_id] = {
                entry["name"]: _canonical(entry.get("params", {})) for entry in (described or [])
            }
        return self._run_params[run_id].get(stage_name)


def _canonical(params: Mapping) -> str:
    return json.dumps(params, sort_keys=True)
