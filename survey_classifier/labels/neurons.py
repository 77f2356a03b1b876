"""A neuron's label carried to every source mapped to it, with a calibrated reliability.

Label a hundred neurons of a SOM instead of ten thousand sources: every
source whose best-matching neuron has a (current) label gets that label,
as in the Radio Galaxy Zoo, LoTSS and RACS analyses of PINK maps (Galvin
et al. 2019; Alam et al. 2025). How far to trust it depends on how well the
neuron represents the source: its distance to the best-matching neuron
(``som_placements.distance``, the distance PINK reports).

The reliability is calibrated on the sources users labelled themselves
(their current class label) that lie on labelled neurons: they are split
into distance bins of equal counts (up to :data:`MAX_BINS`, at least
:data:`MIN_PER_BIN` sources each), and the reliability of a bin is the
fraction of its sources whose own label agrees with their neuron's,
smoothed towards the agreement over all bins (a pseudo-count of
:data:`PRIOR_WEIGHT` sources), so a bin of three sources does not claim
0 or 1. A source gets the reliability of the bin its distance falls in
(the outer bins reach to 0 and to infinity). With no labelled source on a
labelled neuron the reliability is unknown (null).

Nothing is stored: the carried labels are computed when results are read,
so a new neuron or source label shows at once and nothing goes stale.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from sqlalchemy import select
from sqlalchemy.engine import Connection

from survey_classifier.labels.store import (
    current_neuron_labels,
    current_source_labels,
    has_neuron_labels,
    same_class,
)

__all__ = ["MAX_BINS", "MIN_PER_BIN", "PRIOR_WEIGHT", "Calibration", "calibrate", "carried_labels"]

MAX_BINS = 5
MIN_PER_BIN = 10
PRIOR_WEIGHT = 2.0


@dataclass
class Calibration:
    """Agreement of users' source labels with their neurons' labels, per distance bin.

    ``edges`` are the inner bin edges (``len(edges) + 1`` bins); ``n`` and
    ``agree`` count the calibration sources per bin; ``reliability`` is the
    smoothed fraction per bin.
    """

    model_ref: str
    edges: list[float] = field(default_factory=list)
    n: list[int] = field(default_factory=list)
    agree: list[int] = field(default_factory=list)
    reliability: list[float] = field(default_factory=list)

    @property
    def n_sources(self) -> int:
        return int(sum(self.n))

    def reliability_at(self, distances) -> np.ndarray:
        """Reliability for each distance (NaN for all when uncalibrated, or for a NaN distance)."""
        distances = np.asarray(distances, dtype=float)
        if not self.reliability:
            return np.full(distances.shape, np.nan)
        bins = np.searchsorted(np.asarray(self.edges, dtype=float), distances, side="right")
        values = np.asarray(self.reliability)[np.clip(bins, 0, len(self.reliability) - 1)]
        return np.where(np.isfinite(distances), values, np.nan)

    def as_dict(self) -> dict:
        bounds = [0.0, *self.edges, None]
        return {
            "model_ref": self.model_ref,
            "n_sources": self.n_sources,
            "bins": [
                {"distance_min": bounds[i], "distance_max": bounds[i + 1], "n": self.n[i], "agree": self.agree[i],
                 "fraction_agree": self.agree[i] / self.n[i] if self.n[i] else None,
                 "reliability": self.reliability[i]}
                for i in range(len(self.n))
            ],
        }


def _placements(connection: Connection, stage: str, variant, cutout_ids=None) -> dict[int, tuple[int, int, float]]:
    t = variant.row_class.__table__
    query = select(t.c.cutout_id, t.c.node_x, t.c.node_y, t.c.distance).where(
        t.c.stage == stage, t.c.stage_version == variant.version, t.c.model_ref == variant.model
    )
    found = {}
    chunks = [None] if cutout_ids is None else [cutout_ids[s : s + 5000] for s in range(0, len(cutout_ids), 5000)]
    for chunk in chunks:
        where = query if chunk is None else query.where(t.c.cutout_id.in_(chunk))
        found.update((r.cutout_id, (r.node_x, r.node_y, r.distance)) for r in connection.execute(where))
    return found


def calibrate(connection: Connection, stage: str, variant, neuron_labels: dict | None = None) -> Calibration:
    """The distance-binned agreement of labelled sources with their labelled neurons.

    ``variant`` is the SOM variant (:class:`survey_classifier.query.Variant`)
    whose placements count; ``neuron_labels`` its map's current neuron
    labels (read when not given).
    """
    model_ref = variant.model
    if neuron_labels is None:
        neuron_labels = current_neuron_labels(connection, model_ref)
    calibration = Calibration(model_ref=model_ref)
    if not neuron_labels:
        return calibration
    sources = {i: row for i, row in current_source_labels(connection).items() if row["label"] is not None}
    placed = _placements(connection, stage, variant, sorted(sources))
    distances, agrees = [], []
    for cutout_id, (x, y, distance) in placed.items():
        neuron = neuron_labels.get((model_ref, x, y))
        if neuron is None or distance is None or not np.isfinite(distance):
            continue
        distances.append(float(distance))
        agrees.append(same_class(sources[cutout_id]["label"], neuron["label"]))
    if not distances:
        return calibration
    distances_array = np.asarray(distances)
    agree_array = np.asarray(agrees, dtype=bool)
    n_bins = int(max(1, min(MAX_BINS, len(distances) // MIN_PER_BIN)))
    edges = np.unique(np.quantile(distances_array, np.linspace(0, 1, n_bins + 1)[1:-1])) if n_bins > 1 else []
    bins = np.searchsorted(np.asarray(edges, dtype=float), distances_array, side="right")
    overall = (agree_array.sum() + 1.0) / (len(agree_array) + 2.0)
    calibration.edges = [float(e) for e in edges]
    for b in range(len(edges) + 1):
        inside = bins == b
        n, agree = int(inside.sum()), int(agree_array[inside].sum())
        calibration.n.append(n)
        calibration.agree.append(agree)
        calibration.reliability.append(float((agree + PRIOR_WEIGHT * overall) / (n + PRIOR_WEIGHT)))
    return calibration


def carried_labels(connection: Connection, stage: str, variant, node_x, node_y, distance) -> tuple | None:
    """The neuron label and its reliability for sources placed on nodes (``node_x``, ``node_y``).

    One entry per source, from its node and distance (masked or NaN where
    it has no placement); ``(labels, reliability)``, or None when the map
    has no labelled neuron.
    """
    if not has_neuron_labels(connection, variant.model):  # the common case, one index seek
        return None
    neuron_labels = current_neuron_labels(connection, variant.model)
    if not neuron_labels:
        return None
    calibration = calibrate(connection, stage, variant, neuron_labels)
    xs = np.ma.filled(np.ma.asarray(node_x, dtype=float), np.nan)
    ys = np.ma.filled(np.ma.asarray(node_y, dtype=float), np.nan)
    ds = np.ma.filled(np.ma.asarray(distance, dtype=float), np.nan)
    labels: list = []
    for x, y in zip(xs, ys):
        found = None
        if np.isfinite(x) and np.isfinite(y):
            found = neuron_labels.get((variant.model, int(x), int(y)))
        labels.append(None if found is None else found["label"])
    reliability = calibration.reliability_at(ds)
    reliability = np.where([label is not None for label in labels], reliability, np.nan)
    return labels, reliability
