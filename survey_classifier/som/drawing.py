"""Pictures of a saved map, with the cutouts of a results database mapped onto it.

Behind ``survey-classifier show som``. The cutouts are read again from
their files, prepared with the map's own preprocessing and mapped, so hit
counts, classes and members always belong to this map (placements stored
by an earlier run may come from another one).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

__all__ = ["draw_map", "map_database"]


def map_database(som, db_url, *, label_column=None):
    """Images, mapping and classes of the cutouts in the results database at ``db_url``.

    Returns ``(images, mapping, classes, skipped)``: ``classes`` holds the
    ``label_column`` value of each mapped cutout as text ("" when missing),
    or is None without a column; ``skipped`` lists ``"path: reason"`` for
    the cutouts that could not be read or prepared.

    Raises
    ------
    LookupError
        If ``label_column`` is not a column of the results table.
    """
    from survey_classifier.db import make_engine
    from survey_classifier.errors import CutoutError
    from survey_classifier.io.fits import read_cutout
    from survey_classifier.preprocess import PreprocessConfig
    from survey_classifier.query import query_results

    table = query_results(make_engine(db_url))
    if label_column is not None and label_column not in table.colnames:
        msg = f"the results in {db_url} have no column {label_column!r}; columns: {', '.join(table.colnames)}"
        raise LookupError(msg)
    config = PreprocessConfig.from_dict(som.preprocess_dict_)
    images, classes, skipped = [], [], []
    for row in table:
        try:
            with warnings.catch_warnings():  # the reader's quirks were reported when classifying
                warnings.simplefilter("ignore")
                images.append(read_cutout(row["path"]).preprocessed(config))
        except (CutoutError, ValueError) as exc:
            skipped.append(f"{row['path']}: {exc}")
            continue
        if label_column is not None:
            value = row[label_column]
            classes.append("" if np.ma.is_masked(value) or value is None else str(value))
    if not images:
        msg = f"none of the {len(table)} cutouts in {db_url} could be read and prepared for this map"
        raise ValueError(msg)
    images = np.stack(images)
    return images, som.map(images), (np.array(classes) if label_column else None), skipped


def draw_map(som_file, out_dir, *, db_url=None, label_column=None, nodes=(), neuron_labels_file=None) -> list[Path]:
    """Write the pictures of the map in ``som_file`` into ``out_dir``; returns their paths.

    Always ``prototypes.png`` (readable size; with hit counts, and the
    majority class and purity of each neuron when labelled), ``umatrix.png``
    and ``prototypes_tiles.png`` (for ``serve --som-image``). With
    ``db_url``: ``hits.png``, and for each ``(x, y)`` in ``nodes``
    ``node_X_Y.png``, its members turned into its frame. ``labels.png``
    (and the classes on ``prototypes.png``) with ``label_column``: the
    classes of the database's cutouts; otherwise with ``neuron_labels_file``:
    the map's own neuron classes (``neurons.json``). A ``neuron_labels_file``
    that does not fit the map is left out with a
    :class:`~survey_classifier.errors.SurveyClassifierWarning`.
    """
    from survey_classifier.som import RotationInvariantSOM
    from survey_classifier.som.labels import NeuronLabels
    from survey_classifier.som.plots import (
        plot_hits,
        plot_labels,
        plot_members,
        plot_prototypes,
        plot_umatrix,
        save_tiles,
    )

    som = RotationInvariantSOM.load(som_file)
    indices = [_node_index(som.grid_, x, y) for x, y in nodes]
    if indices and db_url is None:
        msg = "--node needs --db: the members of a neuron are the cutouts of a results database"
        raise ValueError(msg)
    if db_url is not None:  # before drawing anything: a wrong column fails first
        images, mapping, classes, _ = map_database(som, db_url, label_column=label_column)
    from_database = db_url is not None and label_column is not None
    labels = None if from_database else _map_labels(som, neuron_labels_file)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    hits = None
    written = [plot_umatrix(som, out / "umatrix.png"), save_tiles(som, out / "prototypes_tiles.png")]
    if db_url is not None:
        hits = np.bincount(mapping["node"], minlength=som.grid_.n_nodes)
        written.append(plot_hits(som, mapping["node"], out / "hits.png"))
        if classes is not None:
            names = sorted({name for name in classes if name})
            labels = NeuronLabels.fit(som.grid_, mapping["node"], classes, names)
    if labels is not None:
        written.append(plot_labels(som, labels, out / "labels.png"))
    if db_url is not None:
        for (x, y), node in zip(nodes, indices, strict=True):
            written.append(plot_members(som, images, mapping, node, out / f"node_{x}_{y}.png", classes=classes))
    written.insert(0, plot_prototypes(som, out / "prototypes.png", hits=hits, labels=labels, cell=1.3))
    return written


def _map_labels(som, neuron_labels_file):
    """The map's own neuron classes from ``neuron_labels_file``; None (with a warning) when they do not fit it."""
    from survey_classifier.errors import SurveyClassifierWarning
    from survey_classifier.som.labels import NeuronLabels

    if neuron_labels_file is None:
        return None
    try:
        return NeuronLabels.read(neuron_labels_file, grid=som.grid_)
    except ValueError as exc:
        warnings.warn(f"the map is drawn without its neuron classes: {exc}", SurveyClassifierWarning, stacklevel=3)
        return None


def _node_index(grid, x, y) -> int:
    found = np.flatnonzero((grid.index_xy[:, 0] == x) & (grid.index_xy[:, 1] == y))
    if found.size == 0:
        width, height = (int(n) + 1 for n in grid.index_xy.max(axis=0))
        msg = f"no neuron at ({x}, {y}) on this {grid.layout} map ({width} x {height} box)"
        raise ValueError(msg)
    return int(found[0])
