"""Per-epoch diagnostics of a from-scratch training, to see why a network collapses (docs/cnn.md, #16).

Trains ``--backbone BACKBONE --freeze 0 --head-epochs EPOCHS`` on the usual
MiraBest split (confident FR I / FR II, split seed 0; the test part is
never scored) and, after every epoch, records into OUT.json: the loss and
accuracy, the spread of p(FR II) over the validation cutouts, for every
ReLU / pooling / embedding / head layer the mean, std and the share of
dead channels (never positive on any validation cutout), the gradient
norm of every weight on one training batch, and the ratio of that
gradient's RMS to Adam's running RMS (sqrt of its bias-corrected second
moment) per weight.

    python bench/collapse_diagnostics.py c8-blur 80 c8-blur-diag.json
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np

from survey_classifier.cnn import train as training
from survey_classifier.cnn.data import load_images, read_catalogue
from survey_classifier.cnn.norm_statistics import flat_layers
from survey_classifier.preprocess import PreprocessConfig

PROBED = ("relu", "embedding", "head_dense0", "pool")


def main(backbone: str, epochs: int, out: str) -> None:
    data = os.environ.get("SURVEY_CLASSIFIER_DATA", "../shared/data")
    dataset = read_catalogue(f"{data}/mirabest/labels.csv", label_column="fr_class",
                             where={"confidence": "confident", "fr_class": ["FRI", "FRII"]},
                             classes=["FRI", "FRII"])
    preprocess_config = PreprocessConfig(size=64, crop=100, clip_sigma=3.0)
    images = load_images(dataset.paths, preprocess_config)
    config = training.TrainingConfig(backbone=backbone, freeze=0, head_epochs=epochs, norm_statistics="running")
    split = training.make_split(dataset, config)
    valid_x = images[split["valid"]]
    batch_x, batch_y = images[split["train"]][:64], dataset.targets[split["train"]][:64]
    records = []
    plain_callback = training._epoch_callback

    def diagnosing_callback(phase, n, progress):
        import keras
        import tensorflow as tf

        callback = plain_callback(phase, n, progress)
        end_of_epoch = callback.on_epoch_end

        def on_epoch_end(epoch, logs=None):
            end_of_epoch(epoch, logs)
            model = callback.model
            probed = [layer for layer in flat_layers(model) if any(s in layer.name for s in PROBED)]
            outputs = keras.Model(model.inputs, [layer.output for layer in probed])(valid_x, training=False)
            record = {"epoch": epoch + 1, **{k: float(v) for k, v in (logs or {}).items()}, "layers": {}}
            for layer, output in zip(probed, outputs, strict=True):
                values = np.asarray(output)
                per_channel = values.reshape(-1, values.shape[-1])
                record["layers"][layer.name] = {"mean": float(values.mean()), "std": float(values.std()),
                                                "dead_channels": float((per_channel.max(axis=0) <= 0).mean())}
            record["p_std"] = float(np.asarray(model(valid_x, training=False))[:, 1].std())
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(
                    batch_y, model(batch_x, training=True)))
            gradients = tape.gradient(loss, model.trainable_weights)
            optimizer, step = model.optimizer, float(model.optimizer.iterations.numpy())
            record["gradient_norm"], record["gradient_over_adam_rms"] = {}, {}
            for weight, gradient in zip(model.trainable_weights, gradients, strict=True):
                velocity = np.asarray(optimizer._velocities[optimizer._get_variable_index(weight)])
                second_moment = velocity.mean() / (1 - 0.999**step)
                record["gradient_norm"][weight.path] = float(tf.norm(gradient))
                record["gradient_over_adam_rms"][weight.path] = float(
                    np.sqrt(np.mean(np.asarray(gradient) ** 2) / (second_moment + 1e-30)))
            records.append(record)
            with open(out, "w") as handle:
                json.dump(records, handle)

        callback.on_epoch_end = on_epoch_end
        return callback

    training._epoch_callback = diagnosing_callback
    training.train_cnn(dataset, preprocess_config, config, images=images, score_test=False)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3])
