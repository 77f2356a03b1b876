"""The ``som`` stage: map cutouts onto a rotation-invariant SOM.

Per cutout it reports the best-matching node (``node_x``, ``node_y``), the
rotation (``angle_deg``, applied after the mirror ``flip``) that best aligns
the cutout with that neuron, and the Euclidean ``distance`` over the
circular region. The full distance map (distance to every node) can be
written as an artefact file per cutout, never as database rows.
"""

from __future__ import annotations

import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from survey_classifier.columns import Column
from survey_classifier.errors import ModelError, StageConfigError
from survey_classifier.modelref import ShippedModel
from survey_classifier.preprocess import PreprocessConfig, empty_preparation_reason
from survey_classifier.som.labels import NEURON_LABELS_FILE, NeuronLabels
from survey_classifier.som.som import REFINE_LIMIT, REFINE_WITHIN
from survey_classifier.stages.base import CutoutFailure, Stage

__all__ = ["SOMStage", "DEFAULT_SOM", "SOM_MIRABEST", "SOM_MIRABEST_2", "SOM_MIRABEST_3"]

#: The first SOM shipped with survey-classifier (10x10 map trained on MiraBest); the default of databases
#: made before version 3 became the default.
SOM_MIRABEST = ShippedModel(
    name="som-mirabest",
    version="1",
    package="survey_classifier",
    resource="models/som-mirabest/som.npz",
    sha256="f198c1d1d7444c0f633bf563fb33de74399a72ec2c4736b02c44d0a6ef1f44e0",
    card="models/som-mirabest/MODEL_CARD.md",
    metrics={"quantization_error": 1.065, "topographic_error": 0.074},
)
#: The morphology map (sources centred on their emission and filling the neurons); registered beside
#: version 1 in every results database, made the default with ``models set-default som-mirabest 2``.
SOM_MIRABEST_2 = ShippedModel(
    name="som-mirabest",
    version="2",
    package="survey_classifier",
    resource="models/som-mirabest-2/som.npz",
    sha256="0af0b201cf6af23fbd6d037784902c6e0b2440065abe6a8d95219b2baa5c3cf2",
    card="models/som-mirabest-2/MODEL_CARD.md",
    metrics={"cv_neuron_label_accuracy_fri_frii": 0.773, "purity": 0.723, "quantization_error": 3.266,
             "topographic_error": 0.099},
    companions={NEURON_LABELS_FILE: "1bb23c876e801c808312322cb0234f6608c856865756153526456908c4b15cc1"},
)
#: The morphology map centred on the catalogue (host) position, the source's islands only (#20): the default
#: of a new results database (with ``anomaly-mirabest:4``, fitted on its distances); registered beside
#: versions 1 and 2 in older ones, made their default with ``models set-default som-mirabest 3``.
SOM_MIRABEST_3 = ShippedModel(
    name="som-mirabest",
    version="3",
    package="survey_classifier",
    resource="models/som-mirabest-3/som.npz",
    sha256="cfefe00058274e9d7bdeed5e029fd0edfdbb575da9cc7070e0b784a81925a50a",
    card="models/som-mirabest-3/MODEL_CARD.md",
    metrics={"cv_neuron_label_accuracy_fri_frii": 0.806, "purity": 0.750, "quantization_error": 3.248,
             "topographic_error": 0.093},
    companions={NEURON_LABELS_FILE: "6ee78277613286f0d44de0604796f4229d50d5cff30a0312720ba1a4e8eb356e"},
)
#: The default map's file in the installed package.
DEFAULT_SOM = SOM_MIRABEST_3.path()


