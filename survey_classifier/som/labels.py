"""Labels for neurons, not sources: what a map says about morphology.

As in the Radio Galaxy Zoo and LoTSS analyses of PINK maps (Galvin et al.
2019; Mostert et al. 2021; Alam et al. 2025), each neuron takes the
majority class of the labelled sources that map to it, and a new source is
read off as the label of its best-matching neuron. The label is trusted up
to a calibrated distance to that neuron (:func:`reliable_distance`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["NeuronLabels", "reliable_distance", "registered_labels_file", "NEURON_LABELS_FILE"]

#: The file ``train som --labels`` writes beside the map's ``som.npz`` (:meth:`NeuronLabels.to_dict`).
NEURON_LABELS_FILE = "neurons.json"


@dataclass
class NeuronLabels:
    """Class counts per neuron and the label each neuron gives.

    Parameters
    ----------
    classes : tuple of str
        Class names, in the column order of ``counts``.
    counts : ndarray, (n_nodes, n_classes)
        Labelled sources per neuron and class.
    labels : ndarray of int, (n_nodes,)
        Index of each neuron's class: the majority of its own sources (with
        ``smoothing``, of the counts summed over the map with a Gaussian of
        that width in nodes); for a neuron without sources, or with a tie,
        the majority of the sources of the neurons within 1, 2, ... nodes
        of it on the map (the first ring that breaks the tie); -1 if none does.
    smoothing : float
        Width (in nodes) of the Gaussian the votes were summed with; 0: none.
    layout, grid_shape : str and tuple of int, optional
        The map the neurons are of (:class:`~survey_classifier.som.MapGrid`'s
        ``layout`` and ``shape``), as :meth:`fit` records them; None in
        labels written before they were recorded.
    """

    classes: tuple[str, ...]
    counts: np.ndarray
    labels: np.ndarray
    smoothing: float = 0.0
    layout: str | None = None
    grid_shape: tuple[int, int] | None = None

    @classmethod
    def fit(cls, grid, nodes, classes, class_names, *, smoothing=0.0) -> NeuronLabels:
        """Count the labelled sources (``nodes[i]`` with class ``classes[i]``) per neuron.

        ``grid`` is the map's :class:`~survey_classifier.som.MapGrid`;
        sources whose class is not in ``class_names`` are ignored. With
        ``smoothing`` > 0 a neuron's vote includes its neighbours' sources,
        weighted ``exp(-d^2 / 2 smoothing^2)`` at ``d`` nodes away: the map's
        order fills in neurons with few sources.
        """
        class_names = tuple(class_names)
        lookup = {name: index for index, name in enumerate(class_names)}
        counts = np.zeros((grid.n_nodes, len(class_names)), dtype=np.int64)
        for node, name in zip(np.asarray(nodes, dtype=int), classes, strict=True):
            if name in lookup:
                counts[node, lookup[name]] += 1
        votes = counts if not smoothing else np.exp(-0.5 * (grid.distances / smoothing) ** 2) @ counts
        return cls(class_names, counts, _vote(votes, grid.distances), float(smoothing), grid.layout,
                   tuple(grid.shape))

    def read_off(self, nodes) -> np.ndarray:
        """Class names for sources mapped to ``nodes`` ("" where no neuron has a label)."""
        names = np.array([*self.classes, ""], dtype=object)
        return names[self.labels[np.asarray(nodes, dtype=int)]]

    @property
    def hits(self) -> np.ndarray:
        """Labelled sources per neuron."""
        return self.counts.sum(axis=1)

    @property
    def purity(self) -> np.ndarray:
        """Per neuron, the fraction of its sources in its majority class (NaN if none)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return self.counts.max(axis=1) / self.hits

    @property
    def mean_purity(self) -> float:
        """Fraction of all labelled sources that belong to their neuron's majority class."""
        return float(self.counts.max(axis=1).sum() / max(self.counts.sum(), 1))

    def to_dict(self) -> dict:
        record = {"classes": list(self.classes), "counts": self.counts.tolist(), "labels": self.labels.tolist(),
                  "smoothing": self.smoothing}  # fmt: skip
        if self.layout is not None:
            record.update(layout=self.layout, grid_shape=list(self.grid_shape))
        return record

    @classmethod
    def from_dict(cls, record: dict, *, n_nodes: int | None = None, grid=None) -> NeuronLabels:
        """The labels :meth:`to_dict` wrote; ``n_nodes`` or ``grid``, when given, is the map they must fit.

        ``grid`` (a :class:`~survey_classifier.som.MapGrid`) checks the number
        of neurons and, where the labels record them, the map's layout and shape.

        Raises
        ------
        ValueError
            A record without ``classes``, ``counts`` or ``labels``, whose
            arrays disagree in shape, or that is not of a map of ``n_nodes``
            neurons (of ``grid``).
        """
        try:
            classes = tuple(str(name) for name in record["classes"])
            counts = np.asarray(record["counts"], dtype=np.int64).reshape(-1, len(classes))
            labels = np.asarray(record["labels"], dtype=np.int64)
            layout = None if record.get("layout") is None else str(record["layout"])
            shape = None if record.get("grid_shape") is None else tuple(int(n) for n in record["grid_shape"])
        except (KeyError, TypeError, ValueError) as exc:
            msg = f"neuron labels need classes, counts (neurons x classes) and labels: {exc}"
            raise ValueError(msg) from exc
        if labels.shape != (len(counts),) or labels.min(initial=0) < -1 or labels.max(initial=-1) >= len(classes):
            msg = (f"neuron labels: {len(counts)} neurons of counts but labels of shape {labels.shape} "
                   f"(each an index of {len(classes)} classes, or -1)")
            raise ValueError(msg)
        if grid is not None and len(counts) != grid.n_nodes:
            msg = (f"neuron labels of {len(counts)} neurons do not fit the {_grid_name(grid.layout, grid.shape)} "
                   f"map of {grid.n_nodes}")
            raise ValueError(msg)
        if n_nodes is not None and len(counts) != n_nodes:
            msg = f"neuron labels of {len(counts)} neurons do not fit a map of {n_nodes}"
            raise ValueError(msg)
        if grid is not None and layout is not None and (layout, shape) != (grid.layout, tuple(grid.shape)):
            msg = (f"neuron labels of a {_grid_name(layout, shape)} map do not fit a "
                   f"{_grid_name(grid.layout, grid.shape)} map")
            raise ValueError(msg)
        return cls(classes, counts, labels, float(record.get("smoothing", 0.0)), layout, shape)

    @classmethod
    def read(cls, path, *, n_nodes: int | None = None, grid=None) -> NeuronLabels:
        """The labels in a ``neurons.json`` written by ``train som --labels`` (see :meth:`from_dict`)."""
        import json
        from pathlib import Path

        try:
            record = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            msg = f"cannot read the neuron labels {path}: {exc}"
            raise ValueError(msg) from exc
        if not isinstance(record, dict):
            msg = f"{path}: neuron labels are a JSON object, not {type(record).__name__}"
            raise ValueError(msg)
        try:
            return cls.from_dict(record, n_nodes=n_nodes, grid=grid)
        except ValueError as exc:
            msg = f"{path}: {exc}"
            raise ValueError(msg) from exc


