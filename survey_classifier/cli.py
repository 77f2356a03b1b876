"""The ``survey-classifier`` command line."""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path

import click

from survey_classifier.errors import SurveyClassifierError

__all__ = ["main"]

log = logging.getLogger("survey_classifier")


class LazyGroup(click.Group):
    """A group whose listed subcommands are imported only when used.

    Keeps ``survey-classifier --help`` and light commands fast: training
    commands import TensorFlow or SciPy, the service imports FastAPI.
    """

    def __init__(self, *args, lazy: dict[str, str] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.lazy = dict(lazy or {})

    def list_commands(self, ctx):
        return sorted(set(super().list_commands(ctx)) | set(self.lazy))

    def get_command(self, ctx, name):
        if name in self.lazy:
            import importlib

            module, _, attribute = self.lazy[name].partition(":")
            return getattr(importlib.import_module(module), attribute)
        return super().get_command(ctx, name)


def _fail(message: str) -> None:
    raise click.ClickException(message)


def _parse_params(values: tuple[str, ...]) -> dict[str, dict]:
    """``STAGE.KEY=VALUE`` options (VALUE as JSON, else a string) by stage."""
    params: dict[str, dict] = {}
    for item in values:
        key, sep, raw = item.partition("=")
        stage, dot, name = key.partition(".")
        if not sep or not dot or not stage or not name:
            _fail(f"--param expects STAGE.NAME=VALUE, got {item!r}")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        params.setdefault(stage, {})[name] = value
    return params


def _build_stages(names: str | None, params: dict[str, dict], engine=None):
    """The stages to run, with registry defaults for models not named in ``params``."""
    from survey_classifier.stages.registry import available_stages, load_stage

    installed = available_stages()
    if names:
        chosen = [n.strip() for n in names.split(",") if n.strip()]
    else:
        defaults = [cls for cls in installed.values() if cls.enabled_by_default]
        chosen = [cls.name for cls in sorted(defaults, key=lambda c: (len(c.requires) + len(c.uses), c.name))]
    unknown = sorted(set(params) - set(chosen))
    if unknown:
        _fail(f"--param given for stages not being run: {unknown}")
    if engine is not None:
        params = _with_registry_defaults(engine, {n: installed[n] for n in chosen if n in installed}, params)
    from survey_classifier.stages.registry import order_stages

    return order_stages([load_stage(name, **params.get(name, {})) for name in chosen])


def _prepare_run(db_url, inputs, stages, params, columns):
    """Upgrade the database, build the stages and expand INPUTS, as both
    ``classify`` and ``submit`` start: ``(engine, stage_list, sources, config)``."""
    from survey_classifier.db import make_engine, upgrade
    from survey_classifier.io.inputs import expand_inputs

    upgrade(db_url)
    engine = make_engine(db_url)
    parsed = _parse_params(params)
    stage_list = _build_stages(stages, parsed, engine)
    sources = expand_inputs(list(inputs), **columns)
    if not sources:
        _fail(f"no cutouts found in {list(inputs)}")
    return engine, stage_list, sources, {"inputs": list(inputs), "params": parsed}


def _with_registry_defaults(engine, classes, params):
    """Fill each stage's model parameter with the registry's default, if any."""
    from sqlalchemy import select

    from survey_classifier.db.models import ModelRow
    from survey_classifier.registry import resolve_model

    with engine.connect() as connection:
        stages = set(
            connection.execute(
                select(ModelRow.stage).where(ModelRow.is_default.is_(True), ModelRow.retired.is_(False))
            ).scalars()
        )
    params = {name: dict(values) for name, values in params.items()}
    for name, cls in classes.items():
        if cls.model_param and name in stages and cls.model_param not in params.get(name, {}):
            path, row = resolve_model(engine, name)
            params.setdefault(name, {})[cls.model_param] = str(path)
            log.info("stage %s: registry default %s (%s)", name, row["model_ref"], path)
    return params


@click.group(
    cls=LazyGroup,
    lazy={
        "models": "survey_classifier.registry_cli:models",
        "serve": "survey_classifier.api.cli:serve",
        "submit": "survey_classifier.distributed_cli:submit",
        "status": "survey_classifier.distributed_cli:status",
        "retry-failed": "survey_classifier.distributed_cli:retry_failed_command",
        "worker": "survey_classifier.distributed_cli:worker",
    },
    context_settings={"help_option_names": ["-h", "--help"]},
)
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.version_option(package_name="survey-classifier")
def main(verbose: int) -> None:
    """Classify radio survey cutouts and keep the results in a database."""
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(verbose, 2)]
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    logging.captureWarnings(True)


