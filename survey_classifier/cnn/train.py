"""The transfer-learning recipe.

1. Load a base network (:func:`~survey_classifier.cnn.backbones.build_backbone`).
2. Freeze its first ``freeze`` layers (``"all"`` by default).
3. Add a new head (dense layers, dropout, softmax) and train it for
   ``head_epochs`` epochs.
4. Optionally unfreeze the base (batch-normalisation layers stay frozen)
   and fine-tune everything for ``fine_tune_epochs`` at a low learning rate.

With ``members > 1`` the recipe runs once per training seed (``seed``,
``seed + 1``, ...) on the same split, and the members are joined into one
network that averages their class probabilities and concatenates their
embeddings (a deep ensemble, Lakshminarayanan et al. 2017): it is exported
and served as a single model. Extra training rows (e.g. less certain labels)
may be added to the training part only; rows near a validation or test
source are dropped so the split stays source-disjoint.

Each phase decays its learning rate along a cosine to 5 % of its start.
Training sees rotated and flipped copies of the images (radio sources have
no preferred orientation), class weights balance the classes, and the
weights of the epoch with the lowest validation loss are kept. Trainable
batch-normalisation layers get their moving statistics recomputed from
the training images at the end of every epoch, before validation
(:mod:`~survey_classifier.cnn.norm_statistics`). The test
part of the split is evaluated once, at the end, and never used for any
choice.
"""

from __future__ import annotations

import functools
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from survey_classifier.cnn.data import LabelledSet, load_images, source_groups, split_indices
from survey_classifier.cnn.encoder import check_encoder, encoder_path
from survey_classifier.cnn.norm_statistics import (
    NORM_STATISTICS,
    flat_layers,
    norm_layers,
    precise_norm_callback,
    statistics_images,
)
from survey_classifier.errors import StageConfigError
from survey_classifier.preprocess import PreprocessConfig

__all__ = [
    "TrainingConfig",
    "TrainingResult",
    "train_cnn",
    "evaluate",
    "ensemble_classifier",
    "predict_probabilities",
    "plot_curves",
    "collapse_check",
]

PROBABILITIES_LAYER = "probabilities"
ENSEMBLE_EMBEDDING_LAYER = "embedding"

