"""Click commands for CNN training, mounted under ``survey-classifier train``.

``train cnn``
    train a classifier (or a base network) from a labelled catalogue and
    export it to ONNX with its record;
``train cnn-table``
    the transfer-learning table: scratch / frozen / fine-tuned over seeds;
``train encoder``
    self-supervised pre-training of a transfer base on unlabelled images.
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import click

from survey_classifier.cnn.norm_statistics import NORM_STATISTICS

__all__ = ["train_cnn", "cnn_table", "cnn_ensemble", "train_encoder"]


def _parse_where(values) -> dict:
    where = {}
    for item in values:
        if "=" not in item:
            msg = f"--where expects COLUMN=VALUE, got {item!r}"
            raise click.BadParameter(msg)
        column, value = item.split("=", 1)
        values = [v.strip() for v in value.split(",")]
        where[column.strip()] = values if len(values) > 1 else values[0]
    return where


def _command_line(command: str = "cnn") -> str:
    """``survey-classifier train COMMAND ...`` as this process was invoked."""
    args = sys.argv[1:]
    if command in args:
        args = args[args.index(command) + 1:]
    return f"survey-classifier train {command} " + " ".join(shlex.quote(a) for a in args)


def _parse_freeze(value: str):
    if value == "all":
        return "all"
    try:
        return int(value)
    except ValueError:
        msg = f"--freeze expects 'all' or a number of layers, got {value!r}"
        raise click.BadParameter(msg) from None


def _parse_head(value: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:
        msg = f"--head expects comma-separated layer widths such as 64 or 128,32, got {value!r}"
        raise click.BadParameter(msg) from None


def _catalogue_options(function):
    options = [
        click.option("--catalogue", "catalogue", required=True, type=click.Path(exists=True, dir_okay=False),
                     help="Labelled table (CSV, ECSV, VOTable, FITS) with file and label columns."),
        click.option("--file-column", default="file", show_default=True),
        click.option("--label-column", default="label", show_default=True),
        click.option("--image-dir", type=click.Path(exists=True, file_okay=False), default=None,
                     help="Directory of the images (default: beside the catalogue, or its fits/ or png/)."),
        click.option("--classes", default=None, help="Comma-separated task classes, in output order."),
        click.option("--where", multiple=True, metavar="COLUMN=VALUE",
                     help="Keep only rows where COLUMN equals VALUE, or one of VALUE1,VALUE2 (repeatable)."),
        click.option("--split-column", default=None, help="Column with a predefined train/valid/test split."),
        click.option("--extra-train-where", multiple=True, metavar="COLUMN=VALUE",
                     help="Rows (selected like --where) added to the training part only, e.g. less "
                          "certain labels; rows near a validation or test source are left out."),
        click.option("--min-per-class", default=10, show_default=True, type=int),
        click.option("--size", default=64, show_default=True, type=int, help="Model input side (pixels)."),
        click.option("--crop", default=100, show_default=True, type=int,
                     help="Central crop (pixels) before resizing; 0 keeps the whole image."),
        click.option("--clip-sigma", default=3.0, show_default=True, type=float),
        click.option("--head", default="64", show_default=True, help="Widths of the new dense layers."),
        click.option("--dropout", default=0.3, show_default=True, type=float),
        click.option("--head-epochs", default=30, show_default=True, type=int),
        click.option("--head-lr", default=1e-3, show_default=True, type=float),
        click.option("--fine-tune-epochs", default=0, show_default=True, type=int),
        click.option("--fine-tune-lr", default=1e-4, show_default=True, type=float),
        click.option("--batch-size", default=32, show_default=True, type=int),
        click.option("--invariance", type=click.Choice(["none", "d4"]), default="none", show_default=True,
                     help="d4: average the base network's features over the 8 quarter turns and flips "
                          "of each image (exactly invariant to them; 8x the compute)."),
        click.option("--calibrate/--no-calibrate", default=True, show_default=True,
                     help="Fit a temperature on the validation part and build it into the model, so its "
                          "probabilities are calibrated (reported in calibration.md, reliability.png)."),
        click.option("--uncertain-below", default=0.6, show_default=True, type=click.FloatRange(0.0, 1.0),
                     help="Recorded in the model: the cnn stage flags a result uncertain when its top "
                          "probability is below this."),
        click.option("--class-weight", type=click.Choice(["balanced", "none"]), default="balanced",
                     show_default=True),
        click.option("--norm-statistics", type=click.Choice(list(NORM_STATISTICS)), default="precise",
                     show_default=True,
                     help="Moving statistics of the batch-normalisation layers (d8, c8-blur): "
                          + "; ".join(f"'{name}': {what}" for name, what in NORM_STATISTICS.items()) + "."),
        click.option("--augment/--no-augment", default=True, show_default=True,
                     help="Random rotations and flips of the training images."),
        click.option("--test-fraction", default=0.2, show_default=True, type=float),
        click.option("--valid-fraction", default=0.15, show_default=True, type=float),
        click.option("--split-seed", default=0, show_default=True, type=int),
        click.option("--cache-dir", type=click.Path(file_okay=False), default=None,
                     help="Keep preprocessed images here between runs."),
    ]
    for option in reversed(options):
        function = option(function)
    return function


def _load(options):
    from survey_classifier.cnn.data import read_catalogue
    from survey_classifier.errors import SurveyClassifierError
    from survey_classifier.preprocess import PreprocessConfig

    try:
        config = PreprocessConfig(
            size=options["size"], crop=options["crop"] or None, clip_sigma=options["clip_sigma"]
        )
        def read(**selection):
            return read_catalogue(
                options["catalogue"],
                file_column=options["file_column"],
                label_column=options["label_column"],
                image_dir=options["image_dir"],
                **selection,
            )

        dataset = read(
            classes=options["classes"].split(",") if options["classes"] else None,
            where=_parse_where(options["where"]),
            split_column=options["split_column"],
            min_per_class=options["min_per_class"],
        )
        extra = None
        if options.get("extra_train_where"):
            extra = read(classes=dataset.classes, where=_parse_where(options["extra_train_where"]),
                         min_per_class=0)
    except (SurveyClassifierError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    return dataset, config, extra


def _training_config(options, **overrides):
    from survey_classifier.cnn.train import TrainingConfig

    values = dict(
        head=_parse_head(options["head"]),
        dropout=options["dropout"],
        head_epochs=options["head_epochs"],
        head_learning_rate=options["head_lr"],
        fine_tune_epochs=options["fine_tune_epochs"],
        fine_tune_learning_rate=options["fine_tune_lr"],
        batch_size=options["batch_size"],
        invariance=options["invariance"],
        calibrate=options["calibrate"],
        uncertain_below=options["uncertain_below"],
        norm_statistics=options["norm_statistics"],
        class_weight=options["class_weight"],
        augment=options["augment"],
        test_fraction=options["test_fraction"],
        valid_fraction=options["valid_fraction"],
        split_seed=options["split_seed"],
    )
    values.update(overrides)
    return TrainingConfig(**values)


@click.command("cnn")
@_catalogue_options
@click.option("--backbone", default="compact", show_default=True,
              help="'compact', 'c8' (rotation-equivariant, turns by 45 degrees; 'c8:WIDTH'; 'c8-blur' blurs "
                   "before pooling), 'd8' (turns by 45 degrees and mirror flips, steerable filters, blur "
                   "before pooling; 'd8:WIDTH'; 'd8-sharp' without the blur), a "
                   "keras.applications name (e.g. MobileNetV2), a saved .keras base network, "
                   "or encoder:DIR (written by 'train encoder').")
@click.option("--weights", default="none", show_default=True,
              help="'imagenet', a local weights file, or 'none'.")
@click.option("--freeze", default="all", show_default=True,
              help="Base layers kept frozen while the head trains: 'all' or a number (0 trains all).")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--members", default=1, show_default=True, type=click.IntRange(min=1),
              help="Train this many networks (seeds SEED, SEED+1, ...) and ship their average.")
@click.option("--output", "output", required=True, type=click.Path(file_okay=False),
              help="Directory for model.keras, model.onnx, model.json, metrics and curves.")
@click.option("--name", default=None, help="Model name (default: the output directory name).")
@click.option("--model-version", default="1", show_default=True)
@click.option("--export/--no-export", default=True, show_default=True, help="Write the verified ONNX model.")
@click.option("--cross-validate", "folds", type=click.IntRange(min=2), default=None, metavar="K",
              help="Instead of training a model, cross-validate this recipe in K folds over the training "
                   "and validation parts (the test part is never used) and write crossval.json.")
@click.option("--score-test/--no-score-test", default=True, show_default=True,
              help="Evaluate the test part at the end. --no-score-test leaves it unscored (it is never "
                   "trained on either way).")
@click.option("--temperature-from", "temperature_from", multiple=True, metavar="CROSSVAL_JSON",
              help="Fit the temperature on the out-of-fold predictions of this recipe's cross-validation "
                   "(a crossval.json; repeatable, one per seed) instead of on the validation part.")
def train_cnn(**options):
    """Train a CNN classifier by transfer learning from a labelled catalogue.

    Writes model.keras, model.onnx (verified against Keras), model.json
    (the registry record), metrics.json, history.json, curves.png and
    split.csv into --output. The shipped FR I / FR II model (docs/cnn.md):

    \b
      survey-classifier train cnn --catalogue $DATA/mirabest/labels.csv \\
        --label-column fr_class --where confidence=confident \\
        --where fr_class=FRI,FRII --classes FRI,FRII \\
        --backbone first4-base/model.keras --freeze all --head-epochs 15 \\
        --fine-tune-epochs 120 --fine-tune-lr 3e-4 --output fr-cnn
    """
    from survey_classifier.cnn.export import export_onnx, write_model_record
    from survey_classifier.cnn.train import collapse_warning, save_training
    from survey_classifier.cnn.train import train_cnn as run_training

    dataset, preprocess_config, extra = _load(options)
    weights = None if options["weights"] in ("none", "", None) else options["weights"]
    config = _training_config(
        options, backbone=options["backbone"], weights=weights,
        freeze=_parse_freeze(options["freeze"]), seed=options["seed"], members=options["members"],
    )
    output = Path(options["output"])
    name = options["name"] or output.resolve().name
    command = _command_line()
    if options["folds"]:
        _cross_validate(dataset, preprocess_config, config, extra, options, output, command)
        return
    oof = None
    if options["temperature_from"]:
        oof = _out_of_fold([[path] for path in options["temperature_from"]])
        config = _training_config(
            options, backbone=options["backbone"], weights=weights, calibrate=False,
            freeze=_parse_freeze(options["freeze"]), seed=options["seed"], members=options["members"],
        )
    result = run_training(dataset, preprocess_config, config, progress=click.echo,
                          cache_dir=options["cache_dir"], extra=extra, score_test=options["score_test"])
    if oof is not None:
        result = _calibrate_out_of_fold(result, oof, options["uncertain_below"], options["temperature_from"])
    files = save_training(result, output, name=name)
    click.echo(f"wrote {', '.join(str(p) for p in files.values())}")
    if (warning := collapse_warning(result.metrics["collapse"])) is not None:
        click.secho(f"{warning} (recorded under 'collapse' in metrics.json)", err=True, fg="red")
    if options["export"]:
        check = result.images.get("test", [])
        check = check if len(check) else result.images["valid"]
        if not len(check):
            check = result.images["train"]
        export_check = export_onnx(
            result.model, output / "model.onnx", classes=result.classes,
            preprocess_config=preprocess_config, name=name,
            version=options["model_version"], check_images=check[:256],
            calibration={"uncertain_below": config.uncertain_below,
                         **(result.metrics.get("calibration") or {})},
        )
        record = write_model_record(
            output / "model.onnx", name=name, version=options["model_version"],
            classes=result.classes, preprocess_config=preprocess_config,
            metrics={k: result.metrics[k] for k in ("train", "valid", "test", "best_epoch", "members",
                                                    "calibration", "collapse")
                     if k in result.metrics},
            training={**config.to_dict(), "catalogue": dataset.catalogue,
                      "selection": dataset.selection, "seconds": round(result.seconds, 1),
                      **({"extra_train_selection": extra.selection,
                          "extra_training_rows": result.metrics["extra_training_rows"]}
                         if extra is not None else {})},
            export_check=export_check, command=command,
        )
        click.echo(
            f"wrote {output / 'model.onnx'} and {record} (ONNX vs Keras max |dp| "
            f"{export_check['max_abs_diff_probabilities']:.2g} on {export_check['n_checked']} images)"
        )


def _out_of_fold(runs):
    from survey_classifier.cnn.ensemble import out_of_fold
    from survey_classifier.errors import SurveyClassifierError

    try:
        return out_of_fold(runs)
    except SurveyClassifierError as exc:
        raise click.ClickException(str(exc)) from exc


def _calibrate_out_of_fold(result, oof, uncertain_below, sources):
    """The trained (single) network with the temperature of its recipe's out-of-fold predictions."""
    import dataclasses

    from survey_classifier.cnn.calibration import calibrated_classifier
    from survey_classifier.cnn.ensemble import out_of_fold_calibration

    if result.config.members != 1:
        raise click.UsageError("--temperature-from takes one network (--members 1); use train cnn-ensemble")
    record, curves = out_of_fold_calibration(oof, uncertain_below=uncertain_below)
    record["crossval"] = [str(path) for path in sources]
    click.echo(f"temperature {record['temperature']:.3f} from {record['fitted_on']}: ECE "
               f"{record['out_of_fold']['ece_before']:.3f} -> {record['out_of_fold']['ece_after']:.3f}, NLL "
               f"{record['out_of_fold']['nll_before']:.4f} -> {record['out_of_fold']['nll_after']:.4f}")
    return dataclasses.replace(
        result, model=calibrated_classifier(result.model, record["temperature"]),
        metrics={**result.metrics, "calibration": record}, reliability=curves,
    )


