"""Which stages a run uses, built with their parameters, their models bound by the registry.

Used alike by ``classify``, ``submit`` and ``demo``. Without ``--stages``,
a run uses survey-classifier's own stages that are on by default plus any
stage enabled in the results database (``survey-classifier plugins enable
NAME``), less any disabled there. Third-party stages are never on until
enabled: installing a plugin does not change what a run computes.

A stage named without the stages it needs brings them along
(:func:`plan_stages`): their stored results are read where they are
exactly what the run would compute (:mod:`survey_classifier.reuse`), and
required ones are computed for the other cutouts; ``--recompute`` reads
nothing and computes every required stage.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.engine import Engine

from survey_classifier.artefacts import fetch
from survey_classifier.db.models import StageSettingRow, utcnow
from survey_classifier.db.store import upsert_rows
from survey_classifier.errors import StageConfigError
from survey_classifier.stages.base import Stage
from survey_classifier.stages.registry import (
    BUILTIN_DISTRIBUTION,
    available_stages,
    load_stage,
    order_stages,
    stage_distributions,
)

__all__ = [
    "stage_switches",
    "default_stage_names",
    "set_stage_enabled",
    "build_stages",
    "bind_models",
    "StagePlan",
    "upstream_modes",
    "plan_stages",
]

log = logging.getLogger(__name__)


def _is_builtin(distribution: str) -> bool:
    return distribution.replace("_", "-").lower() == BUILTIN_DISTRIBUTION


def stage_switches(engine: Engine | None = None) -> dict[str, tuple[bool, str]]:
    """For each installed stage: whether it runs by default, and why (for ``plugins list``)."""
    classes = available_stages()
    distributions = stage_distributions()
    stored: dict[str, bool] = {}
    if engine is not None:
        with engine.connect() as connection:
            stored = dict(connection.execute(select(StageSettingRow.stage, StageSettingRow.enabled)).all())
    switches = {}
    for name, cls in classes.items():
        if name in stored:
            why = "enabled in the database" if stored[name] else "disabled in the database"
            switches[name] = (bool(stored[name]), why)
        elif _is_builtin(distributions.get(name, "")):
            why = "built-in default" if cls.enabled_by_default else "built-in, off"
            switches[name] = (bool(cls.enabled_by_default), why)
        else:
            switches[name] = (False, "plugin, off until enabled")
    return switches


def default_stage_names(engine: Engine | None = None) -> list[str]:
    """The stages a run uses when ``--stages`` is not given, fewest requirements first."""
    classes = available_stages()
    chosen = [name for name, (on, _) in stage_switches(engine).items() if on]
    return sorted(chosen, key=lambda n: (len(classes[n].requires) + len(classes[n].uses), n))


def set_stage_enabled(engine: Engine, name: str, enabled: bool) -> None:
    """Make stage ``name`` a default of this database's runs (or take it out)."""
    if name not in available_stages():
        msg = f"no stage named {name!r} is installed; installed stages: {sorted(available_stages())}"
        raise StageConfigError(msg)
    with engine.begin() as connection:
        upsert_rows(connection, StageSettingRow.__table__,
                    [{"stage": name, "enabled": bool(enabled), "updated_at": utcnow()}], key=("stage",))


def build_stages(
    names: Sequence[str] | None, params: Mapping[str, Mapping], engine: Engine | None = None
) -> list[Stage]:
    """The stages to run, ordered by their requirements, with their models bound.

    Parameters
    ----------
    names : sequence of str or None
        Stage names; None for the defaults (:func:`default_stage_names`).
    params : mapping
        ``{stage: {parameter: value}}``.
    engine : Engine, optional
        The results database, whose registry resolves each stage's model;
        without one, stages run their shipped models or the files named.
    """
    chosen = list(names) if names else default_stage_names(engine)
    unknown = sorted(set(params) - set(chosen))
    if unknown:
        msg = f"parameters given for stages not being run: {unknown}; stages being run: {chosen}"
        raise StageConfigError(msg)
    stages = order_stages([load_stage(name, **params.get(name, {})) for name in chosen])
    if engine is not None:
        bind_models(engine, stages)
    return stages


