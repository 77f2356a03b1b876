"""ONNX Runtime's providers are chosen before a session asks: no red ONNX Runtime blocks, one line instead."""

import subprocess
import sys
from pathlib import Path

import pytest

from survey_classifier.errors import StageConfigError
from survey_classifier.onnx_providers import CPU, CUDA, provider_problem, usable_providers

BIN = Path(sys.executable).parent
ONNX_RUNTIME_NOISE = ("[E:onnxruntime", "[W:onnxruntime", "FAIL :", "Failed to load library")


def _classify(tmp_path, files, *options):
    return subprocess.run(
        [str(BIN / "survey-classifier"), *options, "classify", *map(str, files), "--stages", "cnn",
         "--db", f"sqlite:///{tmp_path / 'r.db'}", "--quiet"],
        capture_output=True, text=True, timeout=600,
    )


@pytest.mark.slow
def test_a_run_says_once_in_one_line_where_the_cnn_runs(tmp_path, mirabest_files):
    done = _classify(tmp_path, mirabest_files[:3])
    assert done.returncode == 0, done.stderr
    assert "3 processed, 0 failed" in done.stdout
    for noise in ONNX_RUNTIME_NOISE:
        assert noise not in done.stderr, done.stderr
    said = [line for line in done.stderr.splitlines() if "cnn stage: running on" in line]
    problem = provider_problem(CUDA)
    if problem is None:  # a machine where CUDA starts: nothing to say
        assert said == []
    else:
        assert len(said) == 1, done.stderr
        assert "the CPU" in said[0] and problem in said[0]

    verbose = _classify(tmp_path, mirabest_files[:3], "-v")
    assert verbose.returncode == 0, verbose.stderr
    if problem is not None:  # -v shows the loader's own message: which library could not be opened, and why
        assert "cannot open shared object file" in verbose.stderr or "cannot load" in verbose.stderr, verbose.stderr
        assert len([line for line in verbose.stderr.splitlines() if "cnn stage: running on" in line]) == 1


def test_said_once_per_process_whatever_the_number_of_stages():
    script = (
        "import logging; logging.basicConfig(format='%(message)s')\n"
        "from survey_classifier.onnx_providers import usable_providers\n"
        "for stage in ('cnn', 'first4', 'cnn'):\n"
        "    print(usable_providers(['CUDAExecutionProvider', 'CPUExecutionProvider'], stage=stage))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    if provider_problem(CUDA) is None:
        assert lines == [] and done.stdout.count("CUDAExecutionProvider") == 3
    else:
        assert len(lines) == 1 and lines[0].startswith("cnn stage: running on the CPU (CUDA cannot start here: ")
        assert done.stdout.splitlines() == ["['CPUExecutionProvider']"] * 3


def test_only_providers_that_cannot_start_is_refused_with_the_reason():
    problem = provider_problem(CUDA)
    if problem is None:
        pytest.skip("CUDA starts on this machine")
    with pytest.raises(StageConfigError, match=r"stage 'cnn': none of the ONNX Runtime providers") as caught:
        usable_providers([CUDA], stage="cnn", explicit=True)
    assert problem in str(caught.value)
    assert usable_providers([CPU], stage="cnn") == [CPU]


def test_a_provider_this_onnx_runtime_lacks_is_left_out_quietly(caplog):
    with caplog.at_level("WARNING"):
        assert usable_providers(["NoSuchExecutionProvider", CPU], stage="cnn") == [CPU]
    assert caplog.records == []  # not built in: worth a line only at -v
    assert "has no NoSuchExecutionProvider" in provider_problem("NoSuchExecutionProvider")
