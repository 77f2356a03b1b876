"""The anomaly components and combinations on two halves of MiraBest.

The combined score's weights (``DEFAULT_WEIGHTS``) were chosen on the even
rows of ``mirabest/labels.csv`` ("half A", 43 of 514 sources rare) and are
reported on the odd rows ("half B", 43 of 513). This prints both halves and
the whole, for every component, the equal-weight mean of the four components
the scorer had before ``asymmetry`` (scorer version 2's rule), the
equal-weight mean of all five, and the shipped weights.

Run from the repository root (about 15 s on the 2-core machine)::

    .venv/bin/python bench/anomaly_halves.py

It runs ``measure, som, cnn`` and the ``anomaly`` stage with the shipped
scorer over all 1027 cutouts into a temporary SQLite database. Rare means
hybrid or a non-standard morphology, as in ``evaluate anomaly``.

Last, a check on data that played no part in any choice: the rotational
asymmetry of first4's images (Bent against FR I and FR II). The measure
stage cannot run on them (8-bit PNGs already clipped to zero below their
noise, so there is no noise to threshold at); the same formula is applied
to their preprocessed 64 px images instead.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
from astropy.table import Table
from sklearn.metrics import roc_auc_score

from survey_classifier.anomaly.scorer import COMPONENTS, DEFAULT_WEIGHTS
from survey_classifier.cnn.data import read_image
from survey_classifier.cutout import CutoutSource
from survey_classifier.db import make_engine, upgrade
from survey_classifier.pipeline import run_pipeline
from survey_classifier.preprocess import PreprocessConfig, preprocess
from survey_classifier.query import query_results
from survey_classifier.stages.measure import rotational_asymmetry
from survey_classifier.stages.registry import load_stage

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SURVEY_CLASSIFIER_DATA", REPO.parent / "shared" / "data"))
DATA = SHARED / "mirabest"


def _percentile(values: np.ndarray) -> np.ndarray:
    """Percentile of each value within all of them (as the scorer, fitted on these same cutouts)."""
    finite = np.sort(values[np.isfinite(values)])
    return np.where(np.isfinite(values), np.searchsorted(finite, values, side="right") / len(finite), np.nan)


def _weighted(percentiles: dict[str, np.ndarray], weights: dict[str, float]) -> np.ndarray:
    stacked = np.array([percentiles[name] for name in weights])
    w = np.array(list(weights.values()))[:, None] * np.isfinite(stacked)
    return np.nansum(stacked * w, axis=0) / w.sum(axis=0)


def main() -> None:
    labels = Table.read(DATA / "labels.csv")
    with tempfile.TemporaryDirectory() as folder:
        url = f"sqlite:///{folder}/halves.db"
        upgrade(url)
        engine = make_engine(url)
        stages = [load_stage(name) for name in ("measure", "som", "cnn", "anomaly")]
        run_pipeline([CutoutSource(str(DATA / "fits" / f)) for f in labels["file"]], stages, engine)
        results = query_results(engine)
        engine.dispose()
    row_of = {name: i for i, name in enumerate(labels["file"])}
    rows = np.array([row_of[Path(p).name] for p in results["path"]])
    rare = np.asarray((labels["fr_class"] == "hybrid") | (labels["morphology"] != "standard"))[rows]
    values = {name: np.ma.filled(results[f"anomaly_{name}"].astype(float), np.nan) for name in COMPONENTS}
    percentiles = {name: _percentile(v) for name, v in values.items()}
    four = [name for name in COMPONENTS if name != "asymmetry"]
    scores = dict(values)
    scores["mean of the 4 (scorer 2's rule)"] = _weighted(percentiles, dict.fromkeys(four, 1.0))
    scores["mean of all 5"] = _weighted(percentiles, dict.fromkeys(COMPONENTS, 1.0))
    scores["shipped (stored by the stage)"] = np.ma.filled(results["anomaly_score"].astype(float), np.nan)
    parts = {"A (even rows)": rows % 2 == 0, "B (odd rows)": rows % 2 == 1, "all": np.ones(len(rows), bool)}
    print(f"weights: {DEFAULT_WEIGHTS}")
    print(f"{'score':34s}" + "".join(f"{name:>26s}" for name in parts))
    print(f"{'':34s}" + "".join(f"{'AUROC  rare in top 20':>26s}" for _ in parts))
    for name, score in scores.items():
        cells = []
        for part in parts.values():
            filled = np.where(np.isfinite(score[part]), score[part], -np.inf)
            top = np.argsort(-filled, kind="stable")[:20]
            auroc = roc_auc_score(rare[part], np.where(np.isfinite(filled), filled, np.nanmin(score) - 1))
            cells.append(f"{auroc:.3f} {int(rare[part][top].sum()):6d} / 20")
        print(f"{name:34s}" + "".join(f"{c:>26s}" for c in cells))
    print("rare sources: " + ", ".join(f"{name} {int(rare[p].sum())} of {int(p.sum())}" for name, p in parts.items()))
    first4_check()


def first4_check() -> None:
    catalogue = Table.read(SHARED / "first4" / "labels.csv")
    config = PreprocessConfig(size=64)
    asymmetry = np.array([
        rotational_asymmetry(preprocess(read_image(SHARED / "first4" / "png" / name), config))
        for name in catalogue["file"]
    ], dtype=float)
    labels = np.asarray(catalogue["label"])
    medians = ", ".join(f"{label} {np.nanmedian(asymmetry[labels == label]):.3f}" for label in sorted(set(labels)))
    print(f"first4, median asymmetry of the 64 px image: {medians}")
    lobed = np.isin(labels, ["Bent", "FRI", "FRII"]) & np.isfinite(asymmetry)
    auroc = roc_auc_score(labels[lobed] == "Bent", asymmetry[lobed])
    print(f"first4, Bent against FR I and FR II ({int(lobed.sum())} images): AUROC {auroc:.3f}")


if __name__ == "__main__":
    main()