def _cross_validate(dataset, preprocess_config, config, extra, options, output, command):
    from survey_classifier.cnn.crossval import cross_validate

    output.mkdir(parents=True, exist_ok=True)
    about = {"training": config.to_dict(), "preprocess": preprocess_config.to_dict(), "command": command}

    def write(summary):
        (output / "crossval.json").write_text(json.dumps({**summary, **about}, indent=2) + "\n")

    summary = cross_validate(dataset, preprocess_config, config, folds=options["folds"], extra=extra,
                             progress=click.echo, cache_dir=options["cache_dir"], on_fold=write)
    write(summary)
    click.echo(f"cross-validated accuracy {summary['mean']:.4f} +- {summary['sem']:.4f} "
               f"({summary['correct']}/{summary['n']}); wrote {output / 'crossval.json'}")


@click.command("cnn-table")
@_catalogue_options
@click.option("--base", "base", required=True, type=click.Path(exists=True),
              help="The saved base network (.keras) to transfer.")
@click.option("--seeds", default="0,1,2", show_default=True, help="Comma-separated training seeds.")
@click.option("--output", "output", default=None, type=click.Path(dir_okay=False),
              help="Write the table and every run as JSON here.")
def cnn_table(**options):
    """Transfer-learning table: from scratch, frozen base + head, fine-tuned.

    Every setting is trained on the same split with each seed; the test
    accuracy is printed as mean ± std (Markdown).
    """
    from survey_classifier.cnn.table import format_table, transfer_table

    dataset, preprocess_config, extra = _load(options)
    if extra is not None:
        raise click.UsageError("--extra-train-where is not supported by cnn-table")
    config = _training_config(options)
    seeds = [int(s) for s in options["seeds"].split(",") if s.strip()]
    table = transfer_table(
        dataset, preprocess_config, options["base"], config=config, seeds=seeds,
        progress=click.echo, cache_dir=options["cache_dir"],
    )
    click.echo(format_table(table))
    if options["output"]:
        Path(options["output"]).write_text(json.dumps(table, indent=2) + "\n")


