"""CNN inference cost on CPU, batch 64: ONNX Runtime vs Keras, and fr-cnn:1 vs an equivariant model.

Part 1 runs the shipped model's weights in Keras and in ONNX Runtime on the
same 64 real preprocessed MiraBest cutouts, side by side in one process.
Part 2 times, in ONNX Runtime on the CPU, the shipped ``fr-cnn:1`` and a
rotation-equivariant classifier (``--backbone``, by default ``c8`` of
``--c8-width``; e.g. ``d8`` or ``d8-blur:2``; the same head) on the same
batch, alternating between them so both see the same load, and prints the
cost per image and the ratio. The equivariant model is a trained one
(``--c8-model DIR``) or, by default, an untrained one of the same shape
exported through the same verified export (the cost does not depend on
the weights).

    python bench/bench_cnn.py [--repeats 30] [--threads N] [--c8-width 3 | --backbone d8:2] [--ensemble]
                              [--c8-model DIR] [--model DIR]

Needs the [train] extra (TensorFlow).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
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


def _untrained(backbone: str, images: np.ndarray, preprocess_config, folder: Path, *, ensemble: bool = False) -> Path:
    """An untrained classifier on ``backbone`` (head as fr-cnn:1's: dense 64, softmax) exported to ``folder``.

    With ``ensemble``, the classifier averaged with fr-cnn:1's network in one model, as ``train
    cnn-ensemble`` joins its members (temperature 1), so the cost is that of the whole ensemble.
    """
    from survey_classifier.cnn.backbones import build_backbone, load_keras_model
    from survey_classifier.cnn.ensemble import calibrated_ensemble
    from survey_classifier.cnn.export import export_onnx
    from survey_classifier.cnn.train import TrainingConfig, build_classifier
    from survey_classifier.stages.cnn import DEFAULT_MODEL

    base = build_backbone(backbone, preprocess_config.size)
    model = build_classifier(base, 2, TrainingConfig(head=(64,)))
    if ensemble:
        model = calibrated_ensemble([load_keras_model(DEFAULT_MODEL / "model.keras"), model], 1.0)
    path = folder / "model.onnx"
    export_onnx(model, path, classes=["FRI", "FRII"], preprocess_config=preprocess_config,
                name=f"{backbone.replace(':', '-')}-untrained", version="0", check_images=images)
    return path


def _session(path: Path, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    # Idle intra-op threads spin for a while after each run; with two sessions taking turns on a
    # few cores, one session's spinning threads would slow the other down.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if threads:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _side_by_side(sessions: dict, images: np.ndarray, repeats: int) -> dict[str, float]:
    """Median seconds per batch of each session: rounds of 5 runs each, the sessions taking turns."""
    times: dict[str, list[float]] = {name: [] for name in sessions}
    for session in sessions.values():
        session.run(["probabilities"], {"image": images})  # warm-up
    for _ in range(max(1, repeats // 5)):
        for name, session in sessions.items():
            for _ in range(5):
                start = time.perf_counter()
                session.run(["probabilities"], {"image": images})
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=0, help="ORT intra-op threads (0: default)")
    parser.add_argument("--c8-width", type=int, default=3, help="width of the untrained c8 model")
    parser.add_argument("--backbone", default=None,
                        help="the untrained model's backbone instead of c8:WIDTH (e.g. d8, d8-blur:2)")
    parser.add_argument("--ensemble", action="store_true",
                        help="time the untrained model averaged with fr-cnn:1 in one ONNX model (an ensemble's cost)")
    parser.add_argument("--c8-model", type=Path, default=None, help="a trained c8 model folder instead")
    parser.add_argument("--model", type=Path, default=None,
                        help="any trained model folder instead (e.g. fr-cnn:2, an ensemble)")
    parser.add_argument("--skip-keras", action="store_true", help="only the ONNX Runtime comparison")
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
    session = stage.session_
    input_name = session.get_inputs()[0].name
    n = len(images)
    print(f"input {images.shape[1:]}  batch {n}  ORT {ort.__version__} (CPUExecutionProvider)  "
          f"Keras {keras.__version__}  threads {args.threads or 'default'}")

    if not args.skip_keras:
        keras_model = load_keras_model(DEFAULT_MODEL / "model.keras")

        def first(outputs):  # an ensemble also returns its embedding
            return outputs[0] if isinstance(outputs, (list, tuple)) else outputs

        keras_predict = lambda: first(keras_model.predict(images, batch_size=args.batch, verbose=0))
        keras_call = lambda: np.asarray(first(keras_model(images, training=False)))
        onnx_run = lambda: session.run(["probabilities"], {input_name: images})[0]
        difference = float(np.max(np.abs(keras_predict() - onnx_run())))
        t_predict = _timed(keras_predict, args.repeats)
        t_call = _timed(keras_call, args.repeats)
        t_onnx = _timed(onnx_run, args.repeats)
        print(f"\n{stage.model_ref}: Keras vs ONNX Runtime, max |dp| {difference:.2g}")
        print(f"{'runner':<28}{'ms/batch':>10}{'images/s':>12}{'ORT speed-up':>14}")
        for name, seconds in (("keras model.predict", t_predict), ("keras model(x) (eager call)", t_call),
                              ("onnxruntime session.run", t_onnx)):
            print(f"{name:<28}{1e3 * seconds:>10.2f}{n / seconds:>12.0f}{seconds / t_onnx:>13.1f}x")

    with tempfile.TemporaryDirectory() as folder:
        if args.model is not None:
            c8_path, c8_name = args.model / "model.onnx", str(args.model)
        elif args.c8_model is not None:
            c8_path, c8_name = args.c8_model / "model.onnx", f"c8 ({args.c8_model})"
        else:
            backbone = args.backbone or f"c8:{args.c8_width}"
            c8_path = _untrained(backbone, images, stage.preprocess_config, Path(folder), ensemble=args.ensemble)
            c8_name = f"{'fr-cnn:1 + ' if args.ensemble else ''}{backbone} (untrained, same shape)"
        sessions = {stage.model_ref: _session(DEFAULT_MODEL / "model.onnx", args.threads),
                    c8_name: _session(c8_path, args.threads)}
        seconds = _side_by_side(sessions, images, args.repeats)
    reference = seconds[stage.model_ref]
    print(f"\nONNX Runtime on CPU, batch {n}, median of {5 * max(1, args.repeats // 5)} runs each "
          "(rounds of 5, taking turns)")
    print(f"{'model':<40}{'ms/batch':>10}{'ms/image':>10}{'images/s':>10}{'cost':>8}")
    for name, value in seconds.items():
        print(f"{name:<40}{1e3 * value:>10.2f}{1e3 * value / n:>10.3f}{n / value:>10.0f}"
              f"{value / reference:>7.2f}x")


if __name__ == "__main__":
    main()
