"""Cross-validated comparison of training recipes, without touching the test part.

A 75-source validation part cannot separate recipes a few points apart
(one source is 1.3 points). This module keeps the test part of the usual
split aside and runs K-fold cross-validation over the training and
validation parts together: each fold is, in turn, the validation part
(early stopping and the accuracy reported) while the others train. Folds
are stratified and source-disjoint (rows within ``group_radius_arcsec`` stay
together). Only validation figures are returned; the test part is never
evaluated here.

    python -m survey_classifier.cnn.crossval --catalogue labels.csv ... --recipe NAME:OPTIONS

See ``docs/cnn.md`` for the recipes compared for the shipped model.
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
    accuracies, correct, n = [], 0, 0
    for index, split in enumerate(fold_splits(dataset, config, folds)):
        fold = dataclasses.replace(dataset, split=split)
        result = train_cnn(fold, preprocess_config, config, images=images, extra=extra,
                           cache_dir=cache_dir, progress=lambda line: None)
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


def main(argv=None) -> None:
    import argparse
    import json
    import shlex

    from survey_classifier.cnn.cli import _parse_head, _parse_where
    from survey_classifier.cnn.data import read_catalogue
    from survey_classifier.preprocess import PreprocessConfig

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--catalogue", required=True)
    parser.add_argument("--label-column", default="label")
    parser.add_argument("--where", action="append", default=[])
    parser.add_argument("--classes", default=None)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--output", default=None, help="write the results as JSON here")
    parser.add_argument(
        "--recipe", action="append", required=True, metavar="NAME:OPTIONS",
        help="e.g. 'fast:--fine-tune-lr 1e-3 --fine-tune-epochs 60 --extra-train-where confidence=uncertain'",
    )
    args = parser.parse_args(argv)
    dataset = read_catalogue(args.catalogue, label_column=args.label_column,
                             classes=args.classes.split(",") if args.classes else None,
                             where=_parse_where(args.where))
    recipe_parser = argparse.ArgumentParser(prog="recipe")
    recipe_parser.add_argument("--backbone", default="compact")
    recipe_parser.add_argument("--head", default="64")
    recipe_parser.add_argument("--head-epochs", type=int, default=15)
    recipe_parser.add_argument("--fine-tune-epochs", type=int, default=0)
    recipe_parser.add_argument("--fine-tune-lr", type=float, default=1e-4)
    recipe_parser.add_argument("--crop", type=int, default=100)
    recipe_parser.add_argument("--size", type=int, default=64)
    recipe_parser.add_argument("--seed", type=int, default=0)
    recipe_parser.add_argument("--extra-train-where", action="append", default=[])
    results = {}
    for recipe in args.recipe:
        name, _, options = recipe.partition(":")
        values = recipe_parser.parse_args(shlex.split(options))
        config = TrainingConfig(
            backbone=values.backbone, head=_parse_head(values.head), head_epochs=values.head_epochs,
            fine_tune_epochs=values.fine_tune_epochs, fine_tune_learning_rate=values.fine_tune_lr,
            seed=values.seed,
        )
        extra = read_catalogue(
            args.catalogue, label_column=args.label_column, classes=dataset.classes,
            where=_parse_where(values.extra_train_where), min_per_class=0,
        ) if values.extra_train_where else None
        preprocess_config = PreprocessConfig(size=values.size, crop=values.crop or None)
        print(f"== {name}: {options}", flush=True)
        summary = cross_validate(dataset, preprocess_config, config, folds=args.folds, extra=extra,
                                 cache_dir=args.cache_dir, progress=lambda line: print(line, flush=True))
        summary["options"] = options
        results[name] = summary
        print(f"{name}: {summary['mean']:.4f} +- {summary['sem']:.4f} "
              f"({summary['correct']}/{summary['n']})", flush=True)
        if args.output:
            with open(args.output, "w") as handle:
                json.dump(results, handle, indent=2)


if __name__ == "__main__":
    main()