db_option = click.option(
    "--db",
    "db_url",
    default=None,
    help="Database URL (default: $SURVEY_CLASSIFIER_DB or sqlite:///survey-classifier.db).",
)


def catalogue_options(function):
    for option in reversed(
        [
            click.option("--file-column", default=None, help="Catalogue column naming the cutout file."),
            click.option("--id-column", default=None, help="Catalogue column with the source id."),
            click.option("--ra-column", default=None, help="Catalogue column with RA in degrees."),
            click.option("--dec-column", default=None, help="Catalogue column with Dec in degrees."),
            click.option("--base-dir", default=None, type=click.Path(file_okay=False),
                         help="Folder that relative file names in a catalogue refer to (default: the catalogue's)."),
        ]
    ):
        function = option(function)
    return function


@main.command()
@click.argument("inputs", nargs=-1, required=True)
@db_option
@click.option("--stages", default=None, help="Comma-separated stage names (default: the default stages).")
@click.option("--param", "params", multiple=True, help="Stage parameter STAGE.NAME=VALUE (VALUE as JSON).")
@click.option("--batch-size", default=64, show_default=True, type=click.IntRange(min=1))
@click.option("--max-bytes", default=None, type=click.IntRange(min=1), help="Refuse files larger than this.")
@click.option("--max-pixels", default=None, type=click.IntRange(min=1), help="Refuse images with more pixels.")
@catalogue_options
@click.option("--quiet", is_flag=True, help="No progress bar.")
def classify(inputs, db_url, stages, params, batch_size, max_bytes, max_pixels, quiet, **columns):
    """Run the stages on INPUTS (files, directories, globs or catalogue tables).

    Runs in this process and stores cutouts, results and per-cutout errors in
    the database. Exits non-zero only when no cutout could be processed.
    """
    from tqdm import tqdm

    from survey_classifier.io.fits import ReadLimits
    from survey_classifier.pipeline import run_pipeline

    try:
        engine, stage_list, sources, config = _prepare_run(db_url, inputs, stages, params, columns)
        limits = ReadLimits(**{k: v for k, v in {"max_bytes": max_bytes, "max_pixels": max_pixels}.items() if v})
        with tqdm(total=len(sources), unit="cutout", disable=quiet, file=sys.stderr) as bar:
            summary = run_pipeline(
                sources, stage_list, engine, batch_size=batch_size, limits=limits, config=config, progress=bar.update
            )
    except SurveyClassifierError as exc:
        _fail(str(exc))
    _print_summary(summary, stage_list)
    if summary.n_cutouts and summary.n_processed == 0 and not _any_stage_result(summary):
        sys.exit(1)


def _any_stage_result(summary) -> bool:
    return summary.n_failed < summary.n_cutouts or any(stage != "read" for _, stage, _ in summary.failures)


def _print_summary(summary, stages) -> None:
    click.echo(
        f"run {summary.run_id}: {summary.n_cutouts} cutouts, {summary.n_processed} processed, "
        f"{summary.n_failed} failed, in {summary.elapsed_s:.1f} s "
        f"({summary.n_cutouts / max(summary.elapsed_s, 1e-9):.0f} cutouts/s); "
        f"stages: {', '.join(f'{s.name} {s.version}' for s in stages)}"
    )
    if summary.timings:
        parts = ", ".join(f"{k} {v:.2f} s" for k, v in summary.timings.items())
        click.echo(f"time: {parts}")
    if summary.failures:
        click.echo("failures:")
        for (stage, reason), count in summary.reasons.most_common(20):
            examples = [Path(p).name for p, s, r in summary.failures if s == stage and r == reason][:3]
            click.echo(f"  {count} x [{stage}] {reason} (e.g. {', '.join(examples)})")


@main.group()
def plugins():
    """Inspect the installed stage plugins."""


