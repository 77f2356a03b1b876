"""Per-epoch validation curve of trained models, and the epochs where validation broke down.

Reads each model folder's ``history.json`` (written by ``train cnn``) and
prints the validation accuracy per epoch, the epoch kept (lowest
validation loss), the *unstable* epochs (validation accuracy at most 60 %
although an earlier epoch reached 70 %; the rule pre-registered in
docs/cnn.md, "Precise norm statistics") and the epochs whose validation
accuracy equals one class's share of the validation part (what a
constant answer scores).

    python bench/epoch_stability.py MODEL_DIR [MODEL_DIR ...]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

#: An epoch is unstable when its validation accuracy is at most LOW after an epoch reached HIGH.
LOW, HIGH = 0.60, 0.70


def unstable_epochs(accuracies) -> list[int]:
    """1-based epochs at most :data:`LOW` after one at least :data:`HIGH`."""
    reached, unstable = False, []
    for epoch, accuracy in enumerate(accuracies, start=1):
        if reached and accuracy <= LOW + 1e-9:
            unstable.append(epoch)
        reached = reached or accuracy >= HIGH - 1e-9
    return unstable


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", type=Path, nargs="+", help="trained models' folders (history.json, metrics.json)")
    args = parser.parse_args()
    for folder in args.models:
        history = json.loads((folder / "history.json").read_text())
        metrics = json.loads((folder / "metrics.json").read_text())
        accuracies, losses = history["val_accuracy"], history["val_loss"]
        n = metrics["valid"]["n"]
        shares = {round(row_sum / n, 6) for row_sum in map(sum, metrics["valid"]["confusion_matrix"])}
        kept = min(range(len(losses)), key=losses.__getitem__)
        print(f"{folder}: {len(accuracies)} epochs, kept epoch {kept + 1}: validation accuracy "
              f"{accuracies[kept]:.1%} (best of any epoch {max(accuracies):.1%})")
        print(f"  unstable epochs: {unstable_epochs(accuracies) or 'none'}")
        print(f"  epochs at a class's share {sorted(shares)}: "
              f"{[e for e, a in enumerate(accuracies, 1) if round(a, 6) in shares] or 'none'}")
        print(f"  highest validation loss after epoch 20: {max(losses[20:], default=float('nan')):.2f}")
        print("  validation accuracy per epoch (%): " + " ".join(f"{100 * a:.0f}" for a in accuracies))


if __name__ == "__main__":
    main()
