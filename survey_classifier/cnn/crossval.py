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
) -> dict:
    """Validation accuracy of one recipe in each fold: ``{"folds", "mean", "sem", "correct", "n"}``."""
    images = load_images(dataset.paths, preprocess_config, cache_dir=cache_dir)
    # read once; each fold keeps the rows away from its own held-out sources
    extra_images = None if extra is None else load_images(extra.paths, preprocess_config, cache_dir=cache_dir)
    accuracies, correct, n = [], 0, 0
    for index, split in enumerate(fold_splits(dataset, config, folds)):
        fold = dataclasses.replace(dataset, split=split)
        result = train_cnn(fold, preprocess_config, config, images=images, extra=extra,
                           extra_images=extra_images, cache_dir=cache_dir, progress=lambda line: None)
        valid = result.metrics["valid"]
        accuracies.append(valid["accuracy"])
        correct += int(round(valid["accuracy"] * valid["n"]))
        n += valid["n"]
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
    }
