"""GPU check of the TensorFlow SOM core; see bench/gpu_check_som.sh."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("SURVEY_CLASSIFIER_DATA", REPO.parent / "shared" / "data"))
RGZ_IMAGES = 176_750


def load_images(size, limit=None):
    from astropy.io import fits

    from survey_classifier.preprocess import PreprocessConfig, preprocess

    files = sorted((DATA / "mirabest" / "fits").glob("*.fits"))[:limit]
    if not files:
        sys.exit(f"no MiraBest FITS files under {DATA}; set SURVEY_CLASSIFIER_DATA")
    config = PreprocessConfig(size=size)
    return np.stack([preprocess(fits.getdata(path), config) for path in files])


def augmented(images, n, seed=1):
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    out = np.empty((n, *images.shape[1:]), np.float32)
    for i in range(n):
        image = images[rng.integers(len(images))]
        out[i] = ndimage.rotate(image[::-1] if rng.random() < 0.5 else image, rng.uniform(0, 360),
                                reshape=False, order=1)  # fmt: skip
    return np.clip(out, 0.0, None)


def timed(function, *args, **kwargs):
    start = time.perf_counter()
    function(*args, **kwargs)
    return time.perf_counter() - start


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--rgz-images", type=int, default=10_000)
    parser.add_argument("--batch-size", type=int, default=64, help="mini-batch size for the batch run")
    args = parser.parse_args(argv)
    import tensorflow as tf

    from survey_classifier.som import RotationInvariantSOM
    from survey_classifier.som.gpu import TensorFlowSOM
    from survey_classifier.som.som import REFINE_WITHIN

    report = {"gpus": [d.name for d in tf.config.list_physical_devices("GPU")], "tf": tf.__version__}
    print("GPUs:", report["gpus"] or "NONE - running on the CPU")
    images = load_images(64)

    # 1. agreement: the same online epoch on the CPU (numpy) and on the device (TF)
    settings = dict(grid_shape=(10, 10), neuron_size=64, region_diameter=45, n_rotations=360,
                    flip=True, init=images[:100], shuffle=False, track_errors=False)  # fmt: skip
    cpu = RotationInvariantSOM(**settings)
    cpu_s = timed(cpu.fit, images[:300])
    gpu_som = RotationInvariantSOM(**settings)
    gpu_som.initialise(images[:300])
    core = TensorFlowSOM(gpu_som)
    core.train_epoch(images[:8])  # compile
    gpu_som.initialise(images[:300])
    core = TensorFlowSOM(gpu_som)
    gpu_s = timed(core.train_epoch, images[:300])
    core.write_back()
    diff = float(np.abs(gpu_som.neurons_ - cpu.neurons_).max() / np.abs(cpu.neurons_).max())
    expected, got = cpu.map(images), core.map(images)
    report["agreement"] = {
        "max_relative_neuron_difference": diff,
        "same_node": float(np.mean(expected["node"] == got["node"])),
        "same_angle": float(np.mean(expected["angle_deg"] == got["angle_deg"])),
        "max_relative_distance_difference": float(np.max(np.abs(got["distance"] / expected["distance"] - 1))),
        "cpu_online_ms_per_image": 1000 * cpu_s / 300,
        "gpu_online_ms_per_image": 1000 * gpu_s / 300,
    }
    print("agreement:", json.dumps(report["agreement"], indent=1))

    # 2. mapping throughput, 10x10 map of 64x64 neurons: the search on the device alone,
    # and with the candidate orientations re-measured in pixels on the host (the default)
    for refine, key in ((None, "mapping_images_per_s_fast"), (REFINE_WITHIN, "mapping_images_per_s")):
        core.map(images[:256], refine_within=refine)
        seconds = timed(core.map, images, batch_size=1024, refine_within=refine)
        report[key] = len(images) / seconds
        print(f"mapping, refine_within={refine}: {report[key]:.0f} images/s (incl. polar transform)")

    # 3. RGZ configuration, online (as PINK) and mini-batch
    big = augmented(load_images(124), args.rgz_images)
    for batch in (1, args.batch_size):
        som = RotationInvariantSOM(grid_shape=(21, 21), layout="hexagonal", neuron_size=64,
                                   region_diameter=64, n_rotations=360, flip=True, n_freq=102,
                                   random_state=0, track_errors=False, batch_size=batch)  # fmt: skip
        som.initialise(big)
        core = TensorFlowSOM(som)
        core.train_epoch(big[: 4 * batch])  # compile
        seconds = timed(core.train_epoch, big)
        per_image = seconds / len(big)
        key = f"rgz_batch{batch}"
        report[key] = {"images": len(big), "seconds": seconds, "ms_per_image": 1000 * per_image,
                       "projected_epoch_s": per_image * RGZ_IMAGES}  # fmt: skip
        print(f"RGZ config, batch {batch}: {1000 * per_image:.3f} ms/image -> projected epoch "
              f"{per_image * RGZ_IMAGES:.0f} s (goal < 30 s on one H200; PINK 477 s on 2 GPUs)")  # fmt: skip
    out = Path(os.environ.get("OUT", ".")) / "gpu_check_som.json"
    out.write_text(json.dumps(report, indent=1))
    print("written", out)


if __name__ == "__main__":
    main()
