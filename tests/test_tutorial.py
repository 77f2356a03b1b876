"""docs/tutorial.md runs as written: its files are written and its shell blocks run, in order, in a fresh folder.

The plugin it writes is pip-installed into a fresh virtual environment
that sees survey-classifier's own packages through a .pth file (no
download), whose `survey-classifier` command the tutorial's commands run.
"""

import os
import re
import signal
import site
import socket
import subprocess
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TUTORIAL = (REPO / "docs" / "tutorial.md").read_text()
DATA = Path(os.environ.get("SURVEY_CLASSIFIER_DATA", REPO.parent / "shared" / "data"))
_BLOCK = re.compile(r"(?:<!-- file: (?P<path>\S+) -->\n)?```(?P<lang>\w*)\n(?P<body>.*?)```", re.DOTALL)

pytestmark = pytest.mark.slow


def tutorial_script(text: str, port: int) -> str:
    """The tutorial as one bash script: file blocks as here-documents, shell blocks as they are."""
    lines = ["set -euo pipefail"]
    for block in _BLOCK.finditer(text):
        if block["path"]:
            lines += [f"mkdir -p \"$(dirname '{block['path']}')\"",
                      f"cat > '{block['path']}' <<'END_OF_TUTORIAL_FILE'", block["body"].rstrip("\n"),
                      "END_OF_TUTORIAL_FILE"]
        elif block["lang"] == "sh":
            lines += [f"echo '>>> block {block.start()}'", block["body"].replace("8765", str(port))]
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def tutorial_env(tmp_path_factory):
    """A fresh virtual environment with survey-classifier importable and its command, for `pip install`."""
    home = tmp_path_factory.mktemp("tutorial-venv")
    venv.EnvBuilder(with_pip=True).create(home)
    python = home / "bin" / "python"
    where = subprocess.check_output([python, "-c", "import site; print(site.getsitepackages()[0])"], text=True)
    paths = [*site.getsitepackages(), str(REPO)]
    (Path(where.strip()) / "survey_classifier_core.pth").write_text("\n".join(paths) + "\n")
    command = home / "bin" / "survey-classifier"
    command.write_text(f"#!{python}\nimport sys\nfrom survey_classifier.cli import main\nsys.exit(main())\n")
    command.chmod(0o755)
    return home


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_tutorial_runs_as_written(tutorial_env, tmp_path):
    script = tutorial_script(TUTORIAL, free_port())
    environment = dict(
        os.environ,
        PATH=f"{tutorial_env / 'bin'}{os.pathsep}{os.environ['PATH']}",
        DATA=str(DATA),
        # offline: the plugin's build uses the setuptools already there, its dependency is installed
        PIP_NO_INDEX="1", PIP_NO_DEPS="1", PIP_NO_BUILD_ISOLATION="0", PIP_DISABLE_PIP_VERSION_CHECK="1",
        PYTHONWARNINGS="ignore",
    )
    environment.pop("SURVEY_CLASSIFIER_DB", None)
    process = subprocess.Popen(["bash", "-c", script], cwd=tmp_path, env=environment, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = process.communicate(timeout=900)
    finally:
        try:
            os.killpg(process.pid, signal.SIGTERM)  # the server, if a block failed before stopping it
        except ProcessLookupError:
            pass
    assert process.returncode == 0, f"{out[-4000:]}\n{err[-4000:]}"
    folder = tmp_path / "first-hour"

    run_1 = out.split(">>> block")[2]
    assert "run 1: 7 cutouts, 6 processed, 1 failed" in run_1
    shown = re.search(r"goes\. The closing lines.*?\n```\n(.*?)```", TUTORIAL, re.DOTALL).group(1)
    for line in shown.splitlines():  # the output the tutorial shows is the output, numbers aside
        pattern = re.escape(line)
        pattern = re.sub(r"\d+(?:\\\.\d+)?", r"\\d+(?:\\.\\d+)?", pattern).replace("sqlite:///first\\-hour\\.db", ".*")
        assert re.search(f"^{pattern}$", run_1, re.MULTILINE), f"tutorial line not in the output: {line}"
    assert "lost.fits" in out and "J083851+252714" in out
    assert "compactness  1" in out and "plugin, off until enabled" in out
    assert "read from the database (stored by an earlier run, same version, model and parameters): measure 6" in out
    assert (folder / "top3" / "gallery.png").exists() and (folder / "top3" / "index.html").exists()
    assert "J" in (folder / "top3" / "index.html").read_text()
    assert (folder / "near.vot").exists() and (folder / "compactness.csv").exists()
    assert "model card:" in out and "test_accuracy" in out


def test_the_tutorial_plugin_is_the_documented_example():
    block = next(b for b in _BLOCK.finditer(TUTORIAL) if b["path"] == "compactness-plugin/my_compactness.py")
    assert block["body"] == (REPO / "docs" / "examples" / "compactness" / "sc_compactness" / "stage.py").read_text()
