"""Self-supervised pre-training of an encoder on unlabelled cutouts (SimCLR).

The encoder is the backbone a classifier is later transfer-learned from
(``train cnn --backbone encoder:DIR``). It learns from images alone: two
random *views* of each image (see :func:`augment`) are pushed through the
encoder and a small projection head, and the normalised temperature-scaled
cross-entropy of SimCLR (Chen et al. 2020) pulls the two views of one image
together and pushes them away from the views of the other images of the
batch:

.. math::

    \\ell_{i} = -\\log \\frac{\\exp(s_{i,j(i)}/\\tau)}
        {\\sum_{k \\ne i} \\exp(s_{i,k}/\\tau)},

where :math:`s` is the cosine similarity of the projections of the
:math:`2N` views of a batch of :math:`N` images, :math:`j(i)` the other
view of view :math:`i`'s image and :math:`\\tau` the temperature. The
projection head is dropped afterwards; the encoder's ``embedding`` layer is
the feature vector.

Augmentations suit radio images, which have no preferred orientation and
whose pixels below the clip level are noise: a rotation by any angle, a
mirror flip, a small change of scale and a small shift (one affine map,
bilinear interpolation, zeros outside), then Gaussian noise at the image's
*own* noise level (its sigma-clipped standard deviation, in the units of
the preprocessed image) and the preprocessing's clip and scaling applied
again, as if the sky had been observed once more. Images without a noise
estimate of their own (first4's PNG images are background-clipped already)
get the median level of the others.

Every image goes through :func:`survey_classifier.cnn.data.load_images`,
the classifier's own reading and preprocessing, with the configuration the
encoder then records; a classifier trained on the encoder must use the same
one (:func:`survey_classifier.cnn.encoder.check_encoder` refuses another).

An encoder is a directory with ``encoder.keras`` (the backbone: image to
``embedding``) and ``encoder.json`` (format, preprocessing, architecture,
pre-training settings, epochs, loss per epoch, the inputs' count and
sha256, the command).
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path

import numpy as np

from survey_classifier.cnn.data import PNG_SUFFIXES, load_images, read_image
from survey_classifier.cnn.encoder import ENCODER_FILE, ENCODER_FORMAT, METADATA_FILE
from survey_classifier.errors import StageConfigError
from survey_classifier.preprocess import PreprocessConfig, preprocess
from survey_classifier.stats import clipped_background

__all__ = [
    "PretrainConfig",
    "augment",
    "find_images",
    "load_unlabelled",
    "noise_levels",
    "nt_xent_loss",
    "pretrain_encoder",
    "save_encoder",
]

FITS_SUFFIXES = (".fits", ".fit", ".fts", ".fits.gz")


@dataclasses.dataclass
class PretrainConfig:
    """Settings of a pre-training run (recorded in ``encoder.json``).

    Parameters
    ----------
    backbone : str
        ``"compact"`` or ``"compact:WIDTH"`` (see
        :func:`~survey_classifier.cnn.backbones.compact_network`).
    projection : tuple of int
        Widths of the projection head (ReLU between, linear output).
    epochs : int
        Passes over the images (fewer when ``max_minutes`` runs out).
    batch_size : int
        Images per step; each brings ``2 * batch_size - 2`` negatives.
    learning_rate : float
        Adam, cosine decay to 5 % over the planned steps.
    temperature : float
        SimCLR's :math:`\\tau`.
    max_angle_deg : float
        Rotations are uniform in +- this (180: any angle).
    max_scale, max_shift : float
        Scale factor uniform in ``1 +- max_scale``; shift uniform in
        ``+- max_shift`` of the image side, per axis.
    noise : bool
        Add noise at the image's own level, then clip and scale again.
    clip_sigma : float or None
        Clip level of that noise, in its sigma (the preprocessing's).
    max_minutes : float or None
        Stop after the epoch that passes this wall time.
    seed : int
    """

    backbone: str = "compact"
    projection: tuple[int, ...] = (128, 64)
    epochs: int = 100
    batch_size: int = 128
    learning_rate: float = 1e-3
    temperature: float = 0.2
    max_angle_deg: float = 180.0
    max_scale: float = 0.1
    max_shift: float = 0.05
    noise: bool = True
    clip_sigma: float | None = 3.0
    max_minutes: float | None = None
    seed: int = 0

    def to_dict(self) -> dict:
        values = dataclasses.asdict(self)
        values["projection"] = list(self.projection)
        return values


def find_images(sources) -> list[Path]:
    """The FITS and PNG files under each directory (recursively) or given file, sorted, unique."""
    found = set()
    for source in sources:
        source = Path(source).expanduser()
        if source.is_dir():
            candidates = (p for p in source.rglob("*") if p.is_file())
        elif source.is_file():
            candidates = (source,)
        else:
            msg = f"{source}: no such file or directory of images"
            raise StageConfigError(msg)
        found.update(p.resolve() for p in candidates if _is_image(p))
    if not found:
        msg = f"no FITS or PNG images under {', '.join(str(s) for s in sources)}"
        raise StageConfigError(msg)
    return sorted(found)


def _is_image(path: Path) -> bool:
    name = path.name.lower()
    return name.endswith(FITS_SUFFIXES) or name.endswith(PNG_SUFFIXES)


def noise_levels(paths, config: PreprocessConfig, images) -> np.ndarray:
    """Each image's noise level in the units of its preprocessed image.

    The sigma-clipped standard deviation of the raw pixels (the estimate
    :func:`~survey_classifier.preprocess.preprocess` clips with), times the
    factor by which the final scaling multiplied the image: the peak of
    ``images`` (the preprocessed images, in the order of ``paths``) over
    the peak of the same preprocessing with ``scaling="none"``. It is 0
    where the image has no noise of its own (a background-clipped PNG) or
    nothing above the clip level.
    """
    unscaled_config = dataclasses.replace(config, scaling="none")
    levels = np.zeros(len(paths), dtype=np.float32)
    for index, path in enumerate(paths):
        raw = read_image(path)
        _, sigma = clipped_background(raw)
        if not sigma > 0:
            continue
        peak = float(np.abs(preprocess(raw, unscaled_config)).max())
        if peak > 0:
            levels[index] = sigma * float(np.abs(images[index]).max()) / peak
    return levels


def _affine_matrices(angles, flips, scales, shifts, size: int):
    """Keras ``affine_transform`` rows mapping output pixels to input pixels.

    The view is the image mirrored (``x -> -x`` about the centre) when
    ``flip``, then turned by ``angle`` (radians; positive turns the picture
    as ``np.rot90`` does), scaled by ``scale`` and shifted by ``shift``
    pixels ``(dx, dy)``. Each row is ``[a0, a1, a2, b0, b1, b2, 0, 0]`` with
    input ``(x, y) = (a0 x' + a1 y' + a2, b0 x' + b1 y' + b2)``.
    """
    import tensorflow as tf

    centre = (size - 1) / 2.0
    cos, sin = tf.cos(angles), tf.sin(angles)
    sign = tf.where(flips, -1.0, 1.0)
    # inverse map: un-shift, un-scale, un-rotate, un-mirror
    a0, a1 = sign * cos / scales, -sign * sin / scales
    b0, b1 = sin / scales, cos / scales
    ux, uy = centre + shifts[:, 0], centre + shifts[:, 1]
    a2 = centre - (a0 * ux + a1 * uy)
    b2 = centre - (b0 * ux + b1 * uy)
    zeros = tf.zeros_like(a0)
    return tf.stack([a0, a1, a2, b0, b1, b2, zeros, zeros], axis=1)


def transform(images, angles, flips, scales, shifts):
    """Images (n, size, size, 1) mirrored, turned, scaled and shifted (see :func:`_affine_matrices`)."""
    import keras
    import tensorflow as tf

    images = tf.convert_to_tensor(images, tf.float32)
    matrices = _affine_matrices(
        tf.cast(angles, tf.float32), tf.cast(flips, tf.bool), tf.cast(scales, tf.float32),
        tf.cast(shifts, tf.float32), int(images.shape[1]),
    )
    return keras.ops.image.affine_transform(
        images, matrices, interpolation="bilinear", fill_mode="constant", fill_value=0.0
    )


def add_noise(images, sigmas, noise, *, clip_sigma: float | None):
    """Noise ``sigma * noise`` added, pixels below ``clip_sigma * sigma`` zeroed, peak scaled to 1.

    An image with ``sigma == 0`` keeps its pixels (scaled to peak 1).
    """
    import tensorflow as tf

    sigmas = tf.reshape(tf.cast(sigmas, tf.float32), (-1, 1, 1, 1))
    noisy = images + sigmas * noise
    if clip_sigma is not None:
        noisy = tf.where(noisy < clip_sigma * sigmas, 0.0, noisy)
    noisy = tf.maximum(noisy, 0.0)
    peak = tf.reduce_max(noisy, axis=(1, 2, 3), keepdims=True)
    return tf.where(peak > 0, noisy / tf.maximum(peak, 1e-12), noisy)


def augment(images, sigmas, config: PretrainConfig, generator):
    """One random view of each image (see the module docstring).

    ``generator`` is a ``tf.random.Generator``; ``sigmas`` the images' noise
    levels from :func:`noise_levels`.
    """
    import tensorflow as tf

    n = tf.shape(images)[0]
    size = int(images.shape[1])
    angles = generator.uniform((n,), -1.0, 1.0) * math.radians(config.max_angle_deg)
    flips = generator.uniform((n,)) < 0.5
    scales = 1.0 + generator.uniform((n,), -1.0, 1.0) * config.max_scale
    shifts = generator.uniform((n, 2), -1.0, 1.0) * config.max_shift * size
    views = transform(images, angles, flips, scales, shifts)
    if config.noise:
        noise = generator.normal(tf.shape(views))
        views = add_noise(views, sigmas, noise, clip_sigma=config.clip_sigma)
    return views


def nt_xent_loss(first, second, temperature: float):
    """SimCLR's loss for two batches of projections, view ``i`` of ``first`` paired with ``second[i]``."""
    import tensorflow as tf

    both = tf.math.l2_normalize(tf.concat([first, second], axis=0), axis=1)
    n = tf.shape(first)[0]
    logits = tf.matmul(both, both, transpose_b=True) / temperature
    logits = logits - 1e9 * tf.eye(2 * n)  # a view is not its own pair
    targets = tf.concat([tf.range(n, 2 * n), tf.range(0, n)], axis=0)
    losses = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=targets, logits=logits)
    return tf.reduce_mean(losses)


