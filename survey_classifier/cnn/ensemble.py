"""Out-of-fold predictions of cross-validated recipes, and ensembles of trained classifiers.

``train cnn --cross-validate`` records, for every held-out source of every
fold, the network's probabilities before any temperature
(``probabilities_t1`` in ``crossval.json``). This module reads them back:

- :func:`out_of_fold` pairs the runs of one or more recipes by training
  seed, fold and source, so that a candidate (one recipe, or the average of
  several recipes' probabilities) can be scored fold by fold
  (:func:`fold_accuracies`) and given a temperature fitted on predictions
  that no model saw in training (:func:`out_of_fold_calibration`);
- :func:`calibrated_ensemble` builds one Keras network from trained
  classifiers (of any architectures with the same input): each member's
  logits divided by one temperature, the probabilities averaged, the
  embeddings joined. It exports through
  :func:`~survey_classifier.cnn.export.export_onnx` like any classifier.

    survey-classifier train cnn-ensemble --member A --member B \\
        --temperature-from cv-A-0/crossval.json,cv-B-0/crossval.json ... --output E

(see ``docs/cnn.md``, "Choosing fr-cnn:2").
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from survey_classifier.errors import StageConfigError

__all__ = ["out_of_fold", "fold_accuracies", "out_of_fold_calibration", "calibrated_ensemble", "read_crossval"]


def read_crossval(path) -> dict:
    """A ``crossval.json`` with per-source out-of-fold probabilities, checked."""
    path = Path(path)
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        msg = f"cannot read the cross-validation record {path}: {exc}"
        raise StageConfigError(msg) from exc
    folds = record.get("fold_records")
    if not folds or any("probabilities_t1" not in fold for fold in folds):
        msg = (f"{path} has no per-source out-of-fold probabilities before the temperature "
               "(fold_records[].probabilities_t1); rerun train cnn --cross-validate")
        raise StageConfigError(msg)
    return record


def out_of_fold(runs, *, common_folds: bool = False) -> dict:
    """Out-of-fold logits of a candidate, paired over its member recipes.

    Parameters
    ----------
    runs : list of list of path
        One entry per training seed (or repetition); each entry lists one
        ``crossval.json`` per member recipe, in member order. The members'
        runs of one entry must hold the same folds of the same sources.
    common_folds : bool
        Use the folds that every member's run of an entry has done (of
        runs stopped early, whose ``crossval.json`` is written after each
        fold); otherwise a different number of folds is an error.

    Returns
    -------
    dict
        ``logits``: (members, n, k) log-probabilities before the temperature
        (softmax of them gives back the probabilities, and dividing them by
        ``T`` is dividing the logits by ``T``); ``targets`` (n,); ``run`` and
        ``fold`` (n,) indices; ``files`` (n,).
    """
    logits, targets, run_index, fold_index, files = [], [], [], [], []
    for r, paths in enumerate(runs):
        records = [read_crossval(p) for p in paths]
        first = records[0]["fold_records"]
        if common_folds:
            first = first[:min(len(record["fold_records"]) for record in records)]
        for other, path in zip(records[1:], paths[1:], strict=False):
            if not common_folds and len(other["fold_records"]) != len(first):
                msg = f"{path} has {len(other['fold_records'])} folds, {paths[0]} has {len(first)}"
                raise StageConfigError(msg)
        for f, fold in enumerate(first):
            order = {name: i for i, name in enumerate(fold["files"])}
            members = []
            for record, path in zip(records, paths, strict=True):
                theirs = record["fold_records"][f]
                if sorted(theirs["files"]) != sorted(fold["files"]):
                    msg = f"fold {f + 1} of {path} holds other sources than fold {f + 1} of {paths[0]}"
                    raise StageConfigError(msg)
                index = np.array([order[name] for name in theirs["files"]])
                p = np.empty((len(index), len(theirs["probabilities_t1"][0])))
                p[index] = np.asarray(theirs["probabilities_t1"], dtype=np.float64)
                members.append(np.log(np.clip(p, 1e-300, None)))
            logits.append(np.stack(members))
            targets.append(np.asarray(fold["targets"], dtype=int))
            run_index.append(np.full(len(fold["files"]), r))
            fold_index.append(np.full(len(fold["files"]), f))
            files.extend(fold["files"])
    return {
        "logits": np.concatenate(logits, axis=1),
        "targets": np.concatenate(targets),
        "run": np.concatenate(run_index),
        "fold": np.concatenate(fold_index),
        "files": np.asarray(files),
    }


def fold_accuracies(oof: dict, members=None) -> np.ndarray:
    """Accuracy of each (run, fold) of the members' averaged probabilities (T = 1), shape (runs, folds)."""
    from survey_classifier.cnn.calibration import softmax

    logits = oof["logits"] if members is None else oof["logits"][list(members)]
    predicted = softmax(logits).mean(axis=0).argmax(axis=1)
    correct = predicted == oof["targets"]
    runs, folds = int(oof["run"].max()) + 1, int(oof["fold"].max()) + 1
    table = np.full((runs, folds), np.nan)
    for r in range(runs):
        for f in range(folds):
            pick = (oof["run"] == r) & (oof["fold"] == f)
            if pick.any():
                table[r, f] = correct[pick].mean()
    return table