@plugins.command("list")
def plugins_list():
    """List installed stages with their version, result kind and origin."""
    from importlib.metadata import entry_points

    from survey_classifier.stages.registry import ENTRY_POINT_GROUP, available_stages

    try:
        stages = available_stages()
    except SurveyClassifierError as exc:
        _fail(str(exc))
    origins = {ep.name: (ep.dist.name if ep.dist else "?") for ep in entry_points(group=ENTRY_POINT_GROUP)}
    click.echo(f"{'stage':<12} {'version':<8} {'kind':<15} {'default':<8} {'requires':<28} distribution")
    for name, cls in sorted(stages.items()):
        requires = ",".join((*cls.requires, *cls.uses))
        default = "yes" if cls.enabled_by_default else "no"
        click.echo(
            f"{name:<12} {cls.version:<8} {cls.result_kind:<15} {default:<8} {requires:<28} {origins.get(name, '?')}"
        )


@main.group()
def db():
    """Create, upgrade or downgrade the results database (through Alembic)."""


@db.command("upgrade")
@db_option
@click.option("--revision", default="head", show_default=True)
def db_upgrade(db_url, revision):
    """Create the schema or upgrade it to REVISION."""
    from survey_classifier.db import upgrade
    from survey_classifier.db.engine import resolve_db_url

    upgrade(db_url, revision)
    click.echo(f"database {_safe_url(resolve_db_url(db_url))} at revision {revision}")


@db.command("downgrade")
@db_option
@click.option("--revision", default="base", show_default=True)
def db_downgrade(db_url, revision):
    """Downgrade the schema to REVISION (base drops every table)."""
    from survey_classifier.db import downgrade

    downgrade(db_url, revision)
    click.echo(f"downgraded to {revision}")


def _safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


@main.command()
@db_option
@click.option("--stage", default=None, help="Only cutouts with results of this stage (filters apply to it).")
@click.option("--label", default=None, help="Only this class label.")
@click.option("--min-probability", type=click.FloatRange(0, 1), default=None)
@click.option("--run", "run_id", type=int, default=None, help="Only cutouts written by this run.")
@click.option("--ra", type=float, default=None, help="Cone centre RA (deg).")
@click.option("--dec", type=float, default=None, help="Cone centre Dec (deg).")
@click.option("--radius", type=float, default=None, help="Cone radius (deg).")
@click.option("--version", "versions", multiple=True, help="STAGE=VERSION[@MODEL] to show instead of the newest.")
@click.option("--limit", type=click.IntRange(min=1), default=None)
@click.option("--errors", "show_errors", is_flag=True, help="List the errors stored against cutouts instead.")
@click.option("--top-anomalies", type=click.IntRange(min=1), default=None,
              help="Only the N most anomalous cutouts, most anomalous first.")
@click.option("--gallery", type=click.Path(file_okay=False), default=None,
              help="With --top-anomalies: write gallery.png and index.html to this folder.")
@click.option("-o", "--output", default=None, help="Write to a file instead of printing.")
@click.option("--format", "fmt", type=click.Choice(["csv", "ecsv", "votable", "fits"]), default=None)
def query(db_url, stage, label, min_probability, run_id, ra, dec, radius, versions, limit, show_errors,
          top_anomalies, gallery, output, fmt):
    """Print or export results, one row per cutout."""
    from survey_classifier.db import make_engine
    from survey_classifier.query import query_errors, query_results, write_table

    engine = make_engine(db_url)
    if gallery and not top_anomalies:
        _fail("--gallery needs --top-anomalies N")
    try:
        if show_errors:
            table = query_errors(engine, run_id=run_id)
        elif top_anomalies:
            from survey_classifier.anomaly.report import make_gallery
            from survey_classifier.query import top_anomalies as top

            table = top(engine, top_anomalies, run_id=run_id)
            if gallery:
                png, page = make_gallery(table, gallery)
                click.echo(f"gallery: {png} and {page}")
        else:
            picks = dict(v.split("=", 1) for v in versions if "=" in v)
            table = query_results(
                engine,
                stage=stage,
                label=label,
                min_probability=min_probability,
                run_id=run_id,
                ra=ra,
                dec=dec,
                radius=radius,
                versions=picks,
                limit=limit,
            )
        if output:
            written = write_table(table, output, fmt)
            click.echo(f"wrote {len(table)} rows to {output} ({written})")
        elif fmt:
            write_table(table, "/dev/stdout", fmt) if fmt in ("csv", "ecsv") else _fail("--format votable/fits needs -o FILE")
        else:
            table.pprint(max_lines=-1, max_width=-1)
            click.echo(f"{len(table)} rows")
    except SurveyClassifierError as exc:
        _fail(str(exc))
    except Exception as exc:  # database not created yet, typically
        if "no such table" in str(exc) or "does not exist" in str(exc):
            _fail("the database has no survey-classifier tables; run `survey-classifier db upgrade` first")
        raise