def _projection_model(encoder, widths):
    import keras

    x = encoder.output
    for index, units in enumerate(widths):
        last = index == len(widths) - 1
        x = keras.layers.Dense(units, activation=None if last else "relu", name=f"projection{index}")(x)
    return keras.Model(encoder.input, x, name="simclr")


def pretrain_encoder(images, sigmas, config: PretrainConfig, *, progress=print):
    """Train an encoder on preprocessed ``images`` (n, size, size, 1).

    Returns ``(encoder, record)`` where ``record`` holds the loss per epoch,
    the epochs done and the seconds taken.
    """
    import keras
    import tensorflow as tf

    from survey_classifier.cnn.backbones import build_backbone

    if config.backbone != "compact" and not config.backbone.startswith("compact:"):
        msg = f"pre-training takes a 'compact' or 'compact:WIDTH' backbone, not {config.backbone!r}"
        raise StageConfigError(msg)
    if len(images) < 4:
        msg = f"pre-training needs at least 4 images, got {len(images)}"
        raise StageConfigError(msg)
    keras.utils.set_random_seed(config.seed)
    size = int(images.shape[1])
    encoder = build_backbone(config.backbone, size)
    model = _projection_model(encoder, config.projection)
    batch_size = min(config.batch_size, len(images))
    steps_per_epoch = len(images) // batch_size  # whole batches: equal negatives per step
    schedule = keras.optimizers.schedules.CosineDecay(
        config.learning_rate, decay_steps=max(1, config.epochs * steps_per_epoch), alpha=0.05
    )
    optimizer = keras.optimizers.Adam(schedule)
    generator = tf.random.Generator.from_seed(config.seed)
    data = tf.convert_to_tensor(images, tf.float32)
    levels = tf.convert_to_tensor(np.asarray(sigmas, np.float32))

    @tf.function(reduce_retracing=True)
    def step(batch, batch_sigmas):
        first = augment(batch, batch_sigmas, config, generator)
        second = augment(batch, batch_sigmas, config, generator)
        with tf.GradientTape() as tape:
            loss = nt_xent_loss(model(first, training=True), model(second, training=True),
                                config.temperature)
        gradients = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(gradients, model.trainable_variables))
        return loss

    rng = np.random.default_rng(config.seed)
    losses, started = [], time.perf_counter()
    for epoch in range(config.epochs):
        epoch_started = time.perf_counter()
        order = rng.permutation(len(images))
        total = 0.0
        for start in range(0, steps_per_epoch * batch_size, batch_size):
            index = tf.convert_to_tensor(order[start:start + batch_size])
            total += float(step(tf.gather(data, index), tf.gather(levels, index)))
        losses.append(total / steps_per_epoch)
        progress(f"[encoder] epoch {epoch + 1}/{config.epochs}  loss {losses[-1]:.4f}  "
                 f"{time.perf_counter() - epoch_started:.1f}s")
        if config.max_minutes is not None and time.perf_counter() - started > 60 * config.max_minutes:
            progress(f"[encoder] stopping after {epoch + 1} epochs: the {config.max_minutes} min "
                     "time box is spent")
            break
    record = {
        "loss": losses,
        "epochs_done": len(losses),
        "steps_per_epoch": steps_per_epoch,
        "seconds": round(time.perf_counter() - started, 1),
    }
    return encoder, record


