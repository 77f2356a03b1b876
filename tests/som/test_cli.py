"""``train som`` and ``show som`` through click, on real FITS files."""

from __future__ import annotations

from click.testing import CliRunner

from survey_classifier.som import RotationInvariantSOM
from survey_classifier.som.cli import show_som, train_som
from survey_classifier.som.pink import read_som


def test_train_writes_map_pictures_and_pink(tmp_path, mirabest_files):
    out = tmp_path / "som"
    args = [*map(str, mirabest_files[:40:2]), "--out", str(out), "--grid", "2x3",
            "--rotations", "24", "--region-diameter", "45", "--epochs", "2", "--pink",
            "--no-progress"]  # fmt: skip
    result = CliRunner().invoke(train_som, args)
    assert result.exit_code == 0, result.output
    assert "trained on 20 cutouts" in result.output
    assert "epoch 2: quantization error" in result.output
    som = RotationInvariantSOM.load(out / "som.npz")
    assert som.grid_.shape == (2, 3) and som.n_rotations == 24
    assert som.preprocess_dict_["size"] == 64
    neurons, grid = read_som(out / "som.pink")
    assert neurons.shape == (6, 64, 64)
    for name in ("prototypes.png", "hits.png", "umatrix.png", "best_matches.png", "prototypes_tiles.png"):
        assert (out / name).is_file()
    shown = CliRunner().invoke(show_som, [str(out), "--out", str(tmp_path / "drawn")])
    assert shown.exit_code == 0, shown.output
    assert shown.output.count("picture: ") == 3 and "umatrix.png" in shown.output


def test_train_reports_bad_options(tmp_path, mirabest_files):
    args = [str(mirabest_files[0]), "--out", str(tmp_path), "--grid", "ten"]
    result = CliRunner().invoke(train_som, args)
    assert result.exit_code != 0 and "ROWSxCOLUMNS" in result.output
    hexagon = [str(mirabest_files[0]), "--out", str(tmp_path), "--layout", "hexagonal", "--grid", "4x4",
               "--no-progress"]
    result = CliRunner().invoke(train_som, hexagon)
    assert result.exit_code != 0 and "d odd" in result.output
    empty = CliRunner().invoke(show_som, [str(tmp_path)])
    assert empty.exit_code != 0 and "no som.npz and no SOM pictures" in empty.output