def out_of_fold_calibration(oof: dict, *, uncertain_below: float, bins: int = 15) -> tuple[dict, dict]:
    """One temperature for the candidate, fitted on all its out-of-fold predictions.

    Returns ``(record, curves)``: the record as training writes it
    (``temperature``, ``bins``, ``uncertain_below``, ``fitted_on`` and, under
    ``"out_of_fold"``, n, NLL and ECE before and after) and the
    probabilities before and after for the reliability diagram.
    """
    from survey_classifier.cnn.calibration import (
        expected_calibration_error,
        fit_temperature,
        negative_log_likelihood,
        softmax,
    )

    logits, targets = oof["logits"], oof["targets"]
    temperature = fit_temperature(logits, targets)
    before, after = softmax(logits).mean(axis=0), softmax(logits / temperature).mean(axis=0)
    runs, folds = int(oof["run"].max()) + 1, int(oof["fold"].max()) + 1
    record = {
        "temperature": temperature,
        "bins": bins,
        "uncertain_below": float(uncertain_below),
        "fitted_on": f"out-of-fold predictions of the cross-validation ({runs} runs x {folds} folds, "
                     f"{len(targets)} predictions)",
        "out_of_fold": {
            "n": int(len(targets)),
            "nll_before": negative_log_likelihood(logits, targets, 1.0),
            "nll_after": negative_log_likelihood(logits, targets, temperature),
            "ece_before": expected_calibration_error(before, targets, bins),
            "ece_after": expected_calibration_error(after, targets, bins),
            "accuracy_before": float(np.mean(before.argmax(axis=1) == targets)),
            "accuracy_after": float(np.mean(after.argmax(axis=1) == targets)),
        },
    }
    curves = {"part": "out-of-fold", "targets": targets, "before": before, "after": after}
    return record, curves


def calibrated_ensemble(members, temperature: float, *, name: str = "ensemble"):
    """One network from trained classifiers: softmax(logits / T) of each, averaged; embeddings joined.

    Each member may be calibrated already (its own temperature is replaced
    by ``temperature``) or not. With one member this is that member with
    ``temperature``. The outputs are ``(probabilities, embedding)``, what
    :func:`~survey_classifier.cnn.export.export_onnx` writes.
    """
    from survey_classifier.cnn.calibration import calibrated_classifier
    from survey_classifier.cnn.train import ensemble_classifier

    if not members:
        msg = "an ensemble needs at least one member"
        raise StageConfigError(msg)
    calibrated = [calibrated_classifier(member, temperature) for member in members]
    if len(calibrated) == 1:
        return calibrated[0]
    return ensemble_classifier(calibrated, name=name)
