"""The plugin guide documents the hook and the exact signatures it relies on."""

import dataclasses
import inspect
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

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
    assert list(inspect.signature(Stage.validate_companion).parameters) == ["path", "artefact"]
    assert "`validate_companion(cls, path: Path, artefact: Path) -> dict` (classmethod" in GUIDE
    for name in ("model_param", "shipped_models", "model_companions", "ref.companion(NAME)", "bind_model(ref)",
                 "self.model_.path", "plugins enable"):
        assert name in GUIDE, f"{name} missing from docs/plugins.md"


# -- every code block of the guide is a file of the example plugin, and that plugin is tested -------------

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "docs" / "examples" / "compactness"
_BLOCK = re.compile(r"(?:<!-- file: (?P<path>\S+) -->\n)?```(?P<lang>\w*)\n(?P<body>.*?)```", re.DOTALL)


def doc_blocks(text: str) -> list[dict]:
    return [m.groupdict() for m in _BLOCK.finditer(text)]


def test_every_code_block_is_a_file_of_the_example():
    code = [b for b in doc_blocks(GUIDE) if b["lang"] in ("python", "toml")]
    assert len(code) >= 4
    for block in code:
        assert block["path"], f"a {block['lang']} block of docs/plugins.md is no file:\n{block['body'][:300]}"
        assert block["body"] == (REPO / block["path"]).read_text(), f"docs/plugins.md differs from {block['path']}"
    shown = {b["path"] for b in code}
    for path in ("sc_compactness/stage.py", "sc_compactness/tuned.py", "pyproject.toml", "tests/test_compactness.py"):
        assert f"docs/examples/compactness/{path}" in shown


@pytest.mark.slow
def test_the_example_plugin_passes_its_own_tests(tmp_path):
    """Its tests (the guide's "Testing it" among them) run the conformance kit on real cutouts."""
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "error", str(EXAMPLE / "tests"),
         "--basetemp", str(tmp_path)],
        capture_output=True, text=True, timeout=600, cwd=EXAMPLE, env=dict(os.environ, PYTHONPATH=str(EXAMPLE)),
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "3 passed" in done.stdout


def test_every_cutout_attribute_and_requirement_documented():
    from survey_classifier.cutout import Cutout, CutoutSource
    from survey_classifier.stages.base import _INPUT_REQUIREMENTS

    table = GUIDE.split("### What a cutout carries", 1)[1].split("\n## ", 1)[0]
    public = [f.name for f in dataclasses.fields(Cutout) if not f.name.startswith("_")]
    public += [name for name, value in vars(Cutout).items() if isinstance(value, property)] + ["preprocessed(config)"]
    for name in public:
        assert f"`{name}`" in table, f"Cutout.{name} missing from docs/plugins.md"
    for name in (f.name for f in dataclasses.fields(CutoutSource)):
        assert f"`{name}`" in table, f"CutoutSource.{name} missing from docs/plugins.md"
    for requirement in (*_INPUT_REQUIREMENTS, "stage:NAME"):
        assert f'| `"{requirement}"` |' in GUIDE
    for name in ("`uses`", "--recompute", "cutout.provenance", "model_param", "--param compactness.min_ratio"):
        assert name in GUIDE


def test_a_parameter_stored_under_another_name_is_refused_naming_the_rule(tmp_path):
    from survey_classifier.errors import StageConfigError

    class Careless(Stage):
        name = "careless"
        version = "1"
        result_kind = "classification"

        def __init__(self, *, thr=0.5):
            self.threshold = thr  # not under its own name

        def process(self, batch):
            return [{"label": "x", "probabilities": {"x": 1.0}} for _ in batch]

    stage = Careless()
    assert repr(stage) == "Careless(...)"
    for call in (stage.get_params, stage.describe):
        with pytest.raises(StageConfigError) as caught:
            call()
        message = str(caught.value)
        assert "'thr'" in message and "self.thr = thr" in message and "under its own name" in message
