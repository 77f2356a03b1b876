"""Cross-validated comparison of training recipes, without touching the test part.

A 75-source validation part cannot separate recipes a few points apart
(one source is 1.3 points). This module keeps the test part of the usual
split aside and runs K-fold cross-validation over the training and
validation parts together: each fold is, in turn, the validation part
(early stopping and the accuracy reported) while the others train. Folds
are stratified and source-disjoint (rows within ``group_radius_arcsec`` stay
together). Only validation figures are returned; the test part is never
evaluated here.

    survey-classifier train cnn ... --cross-validate 5 --output DIR

(any recipe options of ``train cnn``; writes ``DIR/crossval.json`` and
trains no model to keep). See ``docs/cnn.md`` for the recipes compared for
the shipped model.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from survey_classifier.cnn.data import LabelledSet, load_images, source_groups
from survey_classifier.cnn.train import TrainingConfig, make_split, train_cnn

__all__ = ["cross_validate", "fold_splits"]


def fold_splits(dataset: LabelledSet, config: TrainingConfig, folds: int) -> list[np.ndarray]:
    """Split labels ("train"/"valid"/"test") for each fold; "test" is the usual test part."""
    from sklearn.model_selection import StratifiedGroupKFold

    usual = make_split(dataset, config)
    development = np.sort(np.concatenate([usual["train"], usual["valid"]]))
    groups = (
        source_groups(dataset.ra_deg, dataset.dec_deg, radius_arcsec=config.group_radius_arcsec)
        if dataset.ra_deg is not None else np.arange(len(dataset))
    )
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=config.split_seed)
    labels = []
    for _, held in splitter.split(development, dataset.targets[development], groups[development]):
        split = np.full(len(dataset), "train", dtype=object)
        split[usual["test"]] = "test"
        split[development[held]] = "valid"
        labels.append(split.astype(str))
    return labels


def cross_validate(
    dataset: LabelledSet,
    preprocess_config,
    config: TrainingConfig,
    *,
    folds: int = 5,
    extra: LabelledSet | None = None,
    progress=print,
    cache_dir=None,
    on_fold=None,
) -> dict:
    """Validation accuracy of one recipe in each fold.

    Returns ``{"folds", "mean", "sem", "correct", "n", "fold_records"}``:
    the fold accuracies, the pooled accuracy and its binomial standard
    error, and per fold the held-out sources' files, targets and
    out-of-fold probabilities (see :func:`_fold_record`). The usual test
    part is neither trained on nor scored. ``on_fold``, if given, is called
    after each fold with the folds done so far.
    """
    images = load_images(dataset.paths, preprocess_config, cache_dir=cache_dir)
    # read once; each fold keeps the rows away from its own held-out sources
    extra_images = None if extra is None else load_images(extra.paths, preprocess_config, cache_dir=cache_dir)
    accuracies, correct, n, records = [], 0, 0, []
    for index, split in enumerate(fold_splits(dataset, config, folds)):
        fold = dataclasses.replace(dataset, split=split)
        result = train_cnn(fold, preprocess_config, config, images=images, extra=extra,
                           extra_images=extra_images, cache_dir=cache_dir, progress=lambda line: None,
                           score_test=False)
        valid = result.metrics["valid"]
        accuracies.append(valid["accuracy"])
        correct += int(round(valid["accuracy"] * valid["n"]))
        n += valid["n"]
        records.append(_fold_record(result, np.flatnonzero(split == "valid"), images))
        if on_fold is not None:  # e.g. write what is done so far, in case the run is stopped
            on_fold({"folds": list(accuracies), "fold_records": list(records), "complete": False})
        progress(f"fold {index + 1}/{folds}: validation accuracy {valid['accuracy']:.4f} "
                 f"({valid['n']} sources, {result.seconds:.0f} s)")
    accuracies = np.asarray(accuracies)
    pooled = correct / n
    return {
        "folds": accuracies.tolist(),
        "mean": float(pooled),
        "sem": float(np.sqrt(pooled * (1 - pooled) / n)),
        "correct": correct,
        "n": n,
        "fold_records": records,
        "complete": True,
    }


def _fold_record(result, held, images) -> dict:
    """One fold's out-of-fold predictions: every held-out source with its probabilities.

    ``probabilities`` are the model's (calibrated by the temperature
    fitted on this very fold, when ``calibrate``); ``probabilities_t1`` are
    the same network's before any temperature (a single network only), so
    that runs can be combined (ensembles, a temperature fitted on all
    out-of-fold predictions) without the fold's own fit.
    """
    from survey_classifier.cnn.calibration import classifier_logits, softmax
    from survey_classifier.cnn.train import predict_probabilities

    dataset = result.dataset
    record = {
        "files": [path.name for path in (dataset.paths[i] for i in held)],
        "targets": dataset.targets[held].tolist(),
        "probabilities": predict_probabilities(result.model, images[held]).tolist(),
        "best_epoch": result.metrics["best_epoch"],
        "temperature": (result.metrics.get("calibration") or {}).get("temperature"),
    }
    if result.config.members == 1:
        record["probabilities_t1"] = softmax(classifier_logits(result.model, images[held])).tolist()
    return record