def registered_labels_file(ref, engine=None):
    """The verified local copy of the ``neurons.json`` registered with the map ``ref``, or None and why not.

    Returns ``(path, "")``, or ``(None, note)`` when the map carries no
    neuron classes. A registered map has the file registered with it (a
    :meth:`~survey_classifier.modelref.ModelRef.companion`), fetched and
    checked against its own sha256 by :func:`survey_classifier.artefacts.fetch`,
    as a shipped map has (recorded when a database is seeded or upgraded);
    never a file that happens to lie beside the map's local copy.

    Raises
    ------
    ModelError
        A neurons.json is registered with the map but cannot be fetched, or
        its bytes are not the registered ones; the message names the map.
    """
    from survey_classifier.artefacts import fetch
    from survey_classifier.errors import ModelError
    from survey_classifier.modelref import PACKAGE_SCHEME

    companion = ref.companion(NEURON_LABELS_FILE)
    if companion is not None:
        try:
            return fetch(companion, engine).path, ""
        except ModelError as exc:
            msg = f"the neuron classes registered with the map {ref.ref} ({NEURON_LABELS_FILE}) are refused: {exc}"
            raise ModelError(msg) from exc
    if ref.store.startswith(PACKAGE_SCHEME):
        return None, (f"the shipped map {ref.ref} carries no neuron classes (it was released without a "
                      f"{NEURON_LABELS_FILE})")
    return None, (f"the map {ref.ref} carries no neuron classes (no {NEURON_LABELS_FILE} was beside its file "
                  "when it was registered; `train som --labels` writes one)")


def _grid_name(layout: str, shape) -> str:
    """``hexagonal 5x5``: a map's layout and shape, as the CLI's ``--layout`` and ``--grid`` take them."""
    return f"{layout} {'x'.join(str(n) for n in shape)}" if shape is not None else layout


def _vote(counts, grid_distances) -> np.ndarray:
    labels = np.full(len(counts), -1, dtype=np.int64)
    rings = np.unique(np.round(grid_distances, 6))
    for node in range(len(counts)):
        for ring in rings:
            votes = counts[np.round(grid_distances[node], 6) <= ring].sum(axis=0)
            votes = np.round(votes, 9)  # smoothed votes: ties stay ties
            best = np.flatnonzero(votes == votes.max())
            if votes.max() > 0 and best.size == 1:
                labels[node] = best[0]
                break
    return labels


def reliable_distance(distances, correct, *, target=0.9, minimum=20) -> float | None:
    """Largest best-matching distance up to which labels are right at least ``target`` of the time.

    Sources are sorted by distance; the returned distance is the largest
    one at which the accuracy of all sources at or below it is still at
    least ``target`` (counting from the ``minimum``-th source on, so a few
    close sources alone do not set it). None when no such distance exists.

    >>> reliable_distance([1, 2, 3, 4, 5], [True, True, True, False, False], target=0.75, minimum=1)
    4.0
    """
    distances = np.asarray(distances, dtype=float)
    order = np.argsort(distances, kind="stable")
    right = np.cumsum(np.asarray(correct, dtype=float)[order])
    accuracy = right / np.arange(1, len(order) + 1)
    good = np.flatnonzero(accuracy[minimum - 1 :] >= target) + minimum - 1
    return float(distances[order[good[-1]]]) if good.size else None
