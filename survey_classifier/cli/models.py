"""``survey-classifier models``: register, list, show, set-default, retire and compare models."""

from __future__ import annotations

import json

import click

from survey_classifier.cli.group import CommandGroup
from survey_classifier.cli.options import db_option

__all__ = ["models"]


def _engine(db_url):
    from survey_classifier.db import make_engine, upgrade

    upgrade(db_url)
    return make_engine(db_url)


def _describe(model: dict) -> str:
    flags = [f for f, on in (("default", model["is_default"]), ("retired", model["retired"])) if on]
    return f"{model['model_ref']} (stage {model['stage']}{', ' + ', '.join(flags) if flags else ''})"


@click.group(cls=CommandGroup)
def models():
    """Register model artefacts and pick the one each stage runs."""


@models.command("register")
@db_option
@click.option("--stage", required=True, help="The stage that runs the model (cnn, som, anomaly...).")
@click.option("--name", required=True, help="Model name, e.g. fr-cnn.")
@click.option("--version", "version", required=True, help="Model version, e.g. 2.")
@click.option("--metrics", default=None, help='Evaluation figures as JSON, e.g. \'{"accuracy": 0.93}\'.')
@click.option("--card", type=click.Path(exists=True, dir_okay=False), default=None, help="Model card (Markdown).")
@click.option("--store", default=None,
              help="Keep the bytes under this fsspec URL (s3://bucket/models, file:///shared/models) "
                   "instead of in the results database.")
@click.option("--default/--no-default", "make_default", default=None, help="Make it the stage's default.")
@click.argument("artefact", type=click.Path(exists=True, dir_okay=False))
def register(db_url, stage, name, version, metrics, card, store, make_default, artefact):
    """Check that STAGE can run ARTEFACT, keep its bytes and record it with its sha256.

    The files the stage keeps beside its models (a SOM map's neurons.json) that are beside ARTEFACT are
    checked against it and kept with it, each with its own sha256.
    """
    from survey_classifier.registry import register_model

    parsed = None
    if metrics is not None:
        try:
            parsed = json.loads(metrics)
        except json.JSONDecodeError as exc:
            raise click.BadParameter(f"not JSON: {exc}", param_hint="--metrics") from exc
        if not isinstance(parsed, dict):
            raise click.BadParameter("expected a JSON object of names to values", param_hint="--metrics")
    model = register_model(
        _engine(db_url), artefact, stage=stage, name=name, version=version, metrics=parsed, card=card,
        store=store, make_default=make_default,
    )
    click.echo(
        f"registered {_describe(model)}: {model['filename']} sha256 {model['sha256']}, stored in {model['store']}"
    )
    for companion in model["companions"] or ():
        click.echo(f"  with {companion['filename']} sha256 {companion['sha256']}, stored in {companion['store']}")
    if model["same_bytes_as"]:
        click.echo(f"note: the same bytes are registered as {', '.join(model['same_bytes_as'])}")


@models.command("list")
@db_option
@click.option("--stage", default=None, help="Only models of this stage.")
@click.option("--active", is_flag=True, help="Leave out retired models.")
def list_(db_url, stage, active):
    """List registered models (the shipped ones included)."""
    from survey_classifier.registry import list_models

    table = list_models(_engine(db_url), stage=stage, include_retired=not active)
    table[["id", "stage", "model_ref", "is_default", "retired", "created_at", "metrics"]].pprint(
        max_lines=-1, max_width=-1
    )
    click.echo(f"{len(table)} models")


@models.command("show")
@db_option
@click.argument("name")
@click.argument("version", required=False)
@click.option("--json", "as_json", is_flag=True, help="The registry record as JSON (for scripts).")
def show(db_url, name, version, as_json):
    """Show one model (its newest version when VERSION is not given): record, metrics, model card."""
    from survey_classifier.registry import get_model

    model = get_model(_engine(db_url), name, version)
    if as_json:
        click.echo(json.dumps(model, indent=2, default=str, sort_keys=True))
        return
    click.echo(render_model(model))


def render_model(model: dict) -> str:
    """A registered model as text: its record, its metrics as a table and its card as the Markdown it is."""
    details = dict(model.get("details") or {})
    card = details.pop("card", None)
    lines = [_describe(model), ""]
    for label, value in (("file", model["filename"]), ("sha256", model["sha256"]), ("stored in", model["store"]),
                         ("registered", str(model.get("created_at"))[:19])):
        lines.append(f"{label:<11} {value}")
    metrics = model.get("metrics") or {}
    lines += ["", "metrics:" if metrics else "metrics: none recorded"]
    if metrics:
        width = max(len(str(k)) for k in metrics)
        lines.append(f"  {'metric':<{width}}  value")
        lines.append(f"  {'-' * width}  {'-' * 5}")
        lines += [f"  {name:<{width}}  {_value(value)}" for name, value in sorted(metrics.items())]
    companions = model.get("companions") or ()
    if companions:
        lines += ["", "kept with it:"]
        lines += [f"  {c['filename']}  sha256 {c['sha256']}, stored in {c['store']}; {_value(c.get('details'))}"
                  for c in companions]
    if details:
        lines += ["", "details:"]
        lines += [f"  {key}: {_value(value)}" for key, value in sorted(details.items())]
    lines += ["", "model card:" if card else "model card: none (models register --card CARD.md adds one)"]
    if card:
        lines += ["", card.rstrip()]
    return "\n".join(lines)


def _value(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True, default=str)
    return str(value)


@models.command("set-default")
@db_option
@click.argument("name")
@click.argument("version")
def set_default_(db_url, name, version):
    """Make NAME VERSION the default model of its stage."""
    from survey_classifier.registry import set_default

    model = set_default(_engine(db_url), name, version)
    click.echo(f"default of stage {model['stage']}: {model['model_ref']}")


@models.command("retire")
@db_option
@click.argument("name")
@click.argument("version")
def retire(db_url, name, version):
    """Retire NAME VERSION: kept with its results, no longer run."""
    from survey_classifier.registry import retire_model

    model = retire_model(_engine(db_url), name, version)
    click.echo(f"retired {_describe(model)}")


@models.command("compare")
@db_option
@click.argument("stage")
@click.argument("a")
@click.argument("b")
@click.option("--stage-b", default=None, help="Compare with the results of another stage.")
def compare(db_url, stage, a, b, stage_b):
    """Agreement matrix of STAGE's labels between variants A and B (VERSION or VERSION@MODEL)."""
    from survey_classifier.compare import agreement_matrix

    matrix = agreement_matrix(_engine(db_url), stage, a, b, stage_b=stage_b)
    meta = matrix.meta
    click.echo(f"rows: {meta['stage_a']} {a}; columns: {meta['stage_b']} {b}")
    matrix.pprint(max_lines=-1, max_width=-1)
    click.echo(
        f"{meta['n_common']} cutouts classified by both (only A: {meta['n_only_a']}, only B: {meta['n_only_b']}); "
        f"agreement {meta['agreement']:.3f}, Cohen's kappa {meta['kappa']:.3f}"
    )