@dataclass
class StagePlan:
    """The stages of a run, and which of them are read from the database where stored."""

    stages: list[Stage]
    #: ``{stage: "fill" | "only"}`` for stages brought along by others (see :mod:`survey_classifier.reuse`).
    reuse: dict[str, str] = field(default_factory=dict)

    def describe_reuse(self) -> str:
        """One line for the user, or "" when nothing is reused."""
        from survey_classifier.reuse import FILL

        if not self.reuse:
            return ""
        parts = [
            f"{name} (stored results where they fit{', computed for the rest' if mode == FILL else ''})"
            for name, mode in sorted(self.reuse.items())
        ]
        return "reading from the database: " + "; ".join(parts) + " (--recompute to compute them again)"


def upstream_modes(names: Sequence[str], *, recompute: bool = False) -> dict[str, str]:
    """The stages ``names`` need or use without naming them, with how the run gets their results.

    A required stage (``requires = ("stage:NAME",)``) is read where stored
    and computed for the rest (``"fill"``), and its own requirements come
    along too; a used one (``uses``) is read where stored (``"only"``).
    With ``recompute``, used stages are left out (the caller computes the
    required ones like named stages).

    Raises
    ------
    StageConfigError
        When a needed stage is not installed.
    """
    from survey_classifier.reuse import FILL, ONLY

    classes = available_stages()
    modes: dict[str, str] = {}
    pending = list(names)
    while pending:
        name = pending.pop(0)
        if name not in classes:
            msg = f"no stage named {name!r} is installed; installed stages: {sorted(classes)}"
            raise StageConfigError(msg)
        probe = classes[name]
        required = [r.split(":", 1)[1] for r in probe.requires if r.startswith("stage:")]
        used = [r.split(":", 1)[1] for r in probe.uses if r.startswith("stage:")]
        for dep in required:
            if dep not in names and modes.get(dep) != FILL:
                if dep not in classes:
                    msg = (
                        f"stage {name!r} requires the results of {dep!r}, and no stage {dep!r} is installed; "
                        f"installed stages: {sorted(classes)}"
                    )
                    raise StageConfigError(msg)
                modes[dep] = FILL
                pending.append(dep)
        if not recompute:
            for dep in used:
                if dep in classes and dep not in names and dep not in modes:
                    modes[dep] = ONLY
    return modes


def plan_stages(
    names: Sequence[str] | None,
    params: Mapping[str, Mapping],
    engine: Engine | None = None,
    *,
    recompute: bool = False,
) -> StagePlan:
    """The stages of a run (as :func:`build_stages`), with the upstream stages the named ones need.

    Parameters
    ----------
    names, params, engine
        As for :func:`build_stages`; ``params`` may also configure the
        stages brought along.
    recompute : bool
        Compute required upstream stages for every cutout instead of reading
        stored results; leave optional ones out.
    """
    chosen = list(names) if names else default_stage_names(engine)
    fresh = recompute or engine is None  # without a database nothing is stored to read
    modes = upstream_modes(chosen, recompute=fresh)
    stages = build_stages([*chosen, *modes], params, engine)
    return StagePlan(stages=stages, reuse={} if fresh else modes)


def bind_models(engine: Engine, stages: Sequence[Stage]) -> None:
    """Resolve each stage's model parameter through the registry, fetch and verify it, bind it."""
    from survey_classifier.registry import model_for

    for stage in stages:
        if stage.model_param is None:
            continue
        ref = fetch(model_for(engine, type(stage), getattr(stage, stage.model_param)), engine)
        stage.bind_model(ref)
        log.info("stage %s: model %s", stage.name, ref)
