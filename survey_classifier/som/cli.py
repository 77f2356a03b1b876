"""``survey-classifier train som``: train a rotation-invariant SOM from FITS cutouts.

Mounted by the main command line as ``train som`` (and ``show som`` for
:func:`show_som`). Writes ``som.npz`` plus the PNG pictures into ``--out``.
"""

from __future__ import annotations

import json
from pathlib import Path

import click
import numpy as np

__all__ = ["train_som", "show_som", "load_training_images"]

_PICTURES = ("prototypes.png", "hits.png", "best_matches.png")


def _grid(text: str) -> tuple[int, int]:
    try:
        ny, nx = (int(part) for part in text.lower().split("x"))
    except ValueError:
        msg = f"--grid expects ROWSxCOLUMNS such as 10x10, got {text!r}"
        raise click.BadParameter(msg) from None
    return ny, nx


def load_training_images(inputs, config, *, progress=False):
    """Read FITS cutouts (files or directories) and preprocess them with ``config``.

    Returns the (n, size, size) images and the list of files used; files that
    cannot be read are reported on stderr and left out.
    """
    from tqdm.auto import tqdm

    from survey_classifier.errors import CutoutError
    from survey_classifier.io.fits import read_cutout

    files: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            files.extend(sorted(p for p in path.rglob("*") if p.suffix.lower() in (".fits", ".fit", ".fz", ".gz")))
        else:
            files.append(path)
    images, used = [], []
    for path in tqdm(files, disable=not progress, desc="reading", unit="file"):
        try:
            cutout = read_cutout(path)
            images.append(cutout.preprocessed(config))
            used.append(path)
        except (CutoutError, ValueError) as exc:
            click.echo(f"skipped {path}: {exc}", err=True)
    if not images:
        msg = f"no readable FITS cutouts among {len(files)} files in {list(inputs)}"
        raise click.ClickException(msg)
    return np.stack(images), used


@click.command("som")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Folder for som.npz and the PNG pictures.")
@click.option("--grid", "grid", default="10x10", show_default=True, help="Map shape ROWSxCOLS (hexagonal: DxD, D odd).")
@click.option("--layout", type=click.Choice(["cartesian", "hexagonal"]), default="cartesian", show_default=True)
@click.option("--periodic/--no-periodic", default=False, show_default=True, help="Wrap the map edges (cartesian).")
@click.option("--neuron-size", default=64, show_default=True, type=int)
@click.option("--region-diameter", default=None, type=float,
              help="Circular distance region [pixels]; default the neuron size.")
@click.option("--rotations", "n_rotations", default=360, show_default=True, type=int)
@click.option("--flip/--no-flip", default=True, show_default=True)
@click.option("--n-freq", default="auto", show_default=True,
              help="Angular frequencies kept: a number, 'auto' (ceil(pi*R)+1) or 'all'.")
@click.option("--neighbourhood", type=click.Choice(["gaussian", "mexican_hat", "bubble"]), default="gaussian",
              show_default=True)
@click.option("--lr", "learning_rate", nargs=2, type=float, default=(0.5, 0.01), show_default=True,
              help="Learning rate START END.")
@click.option("--sigma", nargs=2, type=float, default=None, help="Neighbourhood width START END [grid units].")
@click.option("--decay", type=click.Choice(["exponential", "linear", "constant"]), default="exponential",
              show_default=True)
@click.option("--epochs", "n_epochs", default=1, show_default=True, type=int)
@click.option("--batch-size", default=1, show_default=True, type=int, help="1 = online updates as PINK.")
@click.option("--init", type=click.Choice(["samples", "random"]), default="samples", show_default=True)
@click.option("--seed", "random_state", default=0, show_default=True, type=int)
@click.option("--size", "image_size", default=64, show_default=True, type=int, help="Preprocessed image side [pixels].")
@click.option("--crop", default=None, type=int, help="Central crop before resizing [pixels].")
@click.option("--checkpoint/--no-checkpoint", default=False, help="Save som.npz after every epoch.")
@click.option("--pink/--no-pink", "write_pink", default=False, help="Also write som.pink (PINK 2 SOM file).")
@click.option("--pictures/--no-pictures", default=True, show_default=True)
@click.option("--show", is_flag=True, help="Open the pictures when done.")
@click.option("--progress/--no-progress", default=True, show_default=True)
def train_som(inputs, out_dir, grid, layout, periodic, neuron_size, region_diameter, n_rotations,
              flip, n_freq, neighbourhood, learning_rate, sigma, decay, n_epochs, batch_size, init,
              random_state, image_size, crop, checkpoint, write_pink, pictures, show, progress):  # fmt: skip
    """Train a rotation/flip-invariant SOM on the FITS cutouts in INPUTS."""
    from survey_classifier.errors import SurveyClassifierError
    from survey_classifier.preprocess import PreprocessConfig
    from survey_classifier.som import RotationInvariantSOM

    if n_freq not in ("auto", "all") and not str(n_freq).isdigit():
        msg = f"--n-freq expects a number, 'auto' or 'all', got {n_freq!r}"
        raise click.BadParameter(msg)
    n_freq = None if n_freq == "all" else n_freq if n_freq == "auto" else int(n_freq)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    try:
        config = PreprocessConfig(size=image_size, crop=crop)
        images, used = load_training_images(inputs, config, progress=progress)
        som = RotationInvariantSOM(
            grid_shape=_grid(grid), layout=layout, periodic=periodic, neuron_size=neuron_size,
            region_diameter=region_diameter, n_rotations=n_rotations, flip=flip, n_freq=n_freq,
            neighbourhood=neighbourhood, learning_rate=tuple(learning_rate),
            sigma=None if sigma is None else tuple(sigma), decay=decay, n_epochs=n_epochs,
            batch_size=batch_size, init=init, random_state=random_state,
            preprocess_config=config, progress=progress,
            checkpoint_path=str(out / "som.npz") if checkpoint else None,
        )  # fmt: skip
        som.fit(images)
    except (SurveyClassifierError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    path = som.save(out / "som.npz")
    click.echo(f"trained on {len(used)} cutouts; SOM written to {path}")
    for record in som.history_:
        click.echo(
            f"epoch {record['epoch']}: quantization error {record.get('quantization_error', float('nan')):.4f}, "
            f"topographic error {record.get('topographic_error', float('nan')):.4f}"
        )
    if write_pink:
        from survey_classifier.som.pink import write_som

        click.echo(f"PINK SOM written to {write_som(out / 'som.pink', som)}")
    if pictures:
        from survey_classifier.som.plots import save_pictures

        written = save_pictures(som, images, out)
        (out / "training_files.json").write_text(json.dumps([str(p) for p in used], indent=1))
        _report(written.values(), show)


def _report(paths, show):
    for path in paths:
        click.echo(f"picture: {path}")
        if show:
            click.launch(str(path))


@click.command("som")
@click.argument("som_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--open", "open_", is_flag=True, help="Open the pictures with the system viewer.")
def show_som(som_dir, open_):
    """Print (and with --open, open) the PNG pictures written beside a SOM."""
    found = [Path(som_dir) / name for name in _PICTURES if (Path(som_dir) / name).is_file()]
    if not found:
        msg = f"no SOM pictures ({', '.join(_PICTURES)}) in {som_dir}; train with --pictures"
        raise click.ClickException(msg)
    _report(found, open_)