@click.command("encoder")
@click.option("--images", "sources", multiple=True, required=True, type=click.Path(exists=True),
              help="A directory (searched recursively) or file of FITS/PNG images; repeatable.")
@click.option("--size", default=64, show_default=True, type=int, help="Model input side (pixels).")
@click.option("--crop", default=100, show_default=True, type=int,
              help="Central crop (pixels) before resizing; 0 keeps the whole image.")
@click.option("--clip-sigma", default=3.0, show_default=True, type=float)
@click.option("--backbone", default="compact", show_default=True, help="'compact' or 'compact:WIDTH'.")
@click.option("--projection", default="128,64", show_default=True, help="Widths of the projection head.")
@click.option("--epochs", default=100, show_default=True, type=click.IntRange(min=1))
@click.option("--batch-size", default=128, show_default=True, type=click.IntRange(min=2))
@click.option("--lr", "learning_rate", default=1e-3, show_default=True, type=float)
@click.option("--temperature", default=0.2, show_default=True, type=float)
@click.option("--max-angle", "max_angle_deg", default=180.0, show_default=True, type=float,
              help="Rotations uniform in +- this many degrees.")
@click.option("--max-scale", default=0.1, show_default=True, type=float)
@click.option("--max-shift", default=0.05, show_default=True, type=float, help="Fraction of the side.")
@click.option("--noise/--no-noise", default=True, show_default=True,
              help="Noise at each image's own sigma-clipped level, then clip and scale again.")
