"""Command-line checks that happen before any training starts (no TensorFlow)."""

import subprocess
import sys

from click.testing import CliRunner

from survey_classifier.cnn.cli import cnn_table, train_cnn


def test_catalogue_problems_stop_train_cnn_before_training(data_dir, tmp_path):
    result = CliRunner().invoke(train_cnn, [
        "--catalogue", str(data_dir / "mirabest" / "labels.csv"), "--label-column", "fr_class",
        "--where", "confidence=confident", "--classes", "FRI,FRII", "--min-per-class", "400",
        "--output", str(tmp_path / "model"),
    ])
    assert result.exit_code == 1
    assert "labels not among the task's classes ['FRI', 'FRII']: {'hybrid': 17}" in result.output
    assert "class 'FRI' has 316 examples, fewer than 400" in result.output
    assert "class 'FRII' has 339 examples, fewer than 400" in result.output
    assert not (tmp_path / "model").exists()


def test_bad_options_are_named(data_dir, tmp_path):
    runner = CliRunner()
    common = ["--catalogue", str(data_dir / "first4" / "labels.csv"), "--output", str(tmp_path)]
    result = runner.invoke(train_cnn, [*common, "--freeze", "some"])
    assert result.exit_code != 0 and "--freeze expects 'all' or a number" in result.output
    result = runner.invoke(train_cnn, [*common, "--where", "split"])
    assert result.exit_code != 0 and "--where expects COLUMN=VALUE" in result.output
    result = runner.invoke(cnn_table, ["--catalogue", str(data_dir / "first4" / "labels.csv"),
                                       "--base", str(tmp_path / "missing.keras")])
    assert result.exit_code != 0 and "missing.keras" in result.output


def test_catalogue_checks_do_not_import_tensorflow(data_dir, tmp_path):
    code = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from survey_classifier.cnn.cli import train_cnn\n"
        f"r = CliRunner().invoke(train_cnn, ['--catalogue', {str(data_dir / 'mirabest' / 'labels.csv')!r},"
        " '--label-column', 'fr_class', '--classes', 'FRI,FRII', '--output', 'x'])\n"
        "assert r.exit_code == 1, r.output\n"
        "assert 'tensorflow' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path)
