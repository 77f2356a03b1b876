"""Precise normalisation statistics, on tiny real networks trained on real MiraBest cutouts.

The moving statistics that ``train cnn`` leaves in a ``d8`` model must be
the population mean and variance of each norm layer's inputs over the
training images (training-mode forward passes in training batches),
recomputed here independently in numpy; with the statistics of one batch
of all the images the inference-mode answers must be the training-mode
ones; the exported ONNX model must agree with Keras. The recompute must
not change the training itself (same trainable weights as with running
averages) and the same seed must give the same model.
"""

import numpy as np
import pytest

pytestmark = [
    pytest.mark.train,
    pytest.mark.filterwarnings("ignore:.*np.object.*:FutureWarning"),
]

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")
onnx = pytest.importorskip("onnx")

from survey_classifier.cnn.data import load_images, read_catalogue  # noqa: E402
from survey_classifier.cnn.dihedral import ORDER, field_norm_class  # noqa: E402
from survey_classifier.cnn.norm_statistics import norm_layers, recompute_norm_statistics  # noqa: E402
from survey_classifier.cnn.train import TrainingConfig, train_cnn  # noqa: E402
from survey_classifier.preprocess import PreprocessConfig  # noqa: E402

PREPROCESS = PreprocessConfig(size=32, crop=100)


@pytest.fixture(scope="module")
def dataset(catalogue):
    return read_catalogue(catalogue, file_column="path", label_column="fr", min_per_class=5)


@pytest.fixture(scope="module")
def images(dataset):
    return load_images(dataset.paths, PREPROCESS)


def _train(dataset, images, **settings):
    config = TrainingConfig(**{
        "backbone": "d8:1", "freeze": 0, "head": (8,), "head_epochs": 3, "head_learning_rate": 3e-3,
        "batch_size": 8, "test_fraction": 0.25, "valid_fraction": 0.25, "calibrate": False, **settings,
    })
    return train_cnn(dataset, PREPROCESS, config, progress=lambda line: None, images=images, score_test=False)


@pytest.fixture(scope="module")
def trained(dataset, images):
    return _train(dataset, images)


def _field_moments(inputs):
    """Mean and variance of each field (channels ``g · fields + i``) over everything: numpy, float64."""
    values = np.asarray(inputs, dtype=np.float64)
    values = values.reshape(-1, ORDER, values.shape[-1] // ORDER)
    return values.mean(axis=(0, 1)), values.var(axis=(0, 1))


def test_trained_d8_keeps_the_population_statistics_of_its_training_images(trained):
    model, train_x = trained.model, trained.images["train"]
    norms = norm_layers(model)
    assert [type(layer).__name__ for layer in norms] == ["FieldBatchNorm"] * 5
    kept = [(layer.moving_mean.numpy().copy(), layer.moving_variance.numpy().copy()) for layer in norms]
    # each layer's inputs in training mode (earlier layers normalised by each batch's own statistics),
    # in the training batches of 8, as the recompute sees them
    probe = keras.Model(model.input, [layer.input for layer in norms])
    batches = [probe(train_x[start:start + 8], training=True) for start in range(0, len(train_x), 8)]
    for index, (mean, variance) in enumerate(kept):
        expected_mean, expected_variance = _field_moments(np.concatenate([np.asarray(b[index]) for b in batches]))
        print(f"{norms[index].name}: mean {mean}, variance {variance}")
        np.testing.assert_allclose(mean, expected_mean, rtol=1e-4, atol=1e-6 * np.abs(expected_mean).max())
        np.testing.assert_allclose(variance, expected_variance, rtol=1e-4)


def test_statistics_of_one_batch_make_inference_answers_the_training_mode_ones(trained):
    model, train_x = trained.model, trained.images["train"]
    recompute_norm_statistics(model, train_x, batch_size=len(train_x))
    embedding = keras.Model(model.input, model.get_layer("embedding").output)  # before the head's dropout
    inference = embedding.predict(train_x, verbose=0)
    training = np.asarray(embedding(train_x, training=True))  # every layer normalised by these images' statistics
    assert np.ptp(inference) > 1e-3
    np.testing.assert_allclose(inference, training, atol=1e-5 * np.abs(training).max())


def test_recomputed_d8_exports_to_onnx_unchanged(trained, tmp_path):
    import onnxruntime as ort

    from survey_classifier.cnn.export import export_onnx

    model, valid_x = trained.model, trained.images["valid"]
    recompute_norm_statistics(model, trained.images["train"], batch_size=8)
    path = tmp_path / "d8.onnx"
    export_onnx(model, path, classes=trained.classes, preprocess_config=PREPROCESS, name="d8-precise",
                version="0", check_images=valid_x)  # raises when ONNX and Keras differ by more than 1e-4
    operators = {node.op_type for node in onnx.load(path).graph.node}
    assert "Conv" in operators and not {"BatchNormalization", "Gather", "Tile"} & operators
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    probabilities = session.run(["probabilities"], {"image": valid_x})[0]
    np.testing.assert_allclose(probabilities, model.predict(valid_x, verbose=0), atol=1e-5)


def test_recompute_leaves_the_training_unchanged_and_the_same_seed_gives_the_same_model(dataset, images):
    # no validation part: the weights kept are those of the lowest training loss, the same in every run
    settings = {"head_epochs": 2, "valid_fraction": 0.0}
    first, second = _train(dataset, images, **settings), _train(dataset, images, **settings)
    running = _train(dataset, images, norm_statistics="running", **settings)
    augmented = _train(dataset, images, norm_statistics="precise-augmented", **settings)
    for a, b in zip(first.model.weights, second.model.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)
    for other in (running, augmented):
        assert first.history["loss"] == other.history["loss"]
        for a, b in zip(first.model.weights, other.model.weights):
            if a.trainable:
                np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)
        moving = [(a.numpy(), b.numpy()) for a, b in zip(first.model.weights, other.model.weights)
                  if "moving" in a.path]
        assert len(moving) == 10 and all(np.abs(a - b).max() > 1e-6 for a, b in moving)


