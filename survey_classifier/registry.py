"""The model registry: versioned model artefacts with their sha256, metrics and card.

Registering copies the artefact into the model store (a folder per stage,
name and version) and records it in the ``models`` table with its sha256,
metrics, metadata and model card. One model per stage is the default (the
one a stage runs when none is named); a retired model stays on record, for
the provenance of the results it made, but is no longer run. Loading goes
through :func:`resolve_model`, which refuses a file whose sha256 no longer
matches the registered one.

The model store is ``$SURVEY_CLASSIFIER_HOME/models``, else
``~/.survey-classifier/models``. The database stores paths that this
module wrote; nothing here imports code from those paths.

Examples
--------
>>> from survey_classifier.db import make_engine, upgrade
>>> upgrade("sqlite:///results.db")                          # doctest: +SKIP
>>> engine = make_engine("sqlite:///results.db")             # doctest: +SKIP
>>> register_model(engine, "model.onnx", stage="cnn", name="fr-cnn", version="2")  # doctest: +SKIP
>>> path, row = resolve_model(engine, "cnn")                 # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from astropy.table import Table
from sqlalchemy import select, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from survey_classifier.db.models import ModelRow, utcnow
from survey_classifier.errors import ModelError, SurveyClassifierError

__all__ = [
    "model_store_dir",
    "file_sha256",
    "register_model",
    "list_models",
    "get_model",
    "set_default",
    "retire_model",
    "resolve_model",
]

_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$")
_CHUNK = 1 << 20


def model_store_dir() -> Path:
    """``$SURVEY_CLASSIFIER_HOME/models``, else ``~/.survey-classifier/models``."""
    home = os.environ.get("SURVEY_CLASSIFIER_HOME")
    base = Path(home).expanduser() if home else Path.home() / ".survey-classifier"
    return base / "models"


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_name(what: str, value: str) -> str:
    value = str(value)
    if not _SAFE_NAME.match(value) or ".." in value:
        msg = (
            f"model {what} {value!r} is not allowed: use 1-64 letters, digits, '.', '_', '+' or '-', "
            "starting with a letter or digit"
        )
        raise SurveyClassifierError(msg)
    return value


def _as_dict(row) -> dict[str, Any]:
    record = dict(row._mapping)
    record["model_ref"] = f"{record['name']}:{record['version']}"
    return record


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
    store=None,
    make_default: bool | None = None,
) -> dict[str, Any]:
    """Copy ``artefact`` into the model store and record it.

    Parameters
    ----------
    engine : Engine
    artefact : str or Path
        The model file (an ONNX network, a SOM, a scorer...). A JSON record
        beside it with the same stem (``model.json`` for ``model.onnx``) is
        copied too.
    stage, name, version : str
        The stage that runs it and its registry identity; ``name:version``
        is the ``model_ref`` stored with every result it makes.
    metrics : mapping, optional
        Evaluation figures (accuracy, AUC...), stored as JSON.
    card : str or Path, optional
        A model card (Markdown or text): copied beside the artefact and its
        text stored under ``details["card"]``.
    details : mapping, optional
        Further metadata (training data, preprocessing...).
    store : str or Path, optional
        The model store (default :func:`model_store_dir`).
    make_default : bool, optional
        Make it the stage's default; by default only when the stage has none.

    Returns
    -------
    dict
        The ``models`` row, plus ``model_ref``.
    """
    stage, name, version = _check_name("stage", stage), _check_name("name", name), _check_name("version", version)
    source = Path(artefact).expanduser()
    if not source.is_file():
        msg = f"model artefact {source} is not a file"
        raise ModelError(msg)
    if metrics is not None and not isinstance(metrics, Mapping):
        msg = f"model metrics must be a mapping of names to values, got {type(metrics).__name__}"
        raise SurveyClassifierError(msg)
    info = dict(details or {})
    card_path = None
    if card is not None:
        card_path = Path(card).expanduser()
        try:
            info["card"] = card_path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            msg = f"cannot read the model card {card_path}: {exc}"
            raise ModelError(msg) from exc
    info.setdefault("original_path", str(source.resolve()))
    folder = Path(store).expanduser() if store is not None else model_store_dir()
    target_dir = folder / stage / name / version
    with engine.connect() as connection:
        if connection.execute(select(ModelRow.id).where(ModelRow.name == name, ModelRow.version == version)).first():
            msg = f"model {name}:{version} is already registered; register a new version instead"
            raise ModelError(msg)
    if target_dir.exists() and any(target_dir.iterdir()):
        msg = f"the model store already holds {target_dir}; remove it or register a new version"
        raise ModelError(msg)
    target_dir.mkdir(parents=True, exist_ok=True)
    target = target_dir / source.name
    shutil.copyfile(source, target)
    record = source.with_suffix(".json")
    if source.suffix != ".json" and record.is_file():
        shutil.copyfile(record, target_dir / record.name)
        info.setdefault("record", record.name)
    if card_path is not None:
        shutil.copyfile(card_path, target_dir / "card.md")
    sha256 = file_sha256(target)
    if sha256 != file_sha256(source):
        shutil.rmtree(target_dir, ignore_errors=True)
        msg = f"copying {source} to {target} changed its content (sha256 differs); the disk may be failing"
        raise ModelError(msg)
    try:
        with engine.begin() as connection:
            has_default = connection.execute(
                select(ModelRow.id).where(ModelRow.stage == stage, ModelRow.is_default.is_(True))
            ).first()
            default = (not has_default) if make_default is None else bool(make_default)
            if default:
                _clear_default(connection, stage)
            row_id = connection.execute(
                ModelRow.__table__.insert().values(
                    name=name,
                    version=version,
                    stage=stage,
                    artefact_path=str(target.resolve()),
                    sha256=sha256,
                    metrics=dict(metrics) if metrics is not None else None,
                    details=info,
                    is_default=default,
                    retired=False,
                    created_at=utcnow(),
                )
            ).inserted_primary_key[0]
    except IntegrityError as exc:
        shutil.rmtree(target_dir, ignore_errors=True)
        msg = f"model {name}:{version} is already registered; register a new version instead"
        raise ModelError(msg) from exc
    return get_model(engine, id=row_id)


def _clear_default(connection: Connection, stage: str) -> None:
    connection.execute(update(ModelRow).where(ModelRow.stage == stage).values(is_default=False))


def list_models(engine: Engine, *, stage: str | None = None, include_retired: bool = True) -> Table:
    """The registered models as a table (newest first within each stage)."""
    query = select(ModelRow.__table__).order_by(ModelRow.stage, ModelRow.name, ModelRow.id.desc())
    if stage is not None:
        query = query.where(ModelRow.stage == stage)
    if not include_retired:
        query = query.where(ModelRow.retired.is_(False))
    with engine.connect() as connection:
        rows = [_as_dict(r) for r in connection.execute(query)]
    names = ["id", "stage", "name", "version", "model_ref", "is_default", "retired", "sha256", "created_at",
             "artefact_path", "metrics"]
    table = Table(names=names, dtype=[int, str, str, str, str, bool, bool, str, str, str, str])
    for r in rows:
        table.add_row([r["id"], r["stage"], r["name"], r["version"], r["model_ref"], r["is_default"], r["retired"],
                       r["sha256"], r["created_at"].isoformat(), r["artefact_path"],
                       json.dumps(r["metrics"], sort_keys=True) if r["metrics"] is not None else ""])
    return table


def get_model(engine: Engine, name: str | None = None, version: str | None = None, *, id: int | None = None) -> dict:
    """One registered model, by ``id`` or by ``name`` (and ``version``; else its newest)."""
    query = select(ModelRow.__table__)
    if id is not None:
        query = query.where(ModelRow.id == int(id))
        what = f"id {id}"
    elif name is not None:
        query = query.where(ModelRow.name == str(name))
        if version is not None:
            query = query.where(ModelRow.version == str(version))
        what = f"{name}:{version}" if version is not None else f"named {name!r}"
    else:
        msg = "name a model (name and version) or give its id"
        raise SurveyClassifierError(msg)
    with engine.connect() as connection:
        row = connection.execute(query.order_by(ModelRow.id.desc()).limit(1)).first()
    if row is None:
        msg = f"no registered model {what}; see `survey-classifier models list`"
        raise ModelError(msg)
    return _as_dict(row)


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


def resolve_model(
    engine: Engine, stage: str, name: str | None = None, version: str | None = None
) -> tuple[Path, dict]:
    """The artefact to load for ``stage``, checked against its registered sha256.

    Parameters
    ----------
    stage : str
    name : str, optional
        The model; the stage's default when not given.
    version : str, optional
        The version; the newest that is not retired when not given.

    Returns
    -------
    (Path, dict)
        The artefact's path in the model store and its ``models`` row.

    Raises
    ------
    ModelError
        No such model, a model of another stage, a retired one, a missing
        file, or a file whose sha256 differs from the registered one.
    """
    query = select(ModelRow.__table__).where(ModelRow.stage == stage)
    if name is None:
        query = query.where(ModelRow.is_default.is_(True))
        what = f"no default model for stage {stage!r}; register one or run `survey-classifier models set-default`"
    else:
        query = query.where(ModelRow.name == name)
        if version is None:
            query = query.where(ModelRow.retired.is_(False))
            what = f"no model named {name!r} (not retired) registered for stage {stage!r}"
        else:
            query = query.where(ModelRow.version == str(version))
            what = f"no model {name}:{version} registered for stage {stage!r}"
    with engine.connect() as connection:
        row = connection.execute(query.order_by(ModelRow.id.desc()).limit(1)).first()
    if row is None:
        raise ModelError(what)
    model = _as_dict(row)
    if model["retired"]:
        msg = f"model {model['model_ref']} of stage {stage!r} is retired; pick another version"
        raise ModelError(msg)
    path = Path(model["artefact_path"])
    if not path.is_file():
        msg = f"model {model['model_ref']}: artefact {path} is missing from the model store"
        raise ModelError(msg)
    actual = file_sha256(path)
    if actual != model["sha256"]:
        msg = (
            f"model {model['model_ref']}: {path} has sha256 {actual}, not the registered {model['sha256']}; "
            "the file was changed or corrupted after registration, so it is refused"
        )
        raise ModelError(msg)
    return path, model
