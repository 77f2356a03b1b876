"""``classify`` (a run in this process) and ``demo``; how every run is prepared."""

from __future__ import annotations

import sys
import time
from collections import Counter
from pathlib import Path

import click

from survey_classifier.cli.group import fail
from survey_classifier.cli.options import (
    catalogue_options,
    db_option,
    max_memory_option,
    mosaic_options,
    parse_params,
    stage_options,
)

__all__ = ["classify", "demo", "prepare_run", "print_summary"]


def prepare_run(db_url, inputs, stages, params, columns, mosaics=None, *, recompute=False):
    """Upgrade the database, build the stages with their registry models and expand INPUTS (or
    place their positions on ``mosaics``, the values of :func:`mosaic_options`), as both
    ``classify`` and ``submit`` start: ``(engine, stage_list, sources, config)``.

    Stages that named ones need come along; ``config["reuse"]`` says which
    of them are read from the database where stored (``--recompute``: none).
    """
    from survey_classifier.db import make_engine, upgrade
    from survey_classifier.io.inputs import expand_inputs
    from survey_classifier.stages.plan import plan_stages

    upgrade(db_url)
    engine = make_engine(db_url)
    parsed = parse_params(params)
    names = [n.strip() for n in stages.split(",") if n.strip()] if stages else None
    plan = plan_stages(names, parsed, engine, recompute=recompute)
    config = {"inputs": list(inputs), "stages_asked": names, "params": parsed, "reuse": plan.reuse}
    if mosaics and mosaics.get("mosaics"):
        sources = _mosaic_sources(engine, inputs, mosaics, columns)
        config.update({k: v for k, v in mosaics.items() if v})
    else:
        for option, value in (mosaics or {}).items():
            if value:
                fail(f"--{option.replace('_', '-')} needs --mosaics")
        sources = expand_inputs(list(inputs), **columns)
    if not sources:
        fail(f"no cutouts found in {list(inputs)}")
    if plan.reuse:
        click.echo(plan.describe_reuse(), err=True)
    return engine, plan.stages, sources, config


def _mosaic_sources(engine, inputs, mosaics, columns):
    from survey_classifier.footprints import mosaic_sources
    from survey_classifier.io.mosaics import CutoutSize

    if columns.get("file_column") or columns.get("base_dir"):
        fail("--file-column and --base-dir name cutout files; with --mosaics the catalogue gives positions only")
    try:
        size = CutoutSize.parse(mosaics.get("cutout_size") or "150")
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--cutout-size") from None
    positions = {k: columns.get(k) for k in ("id_column", "ra_column", "dec_column")}
    return mosaic_sources(engine, list(inputs), mosaics["mosaics"], size, **positions)


@click.command()
@click.argument("inputs", nargs=-1, required=True)
@db_option
@stage_options
@click.option("--batch-size", default=64, show_default=True, type=click.IntRange(min=1))
@click.option("--max-bytes", default=None, type=click.IntRange(min=1), help="Refuse files larger than this.")
@click.option("--max-pixels", default=None, type=click.IntRange(min=1), help="Refuse images with more pixels.")
@max_memory_option
@catalogue_options
@mosaic_options
@click.option("--quiet", is_flag=True, help="No progress bar.")
def classify(inputs, db_url, stages, params, recompute, batch_size, max_bytes, max_pixels, max_memory, quiet,
             mosaics, cutout_size, save_cutouts, **columns):
    """Run the stages on INPUTS (files, directories, globs or catalogue tables; paths or URLs).

    With --mosaics, INPUTS are catalogues of positions, and each cutout is
    cut from the mosaic tiles as it is read.

    Runs in this process and stores cutouts, results and per-cutout errors in
    the database. Exits non-zero only when no cutout could be processed.
    """
    from survey_classifier.cli.progress import RunProgress
    from survey_classifier.io.fits import ReadLimits
    from survey_classifier.pipeline import run_pipeline

    mosaic_choice = {"mosaics": mosaics, "cutout_size": cutout_size, "save_cutouts": save_cutouts}
    engine, stage_list, sources, config = prepare_run(db_url, inputs, stages, params, columns, mosaic_choice,
                                                      recompute=recompute)
    chosen = {"max_bytes": max_bytes, "max_pixels": max_pixels, "max_memory": max_memory}
    limits = ReadLimits(**{k: v for k, v in chosen.items() if v})
    with RunProgress(len(sources), quiet=quiet, stages=[s.name for s in stage_list]) as bar:
        summary = run_pipeline(
            sources, stage_list, engine, batch_size=batch_size, limits=limits, config=config, progress=bar.batch_done,
            save_cutouts=save_cutouts,
        )
    print_summary(summary, stage_list, db_url=db_url)
    if summary.n_cutouts and summary.n_processed == 0 and not _any_stage_result(summary):
        sys.exit(1)


