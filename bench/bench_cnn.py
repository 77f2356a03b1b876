"""ONNX Runtime vs Keras ``model.predict`` on CPU for the shipped CNN, batch 64.

Both run the same weights on the same 64 real preprocessed MiraBest
cutouts, side by side in one process; the figure that matters is the ratio.

    python bench/bench_cnn.py [--repeats 30] [--threads N]

Needs the [train] extra (TensorFlow) for the Keras side.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("SURVEY_CLASSIFIER_DATA", REPO.parent / "shared" / "data"))


def _timed(function, repeats: int) -> float:
    function()  # warm-up (graph tracing, session arena)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=0, help="ORT intra-op threads (0: default)")
    args = parser.parse_args()

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import onnxruntime as ort

    from survey_classifier.cnn.backbones import load_keras_model
    from survey_classifier.cnn.data import load_images
    from survey_classifier.stages.cnn import DEFAULT_MODEL, CNNStage

    stage = CNNStage(batch_size=args.batch, providers=["CPUExecutionProvider"],
                     intra_op_threads=args.threads or None)
    stage.setup()
    files = sorted((DATA / "mirabest" / "fits").glob("*.fits"))[: args.batch]
    images = load_images(files, stage.preprocess_config)
    keras_model = load_keras_model(DEFAULT_MODEL / "model.keras")
    session = stage.session_
    input_name = session.get_inputs()[0].name

    def first(outputs):  # an ensemble also returns its embedding
        return outputs[0] if isinstance(outputs, (list, tuple)) else outputs

    keras_predict = lambda: first(keras_model.predict(images, batch_size=args.batch, verbose=0))
    keras_call = lambda: np.asarray(first(keras_model(images, training=False)))
    onnx_run = lambda: session.run(["probabilities"], {input_name: images})[0]

    difference = float(np.max(np.abs(keras_predict() - onnx_run())))
    t_predict = _timed(keras_predict, args.repeats)
    t_call = _timed(keras_call, args.repeats)
    t_onnx = _timed(onnx_run, args.repeats)
    n = len(images)
    print(f"model {stage.model_ref}  input {images.shape[1:]}  batch {n}  "
          f"ORT {ort.__version__} ({session.get_providers()[0]})  Keras {keras.__version__}")
    print(f"max |dp| Keras vs ORT: {difference:.2g}")
    print(f"{'runner':<28}{'ms/batch':>10}{'images/s':>12}{'ORT speed-up':>14}")
    for name, seconds in (("keras model.predict", t_predict), ("keras model(x) (eager call)", t_call),
                          ("onnxruntime session.run", t_onnx)):
        print(f"{name:<28}{1e3 * seconds:>10.2f}{n / seconds:>12.0f}{seconds / t_onnx:>13.1f}x")


if __name__ == "__main__":
    main()