@click.option("--max-minutes", default=None, type=float, help="Stop after the epoch that passes this time.")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--cache-dir", type=click.Path(file_okay=False), default=None,
              help="Keep preprocessed images here between runs.")
@click.option("--output", required=True, type=click.Path(file_okay=False),
              help="Directory for encoder.keras, encoder.json and loss.png.")
def train_encoder(**options):
    """Pre-train an encoder on unlabelled images (SimCLR), a transfer base for train cnn.

    Use it with ``train cnn --backbone encoder:DIR`` and the same --size,
    --crop and --clip-sigma (docs/cnn.md):

    \b
      survey-classifier train encoder --images $DATA/mirabest/fits \\
        --images $DATA/first4/png --max-minutes 40 --output encoder
    """
    from survey_classifier.cnn import pretrain
    from survey_classifier.errors import SurveyClassifierError
    from survey_classifier.preprocess import PreprocessConfig

    try:
        preprocess_config = PreprocessConfig(
            size=options["size"], crop=options["crop"] or None, clip_sigma=options["clip_sigma"]
        )
        config = pretrain.PretrainConfig(
            backbone=options["backbone"], projection=_parse_head(options["projection"]),
            epochs=options["epochs"], batch_size=options["batch_size"],
            learning_rate=options["learning_rate"], temperature=options["temperature"],
            max_angle_deg=options["max_angle_deg"], max_scale=options["max_scale"],
            max_shift=options["max_shift"], noise=options["noise"], clip_sigma=options["clip_sigma"],
            max_minutes=options["max_minutes"], seed=options["seed"],
        )
        paths = pretrain.find_images(options["sources"])
        images, sigmas, borrowed = pretrain.load_unlabelled(paths, preprocess_config,
                                                            cache_dir=options["cache_dir"])
        click.echo(f"{len(paths)} images; {borrowed} without a noise level of their own get the "
                   f"median, {float(sigmas.mean()):.4f} mean sigma (of the peak)")
        encoder, record = pretrain.pretrain_encoder(images, sigmas, config, progress=click.echo)
        files = pretrain.save_encoder(
            encoder, options["output"], preprocess_config=preprocess_config, config=config,
            record=record, paths=paths, sigmas=sigmas, command=_command_line("encoder"),
        )
    except (SurveyClassifierError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"{record['epochs_done']} epochs in {record['seconds'] / 60:.1f} min, loss "
               f"{record['loss'][0]:.4f} -> {record['loss'][-1]:.4f}; wrote "
               f"{', '.join(str(p) for p in files.values())}")


