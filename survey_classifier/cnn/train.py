"""The transfer-learning recipe.

1. Load a base network (:func:`~survey_classifier.cnn.backbones.build_backbone`).
2. Freeze its first ``freeze`` layers (``"all"`` by default).
3. Add a new head (dense layers, dropout, softmax) and train it for
   ``head_epochs`` epochs.
4. Optionally unfreeze the base (batch-normalisation layers stay frozen)
   and fine-tune everything for ``fine_tune_epochs`` at a low learning rate.

Each phase decays its learning rate along a cosine to 5 % of its start.
Training sees rotated and flipped copies of the images (radio sources have
no preferred orientation), class weights balance the classes, and the
weights of the epoch with the lowest validation loss are kept. The test
part of the split is evaluated once, at the end, and never used for any
choice.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from survey_classifier.cnn.data import LabelledSet, load_images, source_groups, split_indices
from survey_classifier.errors import StageConfigError
from survey_classifier.preprocess import PreprocessConfig

__all__ = ["TrainingConfig", "TrainingResult", "train_cnn", "evaluate", "plot_curves"]

PROBABILITIES_LAYER = "probabilities"


@dataclass
class TrainingConfig:
    """Everything that decides a training run (recorded with the model).

    Parameters
    ----------
    backbone : str
        ``"compact"``, a ``keras.applications`` name or a saved ``.keras`` file.
    weights : str or None
        ``"imagenet"``, a weights file, or None.
    freeze : int or "all"
        Base layers kept frozen while the head trains.
    head : tuple of int
        Units of the new dense layers (empty: softmax on the features).
    dropout : float
        Dropout before each new dense layer and the softmax.
    head_epochs, head_learning_rate
        The first phase.
    fine_tune_epochs, fine_tune_learning_rate
        The second phase (0 epochs skips it).
    batch_size : int
    class_weight : {"balanced", "none"}
    augment : bool
        Random rotations (any angle) and flips of the training images.
    test_fraction, valid_fraction : float
        Parts of the catalogue held out (ignored with a predefined split).
    split_seed : int
        Seed of the split (kept fixed across training seeds).
    seed : int
        Seed of weights initialisation, shuffling and augmentation.
    group_radius_arcsec : float
        Rows closer than this are one source and stay in one part.
    """

    backbone: str = "compact"
    weights: str | None = None
    freeze: int | str = "all"
    head: tuple[int, ...] = (64,)
    dropout: float = 0.3
    head_epochs: int = 30
    head_learning_rate: float = 1e-3
    fine_tune_epochs: int = 0
    fine_tune_learning_rate: float = 1e-4
    batch_size: int = 32
    class_weight: str = "balanced"
    augment: bool = True
    test_fraction: float = 0.2
    valid_fraction: float = 0.15
    split_seed: int = 0
    seed: int = 0
    group_radius_arcsec: float = 60.0

    def to_dict(self) -> dict:
        values = asdict(self)
        values["head"] = list(self.head)
        return values


@dataclass
class TrainingResult:
    """What :func:`train_cnn` returns: the Keras model and its record."""

    model: object
    classes: list[str]
    preprocess_config: PreprocessConfig
    config: TrainingConfig
    metrics: dict
    history: dict
    split: dict[str, np.ndarray]
    dataset: LabelledSet
    seconds: float
    images: dict[str, np.ndarray] = field(default_factory=dict, repr=False)


def _set_seed(seed: int) -> None:
    import keras

    keras.utils.set_random_seed(int(seed))


def _flat_layers(model):
    layers = []
    for layer in model.layers:
        if hasattr(layer, "layers") and layer.layers:
            layers.extend(_flat_layers(layer))
        elif layer.__class__.__name__ != "InputLayer":
            layers.append(layer)
    return layers


def _set_trainable(base, freeze, *, keep_batchnorm_frozen: bool) -> None:
    layers = _flat_layers(base)
    if freeze == "all":
        n_frozen = len(layers)
    else:
        n_frozen = int(freeze)
        if n_frozen < 0:
            msg = f"freeze must be 'all' or a number of layers >= 0, got {freeze}"
            raise StageConfigError(msg)
    base.trainable = True
    for container in [base, *[m for m in base.layers if hasattr(m, "layers")]]:
        container.trainable = True
    for index, layer in enumerate(layers):
        is_bn = layer.__class__.__name__ == "BatchNormalization"
        layer.trainable = index >= n_frozen and not (keep_batchnorm_frozen and is_bn)


def build_classifier(base, n_classes: int, config: TrainingConfig):
    """Put a new head (dense, dropout, softmax) on ``base``'s features."""
    import keras
    from keras import layers

    x = base.output
    for index, units in enumerate(config.head):
        if config.dropout:
            x = layers.Dropout(config.dropout, name=f"head_dropout{index}")(x)
        x = layers.Dense(units, activation="relu", name=f"head_dense{index}")(x)
    if config.dropout:
        x = layers.Dropout(config.dropout, name="head_dropout_out")(x)
    outputs = layers.Dense(n_classes, activation="softmax", name=PROBABILITIES_LAYER)(x)
    return keras.Model(base.input, outputs, name="classifier")


