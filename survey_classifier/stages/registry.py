"""Discovery of stages through the ``survey_classifier.stages`` entry points.

Built-in stages are declared in survey-classifier's own ``pyproject.toml``
under that group, exactly as a third-party distribution declares its own::

    [project.entry-points."survey_classifier.stages"]
    my_stage = "my_package.stages:MyStage"

Only installed entry points are ever loaded: never a path or a module named
in the database or in a request. The distribution each stage comes from is
kept: only survey-classifier's own stages run by default
(:func:`survey_classifier.stages.plan.default_stage_names`).
"""

from __future__ import annotations

from importlib.metadata import entry_points

from survey_classifier.errors import StageConfigError
from survey_classifier.stages.base import Stage

__all__ = [
    "ENTRY_POINT_GROUP",
    "BUILTIN_DISTRIBUTION",
    "available_stages",
    "stage_distributions",
    "load_stage",
    "order_stages",
]

ENTRY_POINT_GROUP = "survey_classifier.stages"
#: The distribution whose stages are survey-classifier's own.
BUILTIN_DISTRIBUTION = "survey-classifier"


def stage_distributions() -> dict[str, str]:
    """The distribution each installed stage comes from, keyed by stage name."""
    return {name: distribution for name, (_, distribution) in _discover().items()}


def available_stages() -> dict[str, type[Stage]]:
    """Every installed stage class, keyed by its ``name``.

    Raises
    ------
    StageConfigError
        If an entry point does not name a :class:`Stage` subclass, or two
        installed distributions claim the same stage name.
    """
    return {name: cls for name, (cls, _) in _discover().items()}


def _discover() -> dict[str, tuple[type[Stage], str]]:
    stages: dict[str, tuple[type[Stage], str]] = {}
    origins: dict[str, str] = {}
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        distribution = entry.dist.name if entry.dist else "unknown"
        origin = f"{entry.value} (from {distribution})"
        try:
            cls = entry.load()
        except Exception as exc:  # a broken plugin must not hide the others
            msg = f"stage plugin entry point {entry.name!r} = {origin} failed to import: {exc}"
            raise StageConfigError(msg) from exc
        if not (isinstance(cls, type) and issubclass(cls, Stage)):
            msg = f"entry point {entry.name!r} = {origin} is not a Stage subclass"
            raise StageConfigError(msg)
        if cls.name in stages and stages[cls.name][0] is not cls:
            msg = f"stage name {cls.name!r} is claimed by both {origins[cls.name]} and {origin}"
            raise StageConfigError(msg)
        stages[cls.name] = (cls, distribution)
        origins[cls.name] = origin
    return stages


def load_stage(name: str, **params) -> Stage:
    """Build the installed stage called ``name`` with keyword ``params``."""
    stages = available_stages()
    if name not in stages:
        msg = f"no stage named {name!r} is installed; installed stages: {sorted(stages)}"
        raise StageConfigError(msg)
    try:
        stage = stages[name](**params)
    except TypeError as exc:
        msg = f"stage {name!r} rejected its parameters {params}: {exc}"
        raise StageConfigError(msg) from exc
    stage.get_params()  # each parameter stored under its own name, or a message naming the rule
    return stage


def order_stages(stages: list[Stage]) -> list[Stage]:
    """Order stages so each runs after the stages it requires or uses.

    Raises
    ------
    StageConfigError
        If a required stage is not in the list, or the requirements cycle.
    """
    by_name = {stage.name: stage for stage in stages}
    if len(by_name) != len(stages):
        msg = f"a stage is listed twice in {[s.name for s in stages]}"
        raise StageConfigError(msg)
    for stage in stages:
        missing = [dep for dep in stage.stage_requirements if dep not in by_name]
        if missing:
            msg = (
                f"stage {stage.name!r} requires the results of {missing}; add them to the stages to run "
                f"(classify and submit bring them along, reading their stored results where they fit)"
            )
            raise StageConfigError(msg)
    ordered: list[Stage] = []
    visiting: set[str] = set()

    def visit(stage: Stage) -> None:
        if stage in ordered:
            return
        if stage.name in visiting:
            msg = f"stage requirements form a cycle through {stage.name!r}"
            raise StageConfigError(msg)
        visiting.add(stage.name)
        for dep in (*stage.stage_requirements, *stage.stage_uses):
            if dep in by_name:
                visit(by_name[dep])
        visiting.discard(stage.name)
        ordered.append(stage)

    for stage in stages:
        visit(stage)
    return ordered