class SOMStage(Stage):
    """Best-matching node, angle, flip and distance on a rotation-invariant SOM.

    Parameters
    ----------
    model : str or None
        ``NAME[:VERSION]`` of a registered map, or the path of a SOM saved by
        :meth:`RotationInvariantSOM.save`; None: the registry's default
        (``som-mirabest:3`` in a new database).
    distance_map_dir : str or None
        When set, the distance of each cutout to every node is saved there as
        ``<sha256>.npy`` (float32, one value per node in map order) and the
        result carries its path as ``distance_map``.
    n_rotations, flip, region_diameter, region_shape : optional
        Mapping settings; when given they must equal those the SOM was
        trained with, otherwise the stage refuses to run (``None``: as trained).
    refine_within, refine_limit : optional
        Orientations whose fast squared distance lies within the fraction
        ``refine_within`` of a cutout's best (at most ``refine_limit`` of
        them) are measured again in pixels, as PINK measures them (see
        :meth:`RotationInvariantSOM.map`); ``refine_within=None`` keeps the
        fast core's distances (faster; within a few per cent on extended
        sources, up to 30 % off on compact ones).
    """

    name = "som"
    # 2: distances re-measured in pixels (refine_within); 1 reported the fast core's
    version = "2"
    result_kind = "som"
    requires = ("pixels",)
    enabled_by_default = True
    model_param = "model"
    shipped_models = (SOM_MIRABEST_3, SOM_MIRABEST, SOM_MIRABEST_2)  # the first is the default
    model_companions = (NEURON_LABELS_FILE,)  # the neurons' classes `train som --labels` writes beside the map
    result_columns = (
        Column("node", "Index of the best-matching node (y * width + x)", unit="", ucd="meta.id"),
        Column("distance_map", "File of the distances to every node (with distance_map_dir)", ucd="meta.id;meta.file"),
    )

    def __init__(
        self,
        *,
        model=None,
        distance_map_dir=None,
        n_rotations=None,
        flip=None,
        region_diameter=None,
        region_shape=None,
        refine_within=REFINE_WITHIN,
        refine_limit=REFINE_LIMIT,
    ):
        self.model = model
        self.distance_map_dir = distance_map_dir
        self.n_rotations = n_rotations
        self.flip = flip
        self.region_diameter = region_diameter
        self.region_shape = region_shape
        self.refine_within = _fraction_or_none(refine_within)
        self.refine_limit = _count_or_none(refine_limit)
        self._som = None

    @classmethod
    def validate_artefact(cls, path: Path) -> dict:
        """A survey-classifier SOM map that records its preprocessing, matching its image size."""
        som = _load_map(path)
        return {
            "grid_shape": list(som.grid_shape), "layout": som.layout, "neuron_size": int(som.neuron_size),
            "n_rotations": int(som.n_rotations), "flip": bool(som.flip), "preprocess": som.preprocess_dict_,
        }

    @classmethod
    def validate_companion(cls, path: Path, artefact: Path) -> dict:
        """The neurons' classes (``neurons.json``, :class:`~survey_classifier.som.labels.NeuronLabels`) of the map
        ``artefact``: one per neuron of that map."""
        som = _load_map(artefact)
        try:
            labels = NeuronLabels.read(path, grid=som.grid_)
        except ValueError as exc:
            msg = (
                f"{exc} ({Path(artefact).name} beside it); label this map again (`train som --labels`), or move "
                f"{Path(path).name} away to register the map without neuron classes"
            )
            raise ModelError(msg) from exc
        return {"classes": list(labels.classes), "labelled_sources": int(labels.hits.sum()),
                "mean_purity": round(labels.mean_purity, 4), "smoothing": labels.smoothing}

    @property
    def preprocess_config(self) -> PreprocessConfig:
        """The preprocessing the map was trained with (recorded in the map file)."""
        if self._som is None:
            self.setup()
        return self._config

    def setup(self) -> None:
        """Load the map once and check the mapping settings against it."""
        if self._som is not None:
            return
        model = self.model_
        try:
            som = _load_map_once(model.path, model.sha256)
            som.check_settings(
                n_rotations=self.n_rotations,
                flip=self.flip,
                region_diameter=self.region_diameter,
                region_shape=self.region_shape,
                source=model.ref,
            )
        except ModelError as exc:
            msg = f"stage 'som' cannot use the map {model.ref}: {exc}"
            raise StageConfigError(msg) from exc
        self._config = PreprocessConfig.from_dict(som.preprocess_dict_)
        self._som = som
        if self.distance_map_dir is not None:
            Path(self.distance_map_dir).mkdir(parents=True, exist_ok=True)

    def process(self, batch: Sequence) -> list:
        if not batch:
            return []
        self.setup()
        images = np.stack([cutout.preprocessed(self._config) for cutout in batch])
        placed = images.reshape(len(images), -1).any(axis=1)  # an empty image has no place on the map
        results: list = [
            None if has_source else CutoutFailure(self._why_empty(cutout))
            for cutout, has_source in zip(batch, placed, strict=True)
        ]
        if not placed.any():
            return results
        keep_map = self.distance_map_dir is not None
        mapping = self._som.map(
            images[placed], return_distances=keep_map, refine_within=self.refine_within,
            refine_limit=self.refine_limit,
        )  # fmt: skip
        for row, index in enumerate(np.flatnonzero(placed)):
            result = {
                "node_x": int(mapping["node_x"][row]),
                "node_y": int(mapping["node_y"][row]),
                "angle_deg": float(mapping["angle_deg"][row]),
                "flip": bool(mapping["flip"][row]),
                "distance": float(mapping["distance"][row]),
                "node": int(mapping["node"][row]),
            }
            if keep_map:
                target = Path(self.distance_map_dir) / f"{batch[index].sha256}.npy"
                np.save(target, mapping["node_distances"][row])
                result["distance_map"] = str(target)
            results[index] = result
        return results

    def _why_empty(self, cutout) -> str:
        return empty_preparation_reason(cutout.data, self._config, unit=cutout.bunit)


_MAPS: dict[tuple[str, str], object] = {}


def _load_map_once(path: Path, sha256: str):
    """The map of these bytes, loaded once per process (workers build stages per run)."""
    key = (str(path), sha256)
    if key not in _MAPS:
        _MAPS[key] = _load_map(path)
    return _MAPS[key]


def _load_map(path: Path):
    """A map from ``path`` that records the preprocessing its images need, at their size."""
    from survey_classifier.som import RotationInvariantSOM

    if not zipfile.is_zipfile(path):
        msg = f"{Path(path).name} is not a SOM map (an .npz archive written by `survey-classifier train som`)"
        raise ModelError(msg)
    som = RotationInvariantSOM.load(path)
    if som.preprocess_dict_ is None:
        msg = f"{Path(path).name} records no preprocessing configuration; retrain it with preprocess_config set"
        raise ModelError(msg)
    size = PreprocessConfig.from_dict(som.preprocess_dict_).size
    if size != som.image_size_:
        msg = (
            f"{Path(path).name}: its preprocessing makes {size}x{size} images but the map was trained on "
            f"{som.image_size_}x{som.image_size_}"
        )
        raise ModelError(msg)
    return som


def _fraction_or_none(value):
    """``refine_within`` as a float >= 0, or None."""
    if value is None:
        return None
    try:
        fraction = float(value)
    except (TypeError, ValueError):
        fraction = -1.0
    if not fraction >= 0.0:  # also refuses NaN
        msg = (
            f"stage 'som': refine_within must be a fraction >= 0 (e.g. 0.3) or null "
            f"(fast distances only), got {value!r}"
        )
        raise StageConfigError(msg)
    return fraction


def _count_or_none(value):
    """``refine_limit`` as an int >= 1, or None."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 1 or value != int(value):
        msg = f"stage 'som': refine_limit must be a whole number >= 1 or null (no limit), got {value!r}"
        raise StageConfigError(msg)
    return int(value)