def inputs_digest(paths) -> str:
    """sha256 over ``name<TAB>sha256`` lines of the input files, in order."""
    from survey_classifier.checksum import sha256_bytes, sha256_file

    lines = "".join(f"{Path(p).name}\t{sha256_file(p)}\n" for p in paths)
    return sha256_bytes(lines.encode())


def save_encoder(encoder, output_dir, *, preprocess_config, config, record, paths, sigmas,
                 command="") -> dict[str, Path]:
    """Write ``encoder.keras`` and ``encoder.json`` (and ``loss.png``) into ``output_dir``."""
    from survey_classifier.checksum import sha256_file

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    files = {"keras": output_dir / ENCODER_FILE, "metadata": output_dir / METADATA_FILE,
             "loss": output_dir / "loss.png"}
    encoder.save(files["keras"])
    folders: dict[str, int] = {}
    for path in paths:
        folders[str(Path(path).parent)] = folders.get(str(Path(path).parent), 0) + 1
    sigmas = np.asarray(sigmas)
    metadata = {
        "format": ENCODER_FORMAT,
        "objective": "simclr",
        "preprocess": preprocess_config.to_dict(),
        "architecture": {
            "backbone": config.backbone,
            "input_shape": list(encoder.input_shape[1:]),
            "embedding_size": int(encoder.output_shape[-1]),
            "parameters": int(encoder.count_params()),
            "projection_head": list(config.projection),
        },
        "pretraining": config.to_dict(),
        "epochs": record["epochs_done"],
        "loss": [round(float(v), 5) for v in record["loss"]],
        "seconds": record["seconds"],
        "inputs": {
            "n": len(paths),
            "folders": folders,
            "sha256": inputs_digest(paths),
            "noise_sigma_median": float(np.median(sigmas)) if len(sigmas) else None,
        },
        "keras_sha256": sha256_file(files["keras"]),
        "command": command,
    }
    files["metadata"].write_text(json.dumps(metadata, indent=2) + "\n")
    _plot_loss(record["loss"], files["loss"])
    return files


