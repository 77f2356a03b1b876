"""The plugin guide documents the hook and the exact signatures it relies on."""

import inspect
from pathlib import Path

from survey_classifier.stages.base import RESULT_KINDS, Stage
from survey_classifier.stages.registry import ENTRY_POINT_GROUP

GUIDE = (Path(__file__).resolve().parents[1] / "docs" / "plugins.md").read_text()


def test_entry_point_group_documented():
    assert f'[project.entry-points."{ENTRY_POINT_GROUP}"]' in GUIDE


def test_process_signature_documented_exactly():
    params = list(inspect.signature(Stage.process).parameters)
    assert params == ["self", "batch"]
    assert "`process(self, batch: Sequence[Cutout]) -> list[dict | CutoutFailure]`" in GUIDE
    assert "`setup(self) -> None`" in GUIDE
    assert list(inspect.signature(Stage.after_run).parameters) == ["self", "connection", "run_id"]
    assert "`after_run(self, connection, run_id: int) -> None`" in GUIDE


def test_every_result_kind_and_field_documented():
    for kind, fields in RESULT_KINDS.items():
        row = next(line for line in GUIDE.splitlines() if line.startswith(f"| {kind} |"))
        for field in fields:
            assert field in row, f"{kind}.{field} missing from docs/plugins.md"


def test_model_hooks_documented_exactly():
    assert list(inspect.signature(Stage.validate_artefact).parameters) == ["path"]
    assert "`validate_artefact(cls, path: Path) -> dict` (classmethod)" in GUIDE
    assert list(inspect.signature(Stage.artefact_file).parameters) == ["path"]
    assert "`artefact_file(cls, path: Path) -> Path` (classmethod)" in GUIDE
    for name in ("model_param", "shipped_models", "bind_model(ref)", "self.model_.path", "plugins enable"):
        assert name in GUIDE, f"{name} missing from docs/plugins.md"
