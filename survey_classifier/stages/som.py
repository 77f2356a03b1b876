"""The ``som`` stage: map cutouts onto a rotation-invariant SOM.

Per cutout it reports the best-matching node (``node_x``, ``node_y``), the
rotation (``angle_deg``, applied after the mirror ``flip``) that best aligns
the cutout with that neuron, and the Euclidean ``distance`` over the
circular region. The full distance map (distance to every node) can be
written as an artefact file per cutout, never as database rows.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from survey_classifier.errors import ModelError, StageConfigError
from survey_classifier.preprocess import PreprocessConfig
from survey_classifier.som.som import REFINE_LIMIT, REFINE_WITHIN
from survey_classifier.stages.base import CutoutFailure, Stage

__all__ = ["SOMStage", "DEFAULT_SOM"]

#: The SOM shipped with survey-classifier (10x10 map trained on MiraBest).
DEFAULT_SOM = Path(__file__).resolve().parent.parent / "models" / "som-mirabest" / "som.npz"


class SOMStage(Stage):
    """Best-matching node, angle, flip and distance on a rotation-invariant SOM.

    Parameters
    ----------
    model : str or None
        Path of a SOM saved by :meth:`RotationInvariantSOM.save`; None uses
        the shipped MiraBest map.
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

    @property
    def model_path(self) -> Path:
        return Path(self.model) if self.model is not None else DEFAULT_SOM

    @property
    def model_ref(self) -> str:
        """``som:FOLDER/FILE@SHA256[:12]`` of the map file (hashed once)."""
        if getattr(self, "_model_ref", None) is None:
            path = self.model_path
            try:
                digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
            except OSError:
                return f"som:{path.parent.name}/{path.name}@missing"
            self._model_ref = f"som:{path.parent.name}/{path.name}@{digest}"
        return self._model_ref

    def setup(self) -> None:
        """Load the SOM once and check the mapping settings against it."""
        from survey_classifier.som import RotationInvariantSOM

        try:
            som = RotationInvariantSOM.load(self.model_path)
            som.check_settings(
                n_rotations=self.n_rotations,
                flip=self.flip,
                region_diameter=self.region_diameter,
                region_shape=self.region_shape,
                source=str(self.model_path),
            )
        except ModelError as exc:
            msg = f"stage 'som' cannot use its map: {exc}"
            raise StageConfigError(msg) from exc
        if som.preprocess_dict_ is None:
            msg = (
                f"stage 'som': {self.model_path} records no preprocessing configuration; "
                "retrain it with preprocess_config set"
            )
            raise StageConfigError(msg)
        self._config = PreprocessConfig.from_dict(som.preprocess_dict_)
        self._som = som
        if self.distance_map_dir is not None:
            Path(self.distance_map_dir).mkdir(parents=True, exist_ok=True)

    def process(self, batch: Sequence) -> list:
        if self._som is None:
            self.setup()
        results: list = [None] * len(batch)
        images, positions = [], []
        for index, cutout in enumerate(batch):
            try:
                image = cutout.preprocessed(self._config)
            except ValueError as exc:
                results[index] = CutoutFailure(f"{cutout.path} [HDU {cutout.hdu}]: {exc}")
                continue
            if image.shape != (self._som.image_size_,) * 2:
                results[index] = CutoutFailure(
                    f"{cutout.path} [HDU {cutout.hdu}]: preprocessed to {image.shape}, the SOM "
                    f"expects {self._som.image_size_}x{self._som.image_size_}"
                )
                continue
            images.append(image)
            positions.append(index)
        if not images:
            return results
        keep_map = self.distance_map_dir is not None
        mapping = self._som.map(
            np.stack(images), return_distances=keep_map, refine_within=self.refine_within,
            refine_limit=self.refine_limit,
        )  # fmt: skip
        for row, index in enumerate(positions):
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