def _plot_loss(losses, path) -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    figure = Figure(figsize=(5, 3.5))
    axis = figure.subplots()
    axis.plot(np.arange(1, len(losses) + 1), losses, color="C0")
    axis.set_xlabel("epoch")
    axis.set_ylabel("SimCLR loss (NT-Xent)")
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def load_unlabelled(paths, preprocess_config: PreprocessConfig, *, cache_dir=None):
    """Preprocessed images, their noise levels and how many had none of their own.

    Images without a noise level of their own get the median of the others'.
    With ``cache_dir`` the levels are kept beside the images' cache.
    """
    from survey_classifier.checksum import sha256_bytes

    images = load_images(paths, preprocess_config, cache_dir=cache_dir)
    cache_file = None
    if cache_dir is not None:
        key = sha256_bytes(("\n".join(str(Path(p).resolve()) for p in paths)
                            + preprocess_config.digest()).encode())[:20]
        cache_file = Path(cache_dir) / f"noise-{key}.npy"
    if cache_file is not None and cache_file.exists():
        sigmas = np.load(cache_file)
    else:
        sigmas = noise_levels(paths, preprocess_config, images)
        if cache_file is not None:
            cache_file.parent.mkdir(parents=True, exist_ok=True)
            np.save(cache_file, sigmas)
    own = sigmas > 0
    if own.any():
        sigmas = np.where(own, sigmas, np.median(sigmas[own])).astype(np.float32)
    return images, sigmas, int((~own).sum())