def test_keras_batchnorm_is_recomputed_frozen_norms_and_random_states_are_kept(images):
    from keras import layers

    keras.utils.set_random_seed(0)
    inputs = keras.Input((32, 32, 1))
    features = layers.Conv2D(4, 3, name="conv")(inputs)
    x = layers.ReLU()(layers.BatchNormalization(name="norm")(features))
    x = layers.BatchNormalization(name="frozen_norm")(layers.Conv2D(4, 3)(x))
    x = field_norm_class()(2, name="frozen_field_norm")(layers.Conv2D(4, 3)(x))
    x = layers.Dropout(0.5)(layers.GlobalAveragePooling2D()(x))
    model = keras.Model(inputs, layers.Dense(2)(x))
    frozen = [model.get_layer("frozen_norm"), model.get_layer("frozen_field_norm")]
    for layer in frozen:
        layer.trainable = False
    assert norm_layers(model) == [model.get_layer("norm")]
    before = {v.path: v.numpy().copy() for v in model.non_trainable_variables if "norm" not in v.path}
    frozen_before = [w.numpy().copy() for layer in frozen for w in layer.weights]
    assert any("seed" in path for path in before)  # the dropout's random state

    assert recompute_norm_statistics(model, images, batch_size=8) == 1
    conv = np.asarray(keras.Model(inputs, features)(images), dtype=np.float64)
    np.testing.assert_allclose(model.get_layer("norm").moving_mean.numpy(), conv.mean(axis=(0, 1, 2)), rtol=1e-5)
    np.testing.assert_allclose(model.get_layer("norm").moving_variance.numpy(), conv.var(axis=(0, 1, 2)),
                               rtol=1e-4)
    for path, value in before.items():
        np.testing.assert_array_equal([v for v in model.non_trainable_variables if v.path == path][0].numpy(),
                                      value, err_msg=path)
    for value, weight in zip(frozen_before, [w for layer in frozen for w in layer.weights]):
        np.testing.assert_array_equal(weight.numpy(), value)
    # a frozen field norm normalises by its moving statistics, in training too (as Keras's)
    field_norm = model.get_layer("frozen_field_norm")
    field_inputs = keras.Model(inputs, field_norm.input).predict(images, verbose=0)
    np.testing.assert_array_equal(np.asarray(field_norm(field_inputs, training=True)),
                                  np.asarray(field_norm(field_inputs, training=False)))
    np.testing.assert_array_equal(field_norm.moving_variance.numpy(), np.ones(2))
