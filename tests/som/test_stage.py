"""The ``som`` mapping stage, through the conformance kit and directly."""

from __future__ import annotations

import numpy as np
import pytest

from survey_classifier.errors import StageConfigError
from survey_classifier.stages.som import DEFAULT_SOM, SOMStage
from survey_classifier.testing import check_stage


@pytest.fixture(scope="module")
def som_file(tmp_path_factory, small_som):
    return str(small_som.save(tmp_path_factory.mktemp("som") / "som.npz"))


def test_conformance(som_file, som_cutouts):
    check_stage(SOMStage(model=som_file), som_cutouts[:6])


def test_results_match_the_estimator(som_file, small_som, som_cutouts, som_images):
    stage = SOMStage(model=som_file)
    stage.setup()
    results = stage.process(som_cutouts[:8])
    mapping = small_som.map(som_images[:8])
    for row, result in enumerate(results):
        assert (result["node_x"], result["node_y"]) == (mapping["node_x"][row], mapping["node_y"][row])
        assert result["flip"] == bool(mapping["flip"][row])
        assert result["angle_deg"] == pytest.approx(mapping["angle_deg"][row])
        assert result["distance"] == pytest.approx(mapping["distance"][row], rel=1e-5)
    from survey_classifier.checksum import sha256_file

    sha256 = sha256_file(som_file)  # a map outside the registry is named by its file and bytes
    assert stage.model_ref == f"file:som.npz@{sha256[:12]}" and stage.model_sha256 == sha256


def test_refine_within_reaches_the_estimator(som_file, small_som, som_cutouts, som_images):
    fast = SOMStage(model=som_file, refine_within=None).process(som_cutouts[:8])
    expected = small_som.map(som_images[:8], refine_within=None)
    np.testing.assert_allclose([r["distance"] for r in fast], expected["distance"], rtol=1e-5)
    refined = SOMStage(model=som_file).process(som_cutouts[:8])
    assert [r["distance"] for r in refined] != [r["distance"] for r in fast]
    for bad in (-0.1, "much", float("nan")):
        with pytest.raises(StageConfigError, match="refine_within must be a fraction"):
            SOMStage(model=som_file, refine_within=bad)
    for bad in (0, 2.5, "many", True):
        with pytest.raises(StageConfigError, match="refine_limit must be a whole number"):
            SOMStage(model=som_file, refine_limit=bad)


def test_distance_map_artefact(tmp_path, som_file, som_cutouts):
    stage = SOMStage(model=som_file, distance_map_dir=str(tmp_path / "maps"))
    results = stage.process(som_cutouts[:3])
    for cutout, result in zip(som_cutouts[:3], results, strict=True):
        distances = np.load(result["distance_map"])
        assert result["distance_map"].endswith(f"{cutout.sha256}.npy")
        assert distances.shape == (16,)
        assert distances.min() == pytest.approx(result["distance"], rel=1e-5)


def test_mismatched_settings_refused(som_file, tmp_path):
    with pytest.raises(StageConfigError, match="n_rotations=360"):
        SOMStage(model=som_file, n_rotations=360).setup()
    with pytest.raises(StageConfigError, match="region_shape='square'"):
        SOMStage(model=som_file, region_shape="square").setup()
    SOMStage(model=som_file, n_rotations=60, flip=True, region_diameter=45).setup()
    bogus = tmp_path / "bogus.npz"
    bogus.write_bytes(b"PK not really")
    with pytest.raises(StageConfigError, match="bogus.npz"):
        SOMStage(model=str(bogus)).setup()


def test_shipped_som(som_cutouts):
    assert DEFAULT_SOM.is_file(), f"the shipped SOM is missing: {DEFAULT_SOM}"
    stage = SOMStage()
    results = stage.process(som_cutouts[:20])
    assert all(isinstance(r, dict) for r in results)
    assert len({(r["node_x"], r["node_y"]) for r in results}) > 5  # spread over the map
    assert stage.model_ref == "som-mirabest:3"  # the default: the morphology map