@click.command("cnn-ensemble")
@click.option("--member", "members", multiple=True, required=True, type=click.Path(exists=True, file_okay=False),
              help="Output directory of a 'train cnn' run (model.keras, metrics.json, split.csv), or a shipped "
                   "model's folder (its model.json for metrics.json); repeatable. All members must have been "
                   "trained on the same split.")
@click.option("--catalogue", "catalogue", required=True, type=click.Path(exists=True, dir_okay=False),
              help="The labelled table the members were trained from.")
@click.option("--file-column", default="file", show_default=True)
@click.option("--label-column", default="label", show_default=True)
@click.option("--image-dir", type=click.Path(exists=True, file_okay=False), default=None)
@click.option("--classes", default=None, help="Comma-separated task classes, in output order.")
@click.option("--where", multiple=True, metavar="COLUMN=VALUE", help="Row selection, as in train cnn.")
@click.option("--temperature-from", "temperature_from", multiple=True, metavar="A.json,B.json",
              help="One crossval.json per member, comma-separated in member order, for one seed (repeatable): "
                   "the temperature is fitted on the averaged out-of-fold predictions instead of on the "
                   "members' validation part.")
@click.option("--uncertain-below", default=0.6, show_default=True, type=click.FloatRange(0.0, 1.0))
@click.option("--score-test/--no-score-test", default=True, show_default=True)
@click.option("--cache-dir", type=click.Path(file_okay=False), default=None)
@click.option("--output", "output", required=True, type=click.Path(file_okay=False))
@click.option("--name", default=None, help="Model name (default: the output directory name).")
@click.option("--model-version", default="1", show_default=True)
def cnn_ensemble(**options):
    """One model averaging the class probabilities of trained classifiers (of any backbones).

    Each member's logits are divided by one temperature (fitted on the
    members' common validation part, or on their cross-validation's
    out-of-fold predictions with --temperature-from), their probabilities
    averaged and their embeddings joined; written and verified like
    ``train cnn``'s output (model.keras, model.onnx, model.json,
    metrics.json, reliability.png, calibration.md). Example (docs/cnn.md):

    \b
      survey-classifier train cnn-ensemble --member cv-A --member cv-B \\
        --catalogue $DATA/mirabest/labels.csv --label-column fr_class \\
        --where confidence=confident --where fr_class=FRI,FRII --classes FRI,FRII --output E
    """
    import numpy as np

    from survey_classifier.cnn.backbones import load_keras_model
    from survey_classifier.cnn.calibration import classifier_logits, fit_temperature
    from survey_classifier.cnn.data import load_images, read_catalogue
    from survey_classifier.cnn.ensemble import calibrated_ensemble, out_of_fold_calibration
    from survey_classifier.cnn.export import export_onnx, write_model_record
    from survey_classifier.cnn.train import evaluate, save_calibration
    from survey_classifier.errors import SurveyClassifierError
    from survey_classifier.preprocess import PreprocessConfig

    output = Path(options["output"])
    name = options["name"] or output.resolve().name
    members = [Path(m) for m in options["members"]]
    try:
        records = [_member_record(m) for m in members]
        splits = [_read_split(m / "split.csv") for m in members]
    except (OSError, ValueError) as exc:
        raise click.ClickException(f"cannot read a member's metrics.json or split.csv: {exc}") from exc
    for member, record, split in zip(members[1:], records[1:], splits[1:], strict=True):
        # compared as configurations: an older record leaves out the options added since at their defaults
        if PreprocessConfig.from_dict(record["preprocess"]) != PreprocessConfig.from_dict(records[0]["preprocess"]):
            raise click.ClickException(f"{member} was trained with preprocessing {record['preprocess']}, "
                                       f"{members[0]} with {records[0]['preprocess']}")
        if split != splits[0]:
            raise click.ClickException(f"{member / 'split.csv'} differs from {members[0] / 'split.csv'}: "
                                       "the members must share one split")
    try:
        preprocess_config = PreprocessConfig.from_dict(records[0]["preprocess"])
        dataset = read_catalogue(
            options["catalogue"], file_column=options["file_column"], label_column=options["label_column"],
            image_dir=options["image_dir"], classes=options["classes"].split(",") if options["classes"] else None,
            where=_parse_where(options["where"]),
        )
        images = load_images(dataset.paths, preprocess_config, cache_dir=options["cache_dir"])
    except (SurveyClassifierError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    names = [path.name for path in dataset.paths]
    missing = sorted(set(splits[0]) - set(names))
    if missing:
        raise click.ClickException(f"{len(missing)} files of {members[0] / 'split.csv'} are not selected from "
                                   f"{options['catalogue']}, e.g. {missing[0]}")
    part_of = np.array([splits[0].get(n, "") for n in names])
    if not options["score_test"]:
        part_of[part_of == "test"] = ""
    parts = {part: np.flatnonzero(part_of == part) for part in ("train", "valid", "test")}
    models = [load_keras_model(m / "model.keras") for m in members]
    targets = dataset.targets
    if options["temperature_from"]:
        oof = _out_of_fold([value.split(",") for value in options["temperature_from"]])
        if oof["logits"].shape[0] != len(models):
            raise click.UsageError(f"--temperature-from names {oof['logits'].shape[0]} crossval.json per seed "
                                   f"for {len(models)} members")
        calibration, curves = out_of_fold_calibration(oof, uncertain_below=options["uncertain_below"])
        calibration["crossval"] = list(options["temperature_from"])
    elif len(parts["valid"]):
        valid = parts["valid"]
        logits = np.stack([classifier_logits(model, images[valid]) for model in models])
        temperature = fit_temperature(logits, targets[valid])
        oof = {"logits": logits, "targets": targets[valid], "run": np.zeros(len(valid), int),
               "fold": np.zeros(len(valid), int)}
        calibration, curves = out_of_fold_calibration(oof, uncertain_below=options["uncertain_below"])
        assert calibration["temperature"] == temperature
        calibration["fitted_on"] = f"the members' validation part ({len(valid)} sources)"
        calibration["valid"] = calibration.pop("out_of_fold")
        curves["part"] = "valid"
    else:
        raise click.UsageError("no validation part to fit the temperature on: give --temperature-from")
    ensemble = calibrated_ensemble(models, calibration["temperature"], name="ensemble")
    classes = list(dataset.classes)
    metrics = {"classes": classes, **{part: evaluate(ensemble, images[index], targets[index], classes)
                                     for part, index in parts.items()}}
    if not options["score_test"]:
        metrics["test"] = {"n": 0, "scored": False}
    metrics["calibration"] = calibration
    metrics["members"] = [{"directory": str(m), "command": r.get("command") or _member_command(m),
                           "training": r.get("training"), "best_epoch": r.get("best_epoch"),
                           "valid_accuracy": r.get("valid", {}).get("accuracy")}
                          for m, r in zip(members, records, strict=True)]
    for part in ("valid", "test"):
        if metrics[part].get("n"):
            click.echo(f"{part} accuracy {metrics[part]['accuracy']:.4f} on {metrics[part]['n']} sources")
    output.mkdir(parents=True, exist_ok=True)
    ensemble.save(output / "model.keras")
    (output / "metrics.json").write_text(json.dumps({**metrics, "preprocess": preprocess_config.to_dict(),
                                                     "catalogue": dataset.catalogue,
                                                     "selection": dataset.selection}, indent=2) + "\n")
    (output / "split.csv").write_text((members[0] / "split.csv").read_text())
    save_calibration(calibration, curves, output, name)
    check = next(images[index] for index in (parts["test"], parts["valid"], parts["train"]) if len(index))
    command = _command_line("cnn-ensemble")
    try:
        export_check = export_onnx(ensemble, output / "model.onnx", classes=classes,
                                   preprocess_config=preprocess_config, name=name,
                                   version=options["model_version"], check_images=check[:256],
                                   calibration=calibration)
    except SurveyClassifierError as exc:
        raise click.ClickException(str(exc)) from exc
    record = write_model_record(
        output / "model.onnx", name=name, version=options["model_version"], classes=classes,
        preprocess_config=preprocess_config,
        metrics={k: metrics[k] for k in ("train", "valid", "test", "members", "calibration")},
        training={"ensemble_of": metrics["members"], "catalogue": dataset.catalogue,
                  "selection": dataset.selection},
        export_check=export_check, command=command,
    )
    click.echo(f"wrote {output / 'model.onnx'} and {record} (ONNX vs Keras max |dp| "
               f"{export_check['max_abs_diff_probabilities']:.2g} on {export_check['n_checked']} images)")


def _read_split(path: Path) -> dict[str, str]:
    """``file -> part`` from a split.csv."""
    lines = path.read_text().splitlines()
    if not lines or lines[0] != "file,label,split":
        msg = f"{path} is not a split.csv (file,label,split)"
        raise ValueError(msg)
    return {file: part for file, _, part in (line.rsplit(",", 2) for line in lines[1:] if line)}


def _member_record(member: Path) -> dict:
    """A member's ``metrics.json``; for a shipped model's folder, which has none, its ``model.json`` in that form."""
    metrics = member / "metrics.json"
    if metrics.exists() or not (member / "model.json").exists():
        return json.loads(metrics.read_text())
    record = json.loads((member / "model.json").read_text())
    return {**record["metrics"], "preprocess": record["preprocess"], "command": record.get("command", ""),
            "training": record.get("training")}


def _member_command(member: Path) -> str:
    record = member / "model.json"
    return json.loads(record.read_text()).get("command", "") if record.exists() else ""
