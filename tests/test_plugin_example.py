"""The example plugin in plugins/ installs as its own distribution and just works.

A fresh virtual environment gets survey-classifier's dependencies through a
.pth file (no download), the plugin is pip-installed into it from its
folder, and then: the core discovers it, the core's conformance kit passes
on it (the plugin's own tests), and a real `classify` stores its results.
"""

import os
import site
import subprocess
import venv
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

REPO = Path(__file__).resolve().parents[1]
PLUGIN = REPO / "plugins" / "survey-classifier-first4"
# the plugin's own tests find the data through this variable, wherever the repository lies
DATA = Path(os.environ.get("SURVEY_CLASSIFIER_DATA", REPO.parent / "shared" / "data"))

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def plugin_env(tmp_path_factory):
    home = tmp_path_factory.mktemp("plugin-venv")
    venv.EnvBuilder(with_pip=True).create(home)
    python = home / "bin" / "python"
    where = subprocess.check_output([python, "-c", "import site; print(site.getsitepackages()[0])"], text=True)
    target = Path(where.strip())
    (target / "survey_classifier_core.pth").write_text("\n".join(site.getsitepackages()) + "\n" + str(REPO) + "\n")
    done = subprocess.run(
        [python, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index", "-q", str(PLUGIN)],
        capture_output=True, text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return python


def run(python, *args, **kwargs):
    environment = dict(os.environ, PYTHONWARNINGS="ignore", SURVEY_CLASSIFIER_DATA=str(DATA))
    return subprocess.run([str(python), *args], capture_output=True, text=True, env=environment, timeout=600, **kwargs)


def test_core_discovers_the_installed_plugin(plugin_env):
    done = run(plugin_env, "-m", "survey_classifier.cli", "plugins", "list")
    assert done.returncode == 0, done.stderr
    line = next(row for row in done.stdout.splitlines() if row.startswith("first4 "))
    assert "classification" in line and "survey-classifier-first4" in line
    assert " no " in line and "plugin, off until enabled" in line  # installed is not on
    cnn = next(row for row in done.stdout.splitlines() if row.startswith("cnn "))
    assert " yes " in cnn and "built-in default" in cnn


def test_plugin_passes_the_conformance_kit(plugin_env):
    done = run(plugin_env, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "ignore::DeprecationWarning",
               str(PLUGIN / "tests"), cwd=PLUGIN)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "3 passed" in done.stdout


def _cli(python, *args):
    done = run(python, "-m", "survey_classifier.cli", *args)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def _first4_refs(url):
    engine = create_engine(url)
    with engine.connect() as connection:
        rows = connection.execute(text("SELECT label, model_ref FROM classifications WHERE stage = 'first4'")).all()
    engine.dispose()
    assert {r.label for r in rows} <= {"FRI", "FRII", "Compact", "Bent"}
    return sorted(r.model_ref for r in rows)


def test_classify_with_the_plugin(plugin_env, tmp_path, mirabest_files):
    url = f"sqlite:///{tmp_path / 'plugin.db'}"
    files = [str(p) for p in mirabest_files[:12]]
    assert "6 processed, 0 failed" in _cli(plugin_env, "classify", *files[:6], "--db", url, "--quiet")
    assert _first4_refs(url) == []  # not a default stage: installing a plugin changes no run
    out = _cli(plugin_env, "classify", *files, "--db", url, "--stages", "measure,first4", "--quiet")
    assert "12 processed, 0 failed" in out and "first4 1 (first4-cnn:1)" in out
    assert _first4_refs(url) == ["first4-cnn:1"] * 12
    assert "first4-cnn:1" in _cli(plugin_env, "models", "list", "--db", url)  # its shipped model, registered


def test_the_plugin_as_a_default_with_a_new_model_version(plugin_env, tmp_path, mirabest_files):
    url = f"sqlite:///{tmp_path / 'plugin.db'}"
    files = [str(p) for p in mirabest_files[:5]]
    assert "default stages: cnn, first4, measure, som, anomaly" in _cli(plugin_env, "plugins", "enable", "first4",
                                                                        "--db", url)
    _cli(plugin_env, "classify", *files, "--db", url, "--quiet")
    model = PLUGIN / "src" / "sc_first4" / "model" / "model.onnx"
    _cli(plugin_env, "models", "register", "--db", url, "--stage", "first4", "--name", "first4-cnn", "--version", "2",
         "--default", str(model))
    out = _cli(plugin_env, "classify", *files, "--db", url, "--quiet")
    assert "first4 1 (first4-cnn:2)" in out
    assert _first4_refs(url) == ["first4-cnn:1"] * 5 + ["first4-cnn:2"] * 5
    matrix = _cli(plugin_env, "models", "compare", "--db", url, "first4", "1@first4-cnn:1", "1@first4-cnn:2")
    assert "5 cutouts classified by both" in matrix and "agreement 1.000" in matrix
    assert "Error: no stage named 'first4x'" in run(plugin_env, "-m", "survey_classifier.cli", "plugins", "enable",
                                                    "first4x", "--db", url).stderr


def test_plugin_is_not_importable_from_the_core_environment():
    """Plugins load only from installed entry points: not installed here, not found here."""
    from survey_classifier.stages.registry import available_stages

    assert "first4" not in available_stages()
