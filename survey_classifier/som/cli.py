"""``survey-classifier train som`` and ``show som``: train a rotation-invariant SOM, draw it.

Mounted by the main command line as ``train som`` and ``show som``.
Training writes ``som.npz`` plus the PNG pictures into ``--out`` (and, with
``--labels``, ``neurons.json``: each neuron's class counts and label).
``show som`` draws a map from its ``som.npz``, or a map registered in a
results database (``NAME:VERSION``, with the ``neurons.json`` registered
with it), with hit counts, classes and a neuron's members when given a
results database.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import click
import numpy as np

__all__ = ["train_som", "show_som", "load_training_images", "preprocess_options"]

_PICTURES = ("prototypes.png", "hits.png", "umatrix.png", "labels.png", "best_matches.png")


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


def preprocess_options(command):
    """The click options of :class:`~survey_classifier.preprocess.PreprocessConfig`."""
    options = [
        click.option("--size", "image_size", default=64, show_default=True, type=int,
                     help="Preprocessed image side [pixels]."),
        click.option("--crop", default=None, type=int, help="Central crop before resizing [pixels] (--extent fixed)."),
        click.option("--centre", type=click.Choice(["image", "emission"]), default="image", show_default=True,
                     help="Centre the window on the cutout or on its islands' flux-weighted centroid."),
        click.option("--extent", type=click.Choice(["fixed", "arcsec", "islands"]), default="fixed",
                     show_default=True, help="Window side: --crop pixels, --crop-arcsec, or the source's islands."),
        click.option("--crop-arcsec", type=float, default=None, help="Window side in arcsec (--extent arcsec)."),
        click.option("--source-fill", type=float, default=0.8, show_default=True,
                     help="--extent islands: the source diameter spans this fraction of the window."),
        click.option("--source-flux-fraction", type=float, default=0.9, show_default=True,
                     help="--extent islands: the source radius holds this fraction of the islands' flux."),
        click.option("--crop-min", type=float, default=16.0, show_default=True,
                     help="--extent islands: smallest window side [input pixels]."),
        click.option("--islands-only/--no-islands-only", default=False, show_default=True,
                     help="Zero every pixel outside the kept islands (3 sigma flood, 5 sigma seed)."),
        click.option("--island-reach", type=float, default=None,
                     help="Keep only the islands within this distance of the cutout centre [input pixels]."),
        click.option("--clip-sigma", type=float, default=3.0, show_default=True, help="Zero pixels below k sigma."),
        click.option("--circle", "circle_diameter", type=float, default=None,
                     help="Zero the image outside the centred circle of this diameter [output pixels]."),
        click.option("--stretch", type=click.Choice(["linear", "sqrt", "log", "square"]), default="linear",
                     show_default=True, help="Intensity transform before the scaling (log: log(1 + S/noise))."),
        click.option("--scaling", type=click.Choice(["minmax", "peak", "total", "none"]), default="minmax",
                     show_default=True, help="Per-image normalisation."),
    ]  # fmt: skip
    for option in reversed(options):
        command = option(command)
    return command


def _preprocess_config(options):
    from survey_classifier.preprocess import PreprocessConfig

    return PreprocessConfig(
        size=options["image_size"], crop=options["crop"], clip_sigma=options["clip_sigma"],
        scaling=options["scaling"], centre=options["centre"], extent=options["extent"],
        crop_arcsec=options["crop_arcsec"], source_flux_fraction=options["source_flux_fraction"],
        source_fill=options["source_fill"], crop_min=options["crop_min"],
        islands_only=options["islands_only"], island_reach=options["island_reach"],
        circle_diameter=options["circle_diameter"], stretch=options["stretch"],
    )  # fmt: skip


def read_labels(path, column):
    """``{file name: label}`` from a CSV with a ``file`` column (such as MiraBest's labels.csv)."""
    import csv

    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        missing = {"file", column} - set(reader.fieldnames or ())
        if missing:
            msg = f"{path}: no column {sorted(missing)} (columns: {reader.fieldnames})"
            raise click.ClickException(msg)
        return {Path(row["file"]).name: row[column] for row in reader}


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
@preprocess_options
@click.option("--labels", "labels_csv", type=click.Path(exists=True, dir_okay=False), default=None,
              help="CSV with a 'file' column: label the neurons with --label-column (neurons.json, labels.png).")
@click.option("--label-column", default="fr_class", show_default=True)
@click.option("--checkpoint/--no-checkpoint", default=False, help="Save som.npz after every epoch.")
@click.option("--pink/--no-pink", "write_pink", default=False, help="Also write som.pink (PINK 2 SOM file).")
@click.option("--pictures/--no-pictures", default=True, show_default=True)
@click.option("--show", is_flag=True, help="Open the pictures when done.")
@click.option("--progress/--no-progress", default=True, show_default=True)
def train_som(inputs, out_dir, grid, layout, periodic, neuron_size, region_diameter, n_rotations,
              flip, n_freq, neighbourhood, learning_rate, sigma, decay, n_epochs, batch_size, init,
              random_state, labels_csv, label_column, checkpoint, write_pink, pictures, show, progress,
              **preprocessing):  # fmt: skip
    """Train a rotation/flip-invariant SOM on the FITS cutouts in INPUTS."""
    from survey_classifier.errors import SurveyClassifierError
    from survey_classifier.som import RotationInvariantSOM

    if n_freq not in ("auto", "all") and not str(n_freq).isdigit():
        msg = f"--n-freq expects a number, 'auto' or 'all', got {n_freq!r}"
        raise click.BadParameter(msg)
    n_freq = None if n_freq == "all" else n_freq if n_freq == "auto" else int(n_freq)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    try:
        config = _preprocess_config(preprocessing)
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
    mapping = som.map(images) if pictures or labels_csv else None
    labels = None
    if labels_csv:
        from survey_classifier.som.labels import NEURON_LABELS_FILE

        labels = _label_neurons(som, mapping, used, read_labels(labels_csv, label_column), out / NEURON_LABELS_FILE)
    if pictures:
        from survey_classifier.som.plots import save_pictures

        written = save_pictures(som, images, out, mapping=mapping, labels=labels)
        (out / "training_files.json").write_text(json.dumps([str(p) for p in used], indent=1))
        _report(written.values(), show)


def _label_neurons(som, mapping, files, labels_by_file, path):
    from survey_classifier.som.labels import NeuronLabels

    classes = [labels_by_file.get(Path(file).name, "") for file in files]
    names = sorted({name for name in classes if name})
    if not names:
        msg = "none of the training files is in the --labels table"
        raise click.ClickException(msg)
    labels = NeuronLabels.fit(som.grid_, mapping["node"], classes, names)
    path.write_text(json.dumps(labels.to_dict()))
    click.echo(f"neuron labels ({', '.join(names)}; {labels.counts.sum()} labelled cutouts, "
               f"{100 * labels.mean_purity:.1f} % in their neuron's class) written to {path}")  # fmt: skip
    return labels


def _report(paths, show):
    for path in paths:
        click.echo(f"picture: {path}")
        if show:
            click.launch(str(path))


def _node(text):
    try:
        x, y = (int(part) for part in text.split(","))
    except ValueError:
        msg = f"--node expects X,Y such as 3,4, got {text!r}"
        raise click.BadParameter(msg) from None
    return x, y


@click.command("som")
@click.argument("som", metavar="SOM_PATH|NAME:VERSION")
@click.option("--db", "db_url", default=None,
              help="Results database: its cutouts are mapped for hit counts, classes and --node members; "
                   "the registry a NAME:VERSION map is read from.")
@click.option("--label-column", default=None,
              help="Column of the results table holding each cutout's class (a catalogue column such as "
                   "fr_class, or cnn_label).")  # fmt: skip
@click.option("--node", "nodes", multiple=True, help="X,Y of a neuron whose members to draw (repeatable).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="som-pictures", show_default=True)
@click.option("--open", "open_", is_flag=True, help="Open the pictures with the system viewer.")
def show_som(som, db_url, label_column, nodes, out_dir, open_):
    """Draw the SOM in SOM_PATH (som.npz, or its folder) or registered as NAME:VERSION (with --db).

    Pictures: prototypes, U-matrix, the neurons' classes, a neuron's members.
    A path that exists is always read as a path. A folder without som.npz
    but with pictures written by ``train som`` lists those pictures instead.
    The classes are those of --label-column when given, otherwise the map's
    own neurons.json (beside a file; for a registered map, the one
    registered with it, fetched and verified by its sha256).
    """
    from survey_classifier.errors import SurveyClassifierError, SurveyClassifierWarning
    from survey_classifier.som.drawing import draw_map
    from survey_classifier.som.labels import NEURON_LABELS_FILE

    path = Path(som)
    if path.exists():
        som_file = path / "som.npz" if path.is_dir() else path
        if not som_file.is_file():
            _list_pictures(path, open_)
            return
        labels_file = som_file.with_name(NEURON_LABELS_FILE)
        labels_file = labels_file if labels_file.is_file() else None
        mapped_db = db_url
    else:
        som_file, labels_file, mapped_db = _registered_map(som, db_url, needs_cutouts=bool(label_column or nodes))
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", SurveyClassifierWarning)
            written = draw_map(som_file, out_dir, db_url=mapped_db, label_column=label_column,
                               nodes=[_node(text) for text in nodes], neuron_labels_file=labels_file)  # fmt: skip
    except (SurveyClassifierError, ValueError, LookupError) as exc:
        raise click.ClickException(str(exc)) from exc
    for warning in caught:
        if issubclass(warning.category, SurveyClassifierWarning):
            click.echo(str(warning.message), err=True)
        else:
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    _report(written, open_)


def _list_pictures(folder, open_):
    found = [folder / name for name in _PICTURES if (folder / name).is_file()]
    if not found:
        msg = f"no som.npz and no SOM pictures ({', '.join(_PICTURES)}) in {folder}"
        raise click.ClickException(msg)
    _report(found, open_)


def _registered_map(model_ref, db_url, *, needs_cutouts):
    """The registered map's verified local file, its registered neurons.json (or None), and the database to map.

    Each condition that leaves something out of the pictures is said in one line on stderr. The
    database's cutouts are mapped for hit counts when it has any (always with --label-column or --node).
    """
    from survey_classifier.db import make_engine
    from survey_classifier.errors import ModelError
    from survey_classifier.stages.som import SOMStage

    if not _looks_like_ref(model_ref):
        msg = f"{model_ref!r} is neither an existing file or folder nor a registered map NAME:VERSION"
        raise click.BadParameter(msg, param_hint="'SOM_PATH|NAME:VERSION'")
    if db_url is None:
        msg = (f"{model_ref} names a registered map: give the results database it is registered in with "
               "--db URL (see `survey-classifier models list --db URL`)")
        raise click.UsageError(msg)
    engine = make_engine(db_url)
    try:
        ref = _stored_map(engine, model_ref, SOMStage.name)
        labels_file, note = _registered_labels(ref, engine)
        if note:
            click.echo(note, err=True)
        mapped_db = db_url
        if not needs_cutouts and not _has_cutouts(engine):
            click.echo(f"the results database {_shown_url(engine)} has no cutouts: the map is drawn without hit "
                       "counts", err=True)
            mapped_db = None
    except ModelError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        engine.dispose()
    return ref.path, labels_file, mapped_db


def _looks_like_ref(text) -> bool:
    name, colon, version = text.partition(":")
    return bool(colon and name and version) and not any(sep in text for sep in ("/", "\\"))


def _stored_map(engine, model_ref, stage):
    """``model_ref``'s reference, of a map of ``stage``, fetched and verified."""
    from survey_classifier.artefacts import fetch
    from survey_classifier.errors import ModelError
    from survey_classifier.registry import stored_ref

    try:
        ref = stored_ref(engine, model_ref)
    except ModelError as exc:
        msg = (f"no registered model {model_ref} in {_shown_url(engine)}; see its models with "
               f"`survey-classifier models list --db {_shown_url(engine)}`")
        raise ModelError(msg) from exc
    if ref.stage != stage:
        msg = f"{ref.ref} is a model of the {ref.stage!r} stage, not a map of the {stage!r} stage: show som draws maps"
        raise ModelError(msg)
    return fetch(ref, engine)


def _registered_labels(ref, engine):
    """The neurons.json registered with the map, or None and a note (a refused file: the map is drawn without it)."""
    from survey_classifier.errors import ModelError
    from survey_classifier.som.labels import registered_labels_file

    try:
        return registered_labels_file(ref, engine)
    except ModelError as exc:
        return None, f"{exc}; the map is drawn without its neuron classes"


def _has_cutouts(engine) -> bool:
    from sqlalchemy import select

    from survey_classifier.db.models import CutoutRow

    with engine.connect() as connection:
        return connection.execute(select(CutoutRow.id).limit(1)).first() is not None


def _shown_url(engine) -> str:
    return engine.url.render_as_string(hide_password=True)