def _augmenter(seed: int):
    import keras

    return keras.Sequential(
        [
            keras.layers.RandomFlip("horizontal_and_vertical", seed=seed),
            keras.layers.RandomRotation(0.5, fill_mode="constant", fill_value=0.0, seed=seed + 1),
        ],
        name="augment",
    )


def _dataset(images, targets, *, batch_size, shuffle, augment, seed):
    import tensorflow as tf

    data = tf.data.Dataset.from_tensor_slices((images, targets))
    if shuffle:
        data = data.shuffle(len(images), seed=seed, reshuffle_each_iteration=True)
    data = data.batch(batch_size)
    if augment:
        augmenter = _augmenter(seed)
        data = data.map(
            lambda x, y: (augmenter(x, training=True), y), num_parallel_calls=tf.data.AUTOTUNE
        )
    return data.prefetch(tf.data.AUTOTUNE)


def _epoch_callback(phase: str, epochs: int, progress):
    """A Keras callback: one progress line per epoch; keeps the best weights.

    "Best" is the lowest validation loss (training loss without a
    validation part); those weights are restored when the phase ends.
    """
    import keras

    class EpochLog(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.best_loss = math.inf
            self.best_weights = None
            self.best_epoch = -1
            self.started = time.perf_counter()

        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            loss = logs.get("val_loss", logs.get("loss", math.inf))
            mark = ""
            if loss < self.best_loss:
                self.best_loss, self.best_epoch = loss, epoch
                self.best_weights = self.model.get_weights()
                mark = " *"
            progress(
                f"[{phase}] epoch {epoch + 1}/{epochs}  "
                f"loss {logs.get('loss', float('nan')):.4f}  "
                f"acc {logs.get('accuracy', float('nan')):.3f}  "
                f"val_loss {logs.get('val_loss', float('nan')):.4f}  "
                f"val_acc {logs.get('val_accuracy', float('nan')):.3f}  "
                f"{time.perf_counter() - self.started:.1f}s{mark}"
            )

        def on_train_end(self, logs=None):
            if self.best_weights is not None:
                self.model.set_weights(self.best_weights)

    return EpochLog()


def _class_weights(targets, n_classes, mode):
    if mode == "none":
        return None
    if mode != "balanced":
        msg = f"class_weight must be 'balanced' or 'none', got {mode!r}"
        raise StageConfigError(msg)
    counts = np.bincount(targets, minlength=n_classes).astype(float)
    return {k: float(len(targets) / (n_classes * max(c, 1.0))) for k, c in enumerate(counts)}


def _fit_phase(model, phase, epochs, learning_rate, train_data, valid_data, class_weight, progress):
    import keras

    steps = epochs * max(1, int(train_data.cardinality()))
    schedule = keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps=steps, alpha=0.05)
    model.compile(
        optimizer=keras.optimizers.Adam(schedule),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    callback = _epoch_callback(phase, epochs, progress)
    history = model.fit(
        train_data,
        validation_data=valid_data,
        epochs=epochs,
        class_weight=class_weight,
        callbacks=[callback],
        shuffle=False,  # the tf.data pipeline shuffles
        verbose=0,
    )
    return history.history, callback.best_epoch


def evaluate(model, images, targets, classes) -> dict:
    """Accuracy, per-class precision and recall, confusion matrix."""
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    if len(images) == 0:
        return {"n": 0}
    probabilities = model.predict(images, batch_size=256, verbose=0)
    predicted = probabilities.argmax(axis=1)
    labels = list(range(len(classes)))
    precision, recall, f1, support = precision_recall_fscore_support(
        targets, predicted, labels=labels, zero_division=0
    )
    return {
        "n": int(len(targets)),
        "accuracy": float((predicted == targets).mean()),
        "per_class": {
            name: {
                "precision": float(precision[k]),
                "recall": float(recall[k]),
                "f1": float(f1[k]),
                "support": int(support[k]),
            }
            for k, name in enumerate(classes)
        },
        "confusion_matrix": confusion_matrix(targets, predicted, labels=labels).tolist(),
        "confusion_matrix_axes": "rows: true class, columns: predicted class, in 'classes' order",
    }


def make_split(dataset: LabelledSet, config: TrainingConfig) -> dict[str, np.ndarray]:
    """The train/valid/test indices: predefined, or seeded, stratified, source-disjoint."""
    if dataset.split is not None:
        return {name: np.flatnonzero(dataset.split == name) for name in ("train", "valid", "test")}
    groups = source_groups(
        dataset.ra_deg, dataset.dec_deg, radius_arcsec=config.group_radius_arcsec
    ) if dataset.ra_deg is not None else np.arange(len(dataset))
    return split_indices(
        dataset.targets,
        groups,
        test_fraction=config.test_fraction,
        valid_fraction=config.valid_fraction,
        seed=config.split_seed,
    )


def train_cnn(
    dataset: LabelledSet,
    preprocess_config: PreprocessConfig,
    config: TrainingConfig | None = None,
    *,
    progress=print,
    cache_dir=None,
    images: np.ndarray | None = None,
) -> TrainingResult:
    """Train a classifier by the transfer recipe; see the module docstring.

    Parameters
    ----------
    dataset : LabelledSet
        From :func:`~survey_classifier.cnn.data.read_catalogue`.
    preprocess_config : PreprocessConfig
        Applied to every image; stored with the model.
    config : TrainingConfig
    progress : callable
        Called with one line of text per epoch.
    cache_dir : path, optional
        Cache of preprocessed images.
    images : ndarray, optional
        Preprocessed images of ``dataset`` (skips reading).
    """
    from survey_classifier.cnn.backbones import build_backbone

    config = config or TrainingConfig()
    started = time.perf_counter()
    if images is None:
        images = load_images(dataset.paths, preprocess_config, cache_dir=cache_dir)
    targets = dataset.targets
    classes = list(dataset.classes)
    split = make_split(dataset, config)
    if len(split["train"]) == 0:
        msg = "the split left no training examples"
        raise StageConfigError(msg)
    progress(
        f"{len(dataset)} images of {classes}: train {len(split['train'])}, "
        f"valid {len(split['valid'])}, test {len(split['test'])}"
    )
    _set_seed(config.seed)
    base = build_backbone(config.backbone, preprocess_config.size, weights=config.weights)
    _set_trainable(base, config.freeze, keep_batchnorm_frozen=False)
    model = build_classifier(base, len(classes), config)
    train_x, train_y = images[split["train"]], targets[split["train"]]
    valid = (images[split["valid"]], targets[split["valid"]]) if len(split["valid"]) else None
    train_data = _dataset(
        train_x, train_y, batch_size=config.batch_size, shuffle=True,
        augment=config.augment, seed=config.seed,
    )
    weights = _class_weights(train_y, len(classes), config.class_weight)
    history: dict[str, list] = {}
    best_epochs = {}
    phases = [("head", config.head_epochs, config.head_learning_rate)]
    if config.fine_tune_epochs > 0:
        phases.append(("fine-tune", config.fine_tune_epochs, config.fine_tune_learning_rate))
    for phase, epochs, learning_rate in phases:
        if epochs <= 0:
            continue
        if phase == "fine-tune":
            _set_trainable(base, 0, keep_batchnorm_frozen=True)
        phase_history, best_epochs[phase] = _fit_phase(
            model, phase, epochs, learning_rate, train_data, valid, weights, progress
        )
        for key, values in phase_history.items():
            history.setdefault(key, []).extend(float(v) for v in values)
        history.setdefault("phase", []).extend([phase] * len(phase_history.get("loss", [])))
    metrics = {
        "classes": classes,
        "train": evaluate(model, train_x, train_y, classes),
        "valid": evaluate(model, *valid, classes) if valid else {"n": 0},
        "test": evaluate(model, images[split["test"]], targets[split["test"]], classes),
        "best_epoch": {k: int(v) + 1 for k, v in best_epochs.items()},
        "seconds": round(time.perf_counter() - started, 1),
    }
    test = metrics["test"]
    if test.get("n"):
        progress(f"test accuracy {test['accuracy']:.4f} on {test['n']} images")
    return TrainingResult(
        model=model,
        classes=classes,
        preprocess_config=preprocess_config,
        config=config,
        metrics=metrics,
        history=history,
        split=split,
        dataset=dataset,
        seconds=time.perf_counter() - started,
        images={name: images[index] for name, index in split.items()},
    )


def plot_curves(history: dict, path, *, title: str = "") -> None:
    """Training and validation loss and accuracy per epoch, as a PNG."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    figure = Figure(figsize=(9, 3.5))
    axes = figure.subplots(1, 2)
    epochs = np.arange(1, len(history.get("loss", [])) + 1)
    for axis, key in zip(axes, ("loss", "accuracy")):
        axis.plot(epochs, history.get(key, []), label=f"train {key}")
        if f"val_{key}" in history:
            axis.plot(epochs, history[f"val_{key}"], label=f"validation {key}")
        phases = history.get("phase", [])
        if "fine-tune" in phases:
            axis.axvline(phases.index("fine-tune") + 0.5, color="grey", ls="--", lw=1,
                         label="fine-tuning starts")
        axis.set_xlabel("epoch")
        axis.set_ylabel(key)
        axis.legend(fontsize=8)
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def save_training(result: TrainingResult, output_dir, *, name: str | None = None) -> dict[str, Path]:
    """Write model.keras, metrics.json, history.json, split.csv, curves.png.

    ``name`` titles the curves (default: the output directory's name).
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    files = {
        "keras": output_dir / "model.keras",
        "metrics": output_dir / "metrics.json",
        "history": output_dir / "history.json",
        "split": output_dir / "split.csv",
        "curves": output_dir / "curves.png",
    }
    result.model.save(files["keras"])
    record = {
        **result.metrics,
        "training": result.config.to_dict(),
        "preprocess": result.preprocess_config.to_dict(),
        "catalogue": result.dataset.catalogue,
        "selection": result.dataset.selection,
    }
    files["metrics"].write_text(json.dumps(record, indent=2) + "\n")
    files["history"].write_text(json.dumps(result.history) + "\n")
    rows = ["file,label,split"]
    for name, index in result.split.items():
        rows += [f"{result.dataset.paths[i].name},{result.dataset.labels[i]},{name}" for i in index]
    files["split"].write_text("\n".join(rows) + "\n")
    plot_curves(result.history, files["curves"], title=name or output_dir.resolve().name)
    return files
