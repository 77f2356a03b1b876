"""The transfer-learning table (after Yosinski et al. 2014).

On one fixed split and several seeds, three ways to get a classifier:

``scratch``
    the compact network, randomly initialised, all layers trained for
    ``head_epochs + fine_tune_epochs`` epochs;
``frozen``
    the base network frozen, a new head trained for ``head_epochs``;
``fine-tuned``
    as ``frozen``, then everything (batch normalisation excepted)
    fine-tuned for ``fine_tune_epochs`` at a low learning rate.

Test accuracy is reported as mean and sample standard deviation over seeds.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from survey_classifier.cnn.data import LabelledSet, load_images
from survey_classifier.cnn.train import TrainingConfig, train_cnn
from survey_classifier.preprocess import PreprocessConfig

__all__ = ["SETTINGS", "transfer_table", "format_table"]

SETTINGS = ("scratch", "frozen", "fine-tuned")


def _setting_config(setting: str, base, config: TrainingConfig, seed: int) -> TrainingConfig:
    if setting == "scratch":
        return replace(
            config, backbone="compact", weights=None, freeze=0, seed=seed,
            head_epochs=config.head_epochs + config.fine_tune_epochs, fine_tune_epochs=0,
        )
    if setting == "frozen":
        return replace(config, backbone=str(base), freeze="all", fine_tune_epochs=0, seed=seed)
    return replace(config, backbone=str(base), freeze="all", seed=seed)


def transfer_table(
    dataset: LabelledSet,
    preprocess_config: PreprocessConfig,
    base,
    *,
    config: TrainingConfig,
    seeds=(0, 1, 2),
    settings=SETTINGS,
    progress=print,
    cache_dir=None,
) -> dict:
    """Train every setting with every seed; returns accuracies and summary.

    Parameters
    ----------
    dataset : LabelledSet
    preprocess_config : PreprocessConfig
    base : str or Path
        The saved base network (``.keras``).
    config : TrainingConfig
        Head, epochs, learning rates and split; ``fine_tune_epochs`` must
        be positive for the ``fine-tuned`` setting to differ from ``frozen``.
    seeds : sequence of int
    """
    images = load_images(dataset.paths, preprocess_config, cache_dir=cache_dir)
    runs = []
    for setting in settings:
        for seed in seeds:
            run_config = _setting_config(setting, base, config, int(seed))
            progress(f"== {setting}, seed {seed}")
            result = train_cnn(
                dataset, preprocess_config, run_config, images=images,
                progress=lambda line: None,
            )
            test = result.metrics["test"]
            runs.append({
                "setting": setting,
                "seed": int(seed),
                "test_accuracy": test["accuracy"],
                "valid_accuracy": result.metrics["valid"].get("accuracy"),
                "seconds": round(result.seconds, 1),
            })
            progress(
                f"   test accuracy {test['accuracy']:.4f}  valid "
                f"{result.metrics['valid'].get('accuracy', float('nan')):.4f}  "
                f"({result.seconds:.0f} s)"
            )
    summary = {}
    for setting in settings:
        values = np.array([r["test_accuracy"] for r in runs if r["setting"] == setting])
        valid = np.array([r["valid_accuracy"] for r in runs if r["setting"] == setting], float)
        summary[setting] = {
            "mean": float(values.mean()),
            "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
            "valid_mean": float(np.nanmean(valid)) if len(valid) else None,
            "n_seeds": int(len(values)),
        }
    return {
        "runs": runs,
        "summary": summary,
        "config": config.to_dict(),
        "preprocess": preprocess_config.to_dict(),
        "base": str(base),
        "seeds": [int(s) for s in seeds],
    }


def format_table(table: dict) -> str:
    """The summary as a Markdown table."""
    lines = [
        "| setting | test accuracy (mean ± std) | validation accuracy (mean) | seeds |",
        "|---|---|---|---|",
    ]
    for setting, row in table["summary"].items():
        lines.append(
            f"| {setting} | {100 * row['mean']:.1f} ± {100 * row['std']:.1f} % | "
            f"{100 * (row['valid_mean'] or 0):.1f} % | {row['n_seeds']} |"
        )
    return "\n".join(lines)