#: A model is called collapsed when at least this share of the checked cutouts get the same class ...
COLLAPSE_SHARE = 0.95
#: ... or when no class's probability varies by more than this across them.
COLLAPSE_SPREAD = 0.05


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
    members : int
        Networks trained with seeds ``seed, seed + 1, ...`` and averaged.
    invariance : {"none", "d4"}
        ``"d4"`` averages the base network's features over the 8 quarter
        turns and flips of the image (exact invariance to them).
    calibrate : bool
        Fit a temperature on the validation part and build it into the
        network (:mod:`~survey_classifier.cnn.calibration`).
    uncertain_below : float
        Top probability under which the ``cnn`` stage flags a result
        ``uncertain`` (recorded in the exported model).
    norm_statistics : {"precise", "precise-augmented", "running"}
        Moving statistics of the trainable batch-normalisation layers
        (``d8``, ``c8-blur``, Keras's): ``"precise"`` recomputes them from
        the training images at the end of every epoch, before validation
        (:mod:`~survey_classifier.cnn.norm_statistics`),
        ``"precise-augmented"`` from an augmented copy of them;
        ``"running"`` keeps the layers' own moving averages.
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
    members: int = 1
    invariance: str = "none"
    calibrate: bool = True
    uncertain_below: float = 0.6
    norm_statistics: str = "precise"

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
    #: Probabilities before and after calibration on the part that judges it (for the diagram).
    reliability: dict = field(default_factory=dict, repr=False)


def _set_seed(seed: int) -> None:
    """Seed Python, numpy and TensorFlow, and make TensorFlow's ops deterministic.

    Without op determinism, training on the CPU differs from run to run
    (thread scheduling changes the order of floating-point sums), so the
    same command and seed did not give the same model. The switch is
    process-wide and costs no measurable time for these networks.
    """
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(int(seed))
    tf.config.experimental.enable_op_determinism()


def _set_trainable(base, freeze, *, keep_batchnorm_frozen: bool) -> None:
    layers = flat_layers(base)
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


def _fit_phase(model, phase, epochs, learning_rate, train_data, valid_data, class_weight, progress,
               norm_images=None, norm_augment=None, batch_size=32):
    """Compile and fit one phase; with ``norm_images``, precise norm statistics from them every epoch."""
    import keras

    steps = epochs * max(1, int(train_data.cardinality()))
    schedule = keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps=steps, alpha=0.05)
    model.compile(
        optimizer=keras.optimizers.Adam(schedule),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    callback = _epoch_callback(phase, epochs, progress)
    # the statistics are recomputed before the epoch's validation and before its weights may be kept
    # (only where the phase trains norm layers: none in compact, c8 or d8-sharp, nor in a frozen base)
    norms = [] if norm_images is None or not norm_layers(model) else [
        precise_norm_callback(norm_images, batch_size=batch_size, augment=norm_augment)]
    history = model.fit(
        train_data,
        validation_data=valid_data,
        epochs=epochs,
        class_weight=class_weight,
        callbacks=[*norms, callback],
        shuffle=False,  # the tf.data pipeline shuffles
        verbose=0,
    )
    return history.history, callback.best_epoch


def predict_probabilities(model, images) -> np.ndarray:
    """Class probabilities of a classifier or of an ensemble (first output)."""
    outputs = model.predict(images, batch_size=256, verbose=0)
    return outputs[0] if isinstance(outputs, (list, tuple)) else outputs


def ensemble_classifier(members, *, name: str = "ensemble"):
    """One network from trained classifiers: mean probabilities, joined embeddings.

    Its outputs are ``probabilities`` (the mean of the members') and
    ``embedding`` (the members' penultimate features side by side), the two
    outputs the ONNX export writes.
    """
    import keras

    from survey_classifier.cnn.calibration import features_of

    inputs = keras.Input(shape=tuple(members[0].input.shape[1:]), name="image")
    probabilities, embeddings = [], []
    for index, member in enumerate(members):
        features = features_of(member)
        both = keras.Model(member.input, [member.output, features], name=f"member{index}")
        p, e = both(inputs)
        probabilities.append(p)
        embeddings.append(e)
    mean = keras.layers.Average(name=PROBABILITIES_LAYER)(probabilities)
    joined = keras.layers.Concatenate(name=ENSEMBLE_EMBEDDING_LAYER)(embeddings)
    return keras.Model(inputs, [mean, joined], name=name)


def collapse_check(probabilities, classes, *, part: str = "valid") -> dict:
    """Whether a model gives (nearly) the same answer to every cutout.

    ``probabilities`` is ``(n, classes)`` for the cutouts of ``part``.
    The model is *collapsed* when at least :data:`COLLAPSE_SHARE` of them
    get the same class, or when no class's probability spans more than
    :data:`COLLAPSE_SPREAD` across them (a network whose features died
    answers its bias, whatever the cutout). Returns the record stored in
    ``metrics.json`` and ``model.json`` under ``"collapse"``.
    """
    probabilities = np.asarray(probabilities, dtype=float)
    n = len(probabilities)
    if n == 0:
        return {"part": part, "n": 0, "collapsed": False}
    counts = np.bincount(probabilities.argmax(axis=1), minlength=len(classes))
    spread = float((probabilities.max(axis=0) - probabilities.min(axis=0)).max())
    share = float(counts.max() / n)
    return {
        "part": part,
        "n": int(n),
        "collapsed": bool(share >= COLLAPSE_SHARE or spread < COLLAPSE_SPREAD),
        "majority_class": classes[int(counts.argmax())],
        "majority_share": round(share, 4),
        "probability_spread": round(spread, 4),
    }


def collapse_warning(record: dict) -> str | None:
    """The line to print when :func:`collapse_check` found a collapse, else None."""
    if not record.get("collapsed"):
        return None
    return (f"WARNING: the model collapsed: {record['majority_share']:.0%} of the {record['n']} "
            f"{record['part']} cutouts get {record['majority_class']} (probabilities vary by at most "
            f"{record['probability_spread']:.3f}); it has not learnt to tell the classes apart")


def evaluate(model, images, targets, classes) -> dict:
    """Accuracy, per-class precision and recall, confusion matrix."""
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    if len(images) == 0:
        return {"n": 0}
    probabilities = predict_probabilities(model, images)
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


def extra_training_rows(dataset: LabelledSet, split, extra: LabelledSet, *, radius_arcsec: float):
    """Indices of ``extra`` that may join the training part.

    A row is dropped when its image is already in ``dataset`` or when it
    lies within ``radius_arcsec`` of a validation or test source.
    """
    known = {path.resolve() for path in dataset.paths}
    keep = np.array([path.resolve() not in known for path in extra.paths], dtype=bool)
    held = np.concatenate([split["valid"], split["test"]]).astype(int)
    if len(held) and extra.ra_deg is not None and dataset.ra_deg is not None:
        from astropy import units as u
        from astropy.coordinates import SkyCoord

        extra_coords = SkyCoord(extra.ra_deg * u.deg, extra.dec_deg * u.deg)
        held_coords = SkyCoord(dataset.ra_deg[held] * u.deg, dataset.dec_deg[held] * u.deg)
        _, near, _, _ = extra_coords.search_around_sky(held_coords, radius_arcsec * u.arcsec)
        keep[np.unique(near)] = False
    elif len(held):
        msg = "extra training rows need positions (ra_deg, dec_deg) to keep the split source-disjoint"
        raise StageConfigError(msg)
    return np.flatnonzero(keep)


def _train_member(config, seed, size, n_classes, train_x, train_y, valid, weights, progress):
    """One run of the recipe with one training seed: (model, history, best epochs)."""
    from survey_classifier.cnn.backbones import build_backbone, invariant_backbone

    _set_seed(seed)
    base = invariant_backbone(build_backbone(config.backbone, size, weights=config.weights), config.invariance)
    _set_trainable(base, config.freeze, keep_batchnorm_frozen=False)
    model = build_classifier(base, n_classes, config)
    train_data = _dataset(
        train_x, train_y, batch_size=config.batch_size, shuffle=True,
        augment=config.augment, seed=seed,
    )
    history: dict[str, list] = {}
    best_epochs = {}
    norm_images, norm_augment = None, None
    if config.norm_statistics != "running":
        norm_images = statistics_images(train_x, config.batch_size, seed=seed)
    if config.norm_statistics == "precise-augmented":  # an augmenter of its own: the training's draws are kept
        augmenter = _augmenter(seed)
        norm_augment = functools.partial(augmenter, training=True)
    phases = [("head", config.head_epochs, config.head_learning_rate)]
    if config.fine_tune_epochs > 0:
        phases.append(("fine-tune", config.fine_tune_epochs, config.fine_tune_learning_rate))
    for phase, epochs, learning_rate in phases:
        if epochs <= 0:
            continue
        if phase == "fine-tune":
            _set_trainable(base, 0, keep_batchnorm_frozen=True)
        phase_history, best_epochs[phase] = _fit_phase(
            model, phase, epochs, learning_rate, train_data, valid, weights, progress,
            norm_images=norm_images, norm_augment=norm_augment, batch_size=config.batch_size,
        )
        for key, values in phase_history.items():
            history.setdefault(key, []).extend(float(v) for v in values)
        history.setdefault("phase", []).extend([phase] * len(phase_history.get("loss", [])))
    return model, history, {k: int(v) + 1 for k, v in best_epochs.items()}


def train_cnn(
    dataset: LabelledSet,
    preprocess_config: PreprocessConfig,
    config: TrainingConfig | None = None,
    *,
    progress=print,
    cache_dir=None,
    images: np.ndarray | None = None,
    extra: LabelledSet | None = None,
    extra_images: np.ndarray | None = None,
    score_test: bool = True,
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
    extra : LabelledSet, optional
        Rows added to the training part only (see
        :func:`extra_training_rows`); never validated or tested on.
    extra_images : ndarray, optional
        Preprocessed images of all of ``extra`` (skips reading them).
    score_test : bool
        Evaluate the test part (default). False leaves it out of training
        and unscored (``metrics["test"]`` is ``{"n": 0, "scored": False}``),
        as cross-validation and a model trained on every development source
        need.
    """
    config = config or TrainingConfig()
    if config.members < 1:
        msg = f"members must be at least 1, got {config.members}"
        raise StageConfigError(msg)
    if not 0.0 <= config.uncertain_below <= 1.0:
        msg = f"uncertain_below must be a probability between 0 and 1, got {config.uncertain_below}"
        raise StageConfigError(msg)
    if config.norm_statistics not in NORM_STATISTICS:
        msg = f"norm_statistics must be one of {', '.join(NORM_STATISTICS)}, got {config.norm_statistics!r}"
        raise StageConfigError(msg)
    if encoder_path(config.backbone) is not None:  # its pixels must be the encoder's
        check_encoder(encoder_path(config.backbone), preprocess_config)
    started = time.perf_counter()
    if images is None:
        images = load_images(dataset.paths, preprocess_config, cache_dir=cache_dir)
    targets = dataset.targets
    classes = list(dataset.classes)
    split = make_split(dataset, config)
    if len(split["train"]) == 0:
        msg = "the split left no training examples"
        raise StageConfigError(msg)
    train_x, train_y = images[split["train"]], targets[split["train"]]
    extra_used = 0
    if extra is not None:
        if list(extra.classes) != classes:
            msg = f"extra training rows have classes {extra.classes}, the task has {classes}"
            raise StageConfigError(msg)
        rows = extra_training_rows(dataset, split, extra, radius_arcsec=config.group_radius_arcsec)
        if extra_images is None:
            chosen = load_images([extra.paths[i] for i in rows], preprocess_config, cache_dir=cache_dir)
        else:
            chosen = extra_images[rows]
        train_x = np.concatenate([train_x, chosen])
        train_y = np.concatenate([train_y, extra.targets[rows]])
        extra_used = len(rows)
        progress(f"{extra_used} of {len(extra)} extra rows join the training part "
                 f"({len(extra) - extra_used} already in the catalogue or near a held-out source)")
    progress(
        f"{len(dataset)} images of {classes}: train {len(split['train'])}"
        f"{f' + {extra_used} extra' if extra is not None else ''}, "
        f"valid {len(split['valid'])}, test {len(split['test'])}"
    )
    valid = (images[split["valid"]], targets[split["valid"]]) if len(split["valid"]) else None
    weights = _class_weights(train_y, len(classes), config.class_weight)
    # unscored, the test part stays out of training (and in split.csv) but is not looked at
    scored = split["test"] if score_test else np.array([], dtype=np.int64)
    test_x, test_y = images[scored], targets[scored]
    members, histories, member_records = [], [], []
    for index in range(config.members):
        seed = config.seed + index
        if config.members > 1:
            progress(f"member {index + 1}/{config.members} (seed {seed})")
        model, history, best_epoch = _train_member(
            config, seed, preprocess_config.size, len(classes),
            train_x, train_y, valid, weights, progress,
        )
        members.append(model)
        histories.append(history)
        member_records.append({
            "seed": seed,
            "best_epoch": best_epoch,
            "valid_accuracy": evaluate(model, *valid, classes).get("accuracy") if valid else None,
            "test_accuracy": evaluate(model, test_x, test_y, classes).get("accuracy"),
        })
    calibration, reliability = {}, {}
    if config.calibrate and valid is not None:
        members, calibration, reliability = _calibrate(members, valid, (test_x, test_y), config)
        progress(f"temperature {calibration['temperature']:.3f}: validation ECE "
                 f"{calibration['valid']['ece_before']:.3f} -> {calibration['valid']['ece_after']:.3f}, "
                 f"NLL {calibration['valid']['nll_before']:.4f} -> {calibration['valid']['nll_after']:.4f}")
    if config.members == 1:
        model, history = members[0], histories[0]
    else:
        model, history = ensemble_classifier(members), {"members": histories}
    metrics = {
        "classes": classes,
        "train": evaluate(model, train_x, train_y, classes),
        "valid": evaluate(model, *valid, classes) if valid else {"n": 0},
        "test": evaluate(model, test_x, test_y, classes) if score_test else {"n": 0, "scored": False},
        "best_epoch": member_records[0]["best_epoch"],
        "extra_training_rows": extra_used,
        **({"calibration": calibration} if calibration else {}),
        "seconds": round(time.perf_counter() - started, 1),
    }
    if config.members > 1:
        metrics["members"] = member_records
    checked, part = (valid[0], "valid") if valid is not None else (train_x, "train")
    metrics["collapse"] = collapse_check(predict_probabilities(model, checked), classes, part=part)
    if (warning := collapse_warning(metrics["collapse"])) is not None:
        progress(warning)
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
        images={name: images[index] for name, index in split.items() if score_test or name != "test"},
        reliability=reliability,
    )


def _calibrate(members, valid, test, config):
    """Fit one temperature on the validation part; the calibrated members and the figures.

    Returns ``(members, record, reliability)``: the members rebuilt with the
    temperature inside, the record (T, NLL and 15-bin ECE before and after
    on the validation and test parts) and the probabilities before and after
    on the test part (the validation part when there is no test part) for
    the reliability diagram.
    """
    from survey_classifier.cnn.calibration import (
        calibrated_classifier,
        classifier_logits,
        expected_calibration_error,
        fit_temperature,
        negative_log_likelihood,
        softmax,
    )

    def logits_of(images):
        return np.stack([classifier_logits(member, images) for member in members])

    valid_logits = logits_of(valid[0])
    temperature = fit_temperature(valid_logits, valid[1])
    record = {"temperature": temperature, "bins": 15, "uncertain_below": float(config.uncertain_below)}
    parts = {"valid": (valid_logits, valid[1])}
    if len(test[1]):
        parts["test"] = (logits_of(test[0]), test[1])
    curves = {}
    for part, (logits, targets) in parts.items():
        before, after = softmax(logits).mean(axis=0), softmax(logits / temperature).mean(axis=0)
        record[part] = {
            "n": int(len(targets)),
            "nll_before": negative_log_likelihood(logits, targets, 1.0),
            "nll_after": negative_log_likelihood(logits, targets, temperature),
            "ece_before": expected_calibration_error(before, targets, 15),
            "ece_after": expected_calibration_error(after, targets, 15),
        }
        curves[part] = {"part": part, "targets": targets, "before": before, "after": after}
    calibrated = [calibrated_classifier(member, temperature) for member in members]
    return calibrated, record, curves.get("test", curves["valid"])


def plot_curves(history: dict, path, *, title: str = "") -> None:
    """Training and validation loss and accuracy per epoch, as a PNG."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    figure = Figure(figsize=(9, 3.5))
    axes = figure.subplots(1, 2)
    runs = history.get("members", [history])
    for axis, key in zip(axes, ("loss", "accuracy")):
        each = f" ({len(runs)} members)" if len(runs) > 1 else ""
        for index, run in enumerate(runs):
            epochs = np.arange(1, len(run.get("loss", [])) + 1)
            first = index == 0
            axis.plot(epochs, run.get(key, []), color="C0", alpha=0.9 if first else 0.5, lw=1,
                      label=f"train {key}{each}" if first else None)
            if f"val_{key}" in run:
                axis.plot(epochs, run[f"val_{key}"], color="C1", alpha=0.9 if first else 0.5, lw=1,
                          label=f"validation {key}{each}" if first else None)
        phases = runs[0].get("phase", [])
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

    A calibrated model also gets ``reliability.png`` (the reliability
    diagram before and after the temperature) and ``calibration.md`` (the
    model card's calibration section).

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
    for part, index in result.split.items():
        rows += [f"{result.dataset.paths[i].name},{result.dataset.labels[i]},{part}" for i in index]
    files["split"].write_text("\n".join(rows) + "\n")
    plot_curves(result.history, files["curves"], title=name or output_dir.resolve().name)
    if result.reliability:
        files.update(_save_calibration(result, output_dir, name or output_dir.resolve().name))
    return files


def _save_calibration(result: TrainingResult, output_dir: Path, name: str) -> dict[str, Path]:
    return save_calibration(result.metrics["calibration"], result.reliability, output_dir, name)


def save_calibration(record: dict, shown: dict, output_dir, name: str) -> dict[str, Path]:
    """``reliability.png`` and ``calibration.md`` of a calibration ``record`` (see :func:`_calibrate`).

    ``shown``: ``{"part", "targets", "before", "after"}``, the probabilities drawn in the diagram.
    """
    from survey_classifier.cnn.calibration import plot_reliability

    output_dir = Path(output_dir)
    temperature = record["temperature"]
    files = {"reliability": output_dir / "reliability.png", "calibration": output_dir / "calibration.md"}
    plot_reliability(
        {"before (T = 1)": shown["before"], f"after (T = {temperature:.3f})": shown["after"]},
        shown["targets"], files["reliability"], bins=record["bins"],
        title=f"{name}: {shown['part']} part, {len(shown['targets'])} sources",
    )
    rows = [
        f"| {part} ({record[part]['n']}) | {record[part]['ece_before']:.3f} | {record[part]['ece_after']:.3f} "
        f"| {record[part]['nll_before']:.4f} | {record[part]['nll_after']:.4f} |"
        for part in ("valid", "test", "out_of_fold") if part in record
    ]
    fitted_on = record.get("fitted_on", "the validation part")
    files["calibration"].write_text("\n".join([
        "## Calibration",
        "",
        f"Temperature scaling: the logits are divided by T = {temperature:.4f}, fitted on {fitted_on} "
        "(lowest negative log-likelihood), inside the network: the ONNX model's probabilities are "
        "the calibrated ones. Expected calibration error (ECE) in "
        f"{record['bins']} equal-width bins of the top probability:",
        "",
        "| part (sources) | ECE before | ECE after | NLL before | NLL after |",
        "|---|---|---|---|---|",
        *rows,
        "",
        f"Reliability diagram (before and after, {shown['part']} part): `reliability.png`. "
        f"The `cnn` stage flags a result `uncertain` when its top probability is below "
        f"{record['uncertain_below']:g}.",
        "",
    ]))
    return files