@main.command()
@click.option("--directory", default="survey-classifier-demo", show_default=True, type=click.Path(file_okay=False))
@click.option("-n", "n_cutouts", default=24, show_default=True, type=click.IntRange(min=1))
@click.option("--seed", default=0, show_default=True)
@click.option("--stages", default=None, help="Comma-separated stage names (default: the default stages).")
def demo(directory, n_cutouts, seed, stages):
    """Make synthetic FIRST-like cutouts and run the whole pipeline on them.

    Needs no data and no server: the cutouts, a SQLite database and the
    query output all go to DIRECTORY.
    """
    from survey_classifier.db import make_engine, upgrade
    from survey_classifier.io.inputs import expand_inputs
    from survey_classifier.pipeline import run_pipeline
    from survey_classifier.query import query_results
    from survey_classifier.synthetic import make_synthetic_cutouts

    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    truth = make_synthetic_cutouts(folder / "cutouts", n=n_cutouts, seed=seed)
    click.echo(f"made {len(truth)} synthetic cutouts in {folder / 'cutouts'} ({time.perf_counter() - start:.1f} s)")
    url = f"sqlite:///{(folder / 'demo.db').resolve()}"
    upgrade(url)
    engine = make_engine(url)
    stage_list = _build_stages(stages, {})
    sources = expand_inputs([str(folder / "cutouts" / "catalogue.csv")])
    summary = run_pipeline(sources, stage_list, engine, config={"demo": True, "seed": seed})
    _print_summary(summary, stage_list)
    table = query_results(engine, run_id=summary.run_id)
    wanted = ["cutout_id", "ra_deg", "dec_deg", "kind", "flux_jy", "measure_peak_flux_jy", "measure_integrated_flux_jy",
              "measure_n_islands", "measure_las_arcsec", "cnn_label", "cnn_probability", "som_node_x", "som_node_y",
              "anomaly_score", "anomaly_rank"]
    shown = table[[n for n in wanted if n in table.colnames]]
    for name in shown.colnames:
        if shown[name].dtype.kind == "f":
            shown[name].format = ".4g"
    click.echo("the synthetic truth (kind, flux_jy) beside what the stages found:")
    shown.pprint(max_lines=-1, max_width=-1)
    out = folder / "results.ecsv"
    table.write(out, format="ascii.ecsv", overwrite=True)
    click.echo(f"results: {out}; database: {url}")
    click.echo(f"try: survey-classifier query --db {url} --ra {table['ra_deg'][0]:.4f} --dec {table['dec_deg'][0]:.4f} --radius 0.5")


@main.group(
    cls=LazyGroup,
    lazy={
        "cnn": "survey_classifier.cnn.cli:train_cnn",
        "cnn-table": "survey_classifier.cnn.cli:cnn_table",
        "som": "survey_classifier.som.cli:train_som",
        "anomaly": "survey_classifier.anomaly.cli:train_anomaly",
    },
)
def train():
    """Train models (CNN, SOM, anomaly scorer)."""


@main.group(cls=LazyGroup, lazy={"som": "survey_classifier.som.cli:show_som"})
def show():
    """Show the pictures of a trained model (SOM prototypes, hits, best matches)."""


@main.group(cls=LazyGroup, lazy={"anomaly": "survey_classifier.anomaly.cli:evaluate_anomaly"})
def evaluate():
    """Evaluate stages on labelled catalogues."""


if __name__ == "__main__":
    main()
