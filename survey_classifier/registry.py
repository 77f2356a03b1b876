"""The model registry: the one owner of a model's identity.

Registering checks that the stage can load the artefact, keeps its bytes
where every worker can reach them (the results database by default, or an
fsspec URL; see :mod:`survey_classifier.artefacts`) and records it in the
``models`` table with its sha256, metrics and card. One model per stage is
the default (the one the stage runs when none is named); a retired model
stays on record, for the provenance of the results it made, but is no
longer run.

The registry hands stages a :class:`~survey_classifier.modelref.ModelRef`;
the stage stores exactly its ``name:version`` and sha256 with every result.
Models shipped with survey-classifier or with an installed plugin are
registry entries from the start: :func:`seed_shipped_models` records them
whenever a database is created or upgraded.

Examples
--------
>>> from survey_classifier.db import make_engine, upgrade
>>> upgrade("sqlite:///results.db")                          # doctest: +SKIP
>>> engine = make_engine("sqlite:///results.db")             # doctest: +SKIP
>>> register_model(engine, "model.onnx", stage="cnn", name="fr-cnn", version="2")  # doctest: +SKIP
>>> resolve_model(engine, "cnn").ref                         # doctest: +SKIP
'fr-cnn:1'
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from astropy.table import Table
from sqlalchemy import select, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from survey_classifier import artefacts
from survey_classifier.checksum import sha256_file
from survey_classifier.db.models import ModelRow, utcnow
from survey_classifier.errors import ModelError, SurveyClassifierError
from survey_classifier.modelref import DATABASE_STORE, ModelRef

__all__ = [
    "register_model",
    "list_models",
    "get_model",
    "stored_ref",
    "set_default",
    "retire_model",
    "resolve_model",
    "model_for",
    "seed_shipped_models",
]

log = logging.getLogger(__name__)

_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$")
_COLUMNS = ("id", "name", "version", "stage", "filename", "store", "sha256", "metrics", "details", "companions",
            "is_default", "retired", "created_at")


def _check_name(what: str, value: str) -> str:
    value = str(value)
    if not _SAFE_NAME.match(value) or ".." in value:
        msg = (
            f"model {what} {value!r} is not allowed: use 1-64 letters, digits, '.', '_', '+' or '-', "
            "starting with a letter or digit"
        )
        raise SurveyClassifierError(msg)
    return value


def _model_stage(stage: str):
    """The installed stage class called ``stage``, if it takes a model."""
    from survey_classifier.stages.registry import available_stages

    stages = available_stages()
    with_models = sorted(name for name, cls in stages.items() if cls.model_param)
    if stage not in stages:
        msg = f"no stage named {stage!r} is installed; stages that take a model: {', '.join(with_models)}"
        raise ModelError(msg)
    if not stages[stage].model_param:
        msg = f"stage {stage!r} takes no model; stages that take a model: {', '.join(with_models)}"
        raise ModelError(msg)
    return stages[stage]


def _as_dict(row) -> dict[str, Any]:
    record = {name: getattr(row, name) for name in _COLUMNS}
    record["model_ref"] = f"{record['name']}:{record['version']}"
    return record


def _ref(record: Mapping[str, Any]) -> ModelRef:
    return ModelRef(
        stage=record["stage"],
        name=record["name"],
        version=record["version"],
        sha256=record["sha256"],
        filename=record["filename"],
        store=record["store"],
        companions=tuple((c["filename"], c["sha256"], c["store"]) for c in record.get("companions") or ()),
    )


def register_model(
    engine: Engine,
    artefact,
    *,
    stage: str,
    name: str,
    version: str,
    metrics: Mapping[str, Any] | None = None,
    card=None,
    details: Mapping[str, Any] | None = None,
    store: str | None = None,
    make_default: bool | None = None,
) -> dict[str, Any]:
    """Check ``artefact`` against its stage, keep its bytes (and its companion files') and record it.

    The files the stage keeps beside its models (``Stage.model_companions``:
    a SOM map's ``neurons.json``) that are found beside ``artefact`` are
    checked against it (``Stage.validate_companion``) and kept where the
    artefact is kept, each with its sha256, so that whoever resolves the
    model gets them too (:meth:`ModelRef.companion
    <survey_classifier.modelref.ModelRef.companion>`).

    Parameters
    ----------
    engine : Engine
    artefact : str or Path
        The model file (an ONNX network, a SOM map, an anomaly scorer...).
    stage, name, version : str
        The installed stage that runs it and its registry identity;
        ``name:version`` is the ``model_ref`` stored with every result.
    metrics : mapping, optional
        Evaluation figures (accuracy, AUC...), stored as JSON.
    card : str or Path, optional
        A model card (Markdown); its text is stored under ``details["card"]``.
    details : mapping, optional
        Further metadata (training data, preprocessing...).
    store : str, optional
        An fsspec URL prefix (``s3://bucket/models``) to keep the bytes
        under instead of the results database.
    make_default : bool, optional
        Make it the stage's default; by default only when the stage has none.

    Returns
    -------
    dict
        The ``models`` row (its ``companions``: filename, sha256, store and
        the facts the stage found in each), plus ``model_ref`` and
        ``same_bytes_as`` (the refs already registered with identical
        bytes, if any).

    Raises
    ------
    ModelError
        An unknown stage, an artefact the stage cannot load, a companion
        file that does not fit it, a ``name:version`` already taken, an
        unreachable store. Nothing is recorded or kept after a refusal.
    """
    stage, name, version = _check_name("stage", stage), _check_name("name", name), _check_name("version", version)
    stage_class = _model_stage(stage)
    source = Path(artefact).expanduser()
    if not source.is_file():
        msg = f"model artefact {source} is not a file"
        raise ModelError(msg)
    if metrics is not None and not isinstance(metrics, Mapping):
        msg = f"model metrics must be a mapping of names to values, got {type(metrics).__name__}"
        raise SurveyClassifierError(msg)
    info = dict(details or {})
    if card is not None:
        card_path = Path(card).expanduser()
        try:
            info["card"] = card_path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            msg = f"cannot read the model card {card_path}: {exc}"
            raise ModelError(msg) from exc
    info["artefact"] = stage_class.validate_artefact(source)
    info.setdefault("source_file", source.name)
    companions = _companions_beside(stage_class, source)
    sha256 = sha256_file(source)
    with engine.connect() as connection:
        if _find(connection, name=name, version=version) is not None:
            msg = f"model {name}:{version} is already registered; register a new version instead"
            raise ModelError(msg)
        twins = [f"{r.name}:{r.version}" for r in connection.execute(
            select(ModelRow.name, ModelRow.version).where(ModelRow.sha256 == sha256, ModelRow.stage == stage)
        )]
    target = _target_store(store)
    uploaded: list[str] = []
    try:
        where = _keep_outside(target, source, sha256, uploaded)
        for path, record in companions:
            record["store"] = _keep_outside(target, path, record["sha256"], uploaded)
        with engine.begin() as connection:
            if target == DATABASE_STORE:
                artefacts.put_in_database(connection, source, sha256)
                for path, record in companions:
                    artefacts.put_in_database(connection, path, record["sha256"])
            row_id = _insert(connection, stage=stage, name=name, version=version, filename=source.name,
                             store=where, sha256=sha256, metrics=metrics, details=info, make_default=make_default,
                             companions=[record for _, record in companions] or None)
    except IntegrityError as exc:
        _remove_uploads(uploaded)
        msg = f"model {name}:{version} is already registered; register a new version instead"
        raise ModelError(msg) from exc
    except BaseException:
        _remove_uploads(uploaded)
        raise
    model = get_model(engine, id=row_id)
    model["same_bytes_as"] = twins
    return model


def _companions_beside(stage_class, source: Path) -> list[tuple[Path, dict[str, Any]]]:
    """The stage's companion files found beside ``source``, each checked against it: its path and its record."""
    found = []
    for filename in stage_class.model_companions:
        path = source.with_name(filename)
        if path == source or not path.is_file():
            continue
        details = stage_class.validate_companion(path, source)
        found.append((path, {"filename": filename, "sha256": sha256_file(path), "details": details}))
    return found


def _target_store(store: str | None) -> str:
    """Where ``store`` (``models register --store``) says to keep the bytes: the database or an fsspec URL."""
    if store is None or store == DATABASE_STORE:
        return DATABASE_STORE
    if artefacts.is_url(store):
        return store
    msg = (
        f"model store {store!r} is not a URL (s3://..., file:///...); "
        "leave it out to keep the bytes in the database"
    )
    raise ModelError(msg)


def _keep_outside(target: str, path: Path, sha256: str, uploaded: list[str]) -> str:
    """The store of ``path``'s bytes: an object written under the URL ``target`` (its URL added to ``uploaded``
    when this call created it), or the database, where they are put inside the registration's transaction."""
    if target == DATABASE_STORE:
        return DATABASE_STORE
    where, created = artefacts.upload(target, path, sha256)
    if created:
        uploaded.append(where)
    return where


def _remove_uploads(urls: list[str]) -> None:
    """Remove the objects a refused registration wrote."""
    if not urls:
        return
    import fsspec

    for url in urls:
        try:
            filesystem, path = fsspec.core.url_to_fs(url)
            filesystem.rm(path)
        except (OSError, ValueError):
            log.warning("could not remove %s after a refused registration", url)


def _insert(connection: Connection, *, stage, name, version, filename, store, sha256, metrics, details,
            make_default, companions=None) -> int:
    has_default = connection.execute(
        select(ModelRow.id).where(ModelRow.stage == stage, ModelRow.is_default.is_(True))
    ).first()
    default = (not has_default) if make_default is None else bool(make_default)
    if default:
        _clear_default(connection, stage)
    return connection.execute(
        ModelRow.__table__.insert().values(
            name=name,
            version=version,
            stage=stage,
            filename=filename,
            store=store,
            sha256=sha256,
            metrics=dict(metrics) if metrics is not None else None,
            details=details,
            companions=companions,
            is_default=default,
            retired=False,
            created_at=utcnow(),
        )
    ).inserted_primary_key[0]


def _clear_default(connection: Connection, stage: str) -> None:
    connection.execute(update(ModelRow).where(ModelRow.stage == stage).values(is_default=False))


def _find(connection: Connection, **where) -> dict | None:
    query = select(ModelRow.__table__)
    for column, value in where.items():
        query = query.where(getattr(ModelRow, column) == value)
    row = connection.execute(query.order_by(ModelRow.id.desc()).limit(1)).first()
    return None if row is None else _as_dict(row)


def _version_order(shipped) -> tuple:
    """Sort key of a shipped model: its name, then its version (numerically where it is a number)."""
    return shipped.name, (0, int(shipped.version), "") if shipped.version.isdigit() else (1, 0, shipped.version)


def seed_shipped_models(engine: Engine) -> list[str]:
    """Record every model shipped with an installed stage that is not yet registered.

    A stage's first shipped model is its default in a new database: it
    becomes the default when the stage has none. The models of one name are
    recorded in the order of their versions, so a name without a version
    means its highest shipped version (the newest entry). A database that
    already has a default keeps it; when this call records new models and
    some stage's default is an earlier shipped model, one line is logged
    naming the ``models set-default`` commands that switch to the new
    defaults. Safe to call any number of times, from several processes at
    once. Returns the refs recorded by this call.
    """
    from survey_classifier.stages.registry import available_stages

    stages = sorted((name, cls) for name, cls in available_stages().items() if cls.shipped_models)
    seeded = []
    for stage_name, stage_class in stages:
        shipped_models = stage_class.shipped_models
        for shipped in sorted(shipped_models, key=_version_order):  # each name's highest version is its newest
            ref = shipped.ref(stage_name)
            with engine.connect() as connection:
                found = _find(connection, name=shipped.name, version=shipped.version)
            if found is not None:
                _add_released_companions(engine, found, ref)
                continue
            details = {"shipped_with": shipped.package, "card": shipped.card_text()}
            try:
                with engine.begin() as connection:
                    _insert(connection, stage=stage_name, name=ref.name, version=ref.version, filename=ref.filename,
                            store=ref.store, sha256=ref.sha256, metrics=shipped.metrics, details=details,
                            make_default=None if shipped is shipped_models[0] else False,
                            companions=[{"filename": name, "sha256": sha256, "store": store}
                                        for name, sha256, store in ref.companions] or None)
            except IntegrityError:  # another process seeded it first
                continue
            seeded.append(ref.ref)
    if seeded:
        log.info("registered the shipped models %s", ", ".join(seeded))
        _log_earlier_defaults(engine, stages)
    return seeded


def _add_released_companions(engine: Engine, found: dict, ref: ModelRef) -> None:
    """Record the released companion files of a shipped model seeded before shipped models carried them.

    Only where the row is that shipped model (same sha256 and store) and has
    none: from then on they are fetched and verified by their released sha256
    like the model, instead of read unchecked from beside it.
    """
    if found["companions"] or not ref.companions or (found["sha256"], found["store"]) != (ref.sha256, ref.store):
        return
    companions = [{"filename": name, "sha256": sha256, "store": store} for name, sha256, store in ref.companions]
    with engine.begin() as connection:
        connection.execute(update(ModelRow).where(ModelRow.id == found["id"]).values(companions=companions))
    log.info("recorded the released %s of the shipped model %s",
             ", ".join(name for name, _, _ in ref.companions), ref.ref)


def _log_earlier_defaults(engine: Engine, stages) -> None:
    """One line naming the stages whose default is an earlier shipped model, and how to switch."""
    kept = []
    for stage_name, stage_class in stages:
        newest = stage_class.shipped_models[0]
        earlier = {f"{m.name}:{m.version}" for m in stage_class.shipped_models[1:]}
        with engine.connect() as connection:
            default = _find(connection, stage=stage_name, is_default=True)
        if default is not None and default["model_ref"] in earlier:
            kept.append((default["model_ref"], newest))
    if kept:
        switch = " and ".join(f"`survey-classifier models set-default {new.name} {new.version}`" for _, new in kept)
        log.warning(
            "this database keeps its default models %s; new databases default to %s: switch with %s",
            ", ".join(old for old, _ in kept), ", ".join(f"{new.name}:{new.version}" for _, new in kept), switch,
        )


def list_models(engine: Engine, *, stage: str | None = None, include_retired: bool = True) -> Table:
    """The registered models as a table (newest first within each stage)."""
    query = select(ModelRow.__table__).order_by(ModelRow.stage, ModelRow.name, ModelRow.id.desc())
    if stage is not None:
        query = query.where(ModelRow.stage == stage)
    if not include_retired:
        query = query.where(ModelRow.retired.is_(False))
    with engine.connect() as connection:
        rows = [_as_dict(r) for r in connection.execute(query)]
    names = ["id", "stage", "name", "version", "model_ref", "is_default", "retired", "sha256", "store", "created_at",
             "metrics"]
    table = Table(names=names, dtype=[int, str, str, str, str, bool, bool, str, str, str, str])
    for r in rows:
        table.add_row([r["id"], r["stage"], r["name"], r["version"], r["model_ref"], r["is_default"], r["retired"],
                       r["sha256"], r["store"], r["created_at"].isoformat(),
                       json.dumps(r["metrics"], sort_keys=True) if r["metrics"] is not None else ""])
    return table


def get_model(engine: Engine, name: str | None = None, version: str | None = None, *, id: int | None = None) -> dict:
    """One registered model, by ``id`` or by ``name`` (and ``version``; else its newest)."""
    if id is not None:
        where, what = {"id": int(id)}, f"id {id}"
    elif name is not None:
        where = {"name": str(name)} if version is None else {"name": str(name), "version": str(version)}
        what = f"{name}:{version}" if version is not None else f"named {name!r}"
    else:
        msg = "name a model (name and version) or give its id"
        raise SurveyClassifierError(msg)
    with engine.connect() as connection:
        model = _find(connection, **where)
    if model is None:
        msg = f"no registered model {what}; see `survey-classifier models list`"
        raise ModelError(msg)
    return model


def stored_ref(engine: Engine, model_ref: str) -> ModelRef:
    """The reference of the registered model whose results carry ``model_ref`` (``NAME:VERSION``), retired or not.

    Raises
    ------
    ModelError
        When no registered model has that name and version (a file used
        outside the registry, ``file:NAME@SHA``, has none).
    """
    name, _, version = str(model_ref).partition(":")
    if not name or not version:
        msg = f"{model_ref!r} names no registered model (NAME:VERSION)"
        raise ModelError(msg)
    return _ref(get_model(engine, name, version))


def set_default(engine: Engine, name: str, version: str) -> dict:
    """Make ``name:version`` the default model of its stage (the only one)."""
    model = get_model(engine, name, version)
    if model["retired"]:
        msg = f"model {model['model_ref']} is retired and cannot be the default of stage {model['stage']!r}"
        raise ModelError(msg)
    with engine.begin() as connection:
        _clear_default(connection, model["stage"])
        connection.execute(update(ModelRow).where(ModelRow.id == model["id"]).values(is_default=True))
    return get_model(engine, id=model["id"])


def retire_model(engine: Engine, name: str, version: str) -> dict:
    """Retire ``name:version``: kept on record with its results, no longer run (nor default)."""
    model = get_model(engine, name, version)
    with engine.begin() as connection:
        connection.execute(update(ModelRow).where(ModelRow.id == model["id"]).values(retired=True, is_default=False))
    return get_model(engine, id=model["id"])


def resolve_model(engine: Engine, stage: str, name: str | None = None, version: str | None = None) -> ModelRef:
    """The reference of the model ``stage`` runs: its default, or the one named.

    Parameters
    ----------
    stage : str
    name : str, optional
        The model; the stage's default when not given.
    version : str, optional
        The version; the newest that is not retired when not given.

    Raises
    ------
    ModelError
        No such model, a model of another stage, or a retired one.
    """
    where: dict[str, Any] = {"stage": stage}
    if name is None:
        where["is_default"] = True
        what = f"no default model for stage {stage!r}; register one or run `survey-classifier models set-default`"
    elif version is None:
        where.update(name=name, retired=False)
        what = f"no model named {name!r} (not retired) registered for stage {stage!r}"
    else:
        where.update(name=name, version=str(version))
        what = f"no model {name}:{version} registered for stage {stage!r}"
    with engine.connect() as connection:
        model = _find(connection, **where)
    if model is None and name is None and seed_shipped_models(engine):
        with engine.connect() as connection:
            model = _find(connection, **where)
    if model is None:
        raise ModelError(what)
    if model["retired"]:
        msg = f"model {model['model_ref']} of stage {stage!r} is retired; pick another version"
        raise ModelError(msg)
    return _ref(model)


def model_for(engine: Engine, stage_class, spec: str | None) -> ModelRef:
    """The reference for a stage's model parameter as a user gave it.

    ``spec`` is None (the stage's registry default), ``NAME`` or
    ``NAME:VERSION`` (a registered model of this stage), or the path of a
    model file. A file whose bytes are registered for this stage gets that
    registered identity (the oldest such entry), so the same bytes always
    give the same ref; an unregistered file gets ``file:NAME@SHA256[:12]``
    and its bytes are kept in the database, so that workers can fetch them.
    """
    stage = stage_class.name
    if spec is None:
        return resolve_model(engine, stage)
    text = str(spec)
    name, _, version = text.partition(":")
    if _SAFE_NAME.match(name) and (not version or _SAFE_NAME.match(version)):
        with engine.connect() as connection:
            where = {"stage": stage, "name": name, **({"version": version} if version else {"retired": False})}
            if _find(connection, **where) is not None:
                return resolve_model(engine, stage, name, version or None)
    path = Path(text).expanduser()
    if not path.exists():
        msg = (
            f"stage {stage!r}: {text!r} is neither a model registered for this stage (see `survey-classifier "
            "models list`) nor a model file"
        )
        raise ModelError(msg)
    path = stage_class.artefact_file(path)
    sha256 = sha256_file(path)
    with engine.connect() as connection:
        first = connection.execute(
            select(ModelRow.__table__).where(ModelRow.stage == stage, ModelRow.sha256 == sha256)
            .order_by(ModelRow.id).limit(1)
        ).first()
    if first is not None:
        return _ref(_as_dict(first))
    stage_class.validate_artefact(path)
    with engine.begin() as connection:
        artefacts.put_in_database(connection, path, sha256)
    log.warning("stage %s runs the unregistered model file %s (sha256 %s)", stage, path, sha256)
    return ModelRef(stage=stage, name=path.name, version=sha256[:12], sha256=sha256, filename=path.name,
                    store=DATABASE_STORE, registered=False)