def _any_stage_result(summary) -> bool:
    return summary.n_failed < summary.n_cutouts or any(stage != "read" for _, stage, _ in summary.failures)


def print_summary(summary, stages, *, db_url=None) -> None:
    """The closing lines of a run: counts, rate, stages and models, results read from the database,
    time per step, failures by reason and the command that lists them all."""
    from survey_classifier.cli.progress import echo_errors_hint

    described = ", ".join(f"{s.name} {s.version}" + (f" ({s.model_ref})" if s.model_ref else "") for s in stages)
    run, timing = f"run {summary.run_id}", f"in {summary.elapsed_s:.1f} s"
    if summary.resumed:  # the counts are the whole run's; the time only this process's part of it
        run, timing = f"{run} (an interrupted run, resumed)", f"the batches not stored before {timing}"
    else:
        timing += f" ({summary.n_cutouts / max(summary.elapsed_s, 1e-9):.0f} cutouts/s)"
    click.echo(
        f"{run}: {summary.n_cutouts} cutouts, {summary.n_processed} processed, {summary.n_failed} failed, "
        f"{timing}; stages: {described}"
    )
    if summary.reused:
        parts = ", ".join(f"{stage} {count}" for stage, count in sorted(summary.reused.items()))
        click.echo(f"read from the database (stored by an earlier run, same version, model and parameters): {parts}")
    if summary.timings:
        parts = ", ".join(f"{k} {v:.2f} s" for k, v in summary.timings.items())
        click.echo(f"time: {parts}")
    if summary.failures:
        reasons = summary.reasons
        by_stage = Counter()
        for (stage, _), files in reasons.items():
            by_stage[stage] += len(files)
        click.echo("failures by stage: " + ", ".join(f"{stage} {n}" for stage, n in by_stage.most_common()))
        click.echo("failures by reason:")
        for (stage, reason), files in list(reasons.items())[:20]:
            examples = ", ".join(Path(p).name for p in files[:3])
            click.echo(f"  {len(files)} x [{stage}] {reason} (e.g. {examples})")
        if len(reasons) > 20:
            click.echo(f"  ... and {len(reasons) - 20} more reasons")
        echo_errors_hint(summary.run_id, db_url, summary.n_failed)


@click.command()
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
    from survey_classifier.stages.plan import build_stages
    from survey_classifier.synthetic import make_synthetic_cutouts

    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    truth = make_synthetic_cutouts(folder / "cutouts", n=n_cutouts, seed=seed)
    click.echo(f"made {len(truth)} synthetic cutouts in {folder / 'cutouts'} ({time.perf_counter() - start:.1f} s)")
    url = f"sqlite:///{(folder / 'demo.db').resolve()}"
    upgrade(url)
    engine = make_engine(url)
    names = [n.strip() for n in stages.split(",") if n.strip()] if stages else None
    stage_list = build_stages(names, {}, engine)
    sources = expand_inputs([str(folder / "cutouts" / "catalogue.csv")])
    summary = run_pipeline(sources, stage_list, engine, config={"demo": True, "seed": seed})
    print_summary(summary, stage_list)
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
    ra, dec = table["ra_deg"][0], table["dec_deg"][0]
    click.echo(f"try: survey-classifier query --db {url} --ra {ra:.4f} --dec {dec:.4f} --radius 0.5")
