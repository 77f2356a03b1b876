"""How much a trained CNN's answer changes when the cutout turns, on real MiraBest cutouts.

For the validation part of a trained model's split (never its test part),
each cutout is turned on the sky (its FITS pixels, before preprocessing)
by each angle, and the exported ONNX model (run by the ``cnn`` stage) is
asked again. Quarter turns are also applied to the preprocessed image
itself (exact pixel permutations). Prints, per angle, the largest and the
median change (and its 95th percentile) of the probabilities and the
share of answers that flip.

    python bench/rotation_check.py MODEL_DIR [--angles 45,90,30]
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("SURVEY_CLASSIFIER_DATA", REPO.parent / "shared" / "data"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path, help="a trained model's folder (model.onnx, split.csv)")
    parser.add_argument("--angles", default="45,22.5,90", help="comma-separated angles in degrees")
    args = parser.parse_args()

    from astropy.table import Table

    from survey_classifier.cnn.data import load_turned_images
    from survey_classifier.stages.cnn import CNNStage

    stage = CNNStage(model=args.model, embedding=False)
    stage.setup()
    split = Table.read(args.model / "split.csv", format="ascii.csv")
    files = [DATA / "mirabest" / "fits" / name for name in split[split["split"] == "valid"]["file"]]
    base = load_turned_images(files, stage.preprocess_config, 0.0)
    p0 = stage.predict(base)[0]
    print(f"model {args.model}  validation cutouts {len(files)}")
    print(f"{'turn':<30}{'max |dp|':>10}{'95th pct':>10}{'median':>10}{'answers flipped':>17}")

    def row(name, images):
        p = stage.predict(np.ascontiguousarray(images))[0]
        change = np.abs(p - p0).max(axis=1)
        flipped = np.mean(p.argmax(axis=1) != p0.argmax(axis=1))
        print(f"{name:<30}{change.max():>10.3g}{np.percentile(change, 95):>10.3g}{np.median(change):>10.3g}"
              f"{flipped:>16.1%}")

    for turns in (1, 2, 3):
        row(f"{90 * turns} deg (pixel permutation)", np.rot90(base, turns, axes=(1, 2)))
    for angle in (float(a) for a in args.angles.split(",") if a.strip()):
        row(f"{angle:g} deg (FITS turned)", load_turned_images(files, stage.preprocess_config, angle))


if __name__ == "__main__":
    main()
