"""Model artefacts addressed by their sha256: where the bytes live, and a local cache.

A registered model's bytes are kept where every worker can reach them,
not in one machine's folder:

- ``database`` (the default): the ``artefacts`` table of the results
  database itself, keyed by sha256 (models are a few MB);
- an fsspec URL (``s3://bucket/prefix``, ``gs://...``, ``file:///shared/...``)
  given to ``models register --store``, for large models; the object is
  written under ``PREFIX/SHA256/FILENAME``;
- ``package:MODULE/RESOURCE``: a model shipped inside an installed package.

:func:`fetch` gives a process a local copy: package files are used where
they are installed; other bytes are copied once into the cache
(``$SURVEY_CLASSIFIER_CACHE``, else ``$XDG_CACHE_HOME/survey-classifier``,
else ``~/.cache/survey-classifier``) under ``artefacts/SHA256/FILENAME``,
written to a temporary name, synced and renamed, so a crash never leaves a
partial file under the real name. Every copy is checked against the
registered sha256 before it is used.
"""

from __future__ import annotations

import os
import tempfile
import threading
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.engine import Connection, Engine

from survey_classifier.checksum import sha256_file
from survey_classifier.db.models import ArtefactRow, utcnow
from survey_classifier.errors import ModelError
from survey_classifier.modelref import DATABASE_STORE, PACKAGE_SCHEME, ModelRef

__all__ = ["cache_dir", "fetch", "put_in_database", "upload", "package_path", "is_url"]

_VERIFIED: dict[tuple[str, int, int], str] = {}
_LOCK = threading.Lock()


def cache_dir() -> Path:
    """Folder of this machine's local copies of model artefacts."""
    explicit = os.environ.get("SURVEY_CLASSIFIER_CACHE")
    if explicit:
        return Path(explicit).expanduser() / "artefacts"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "survey-classifier" / "artefacts"


def is_url(store: str) -> bool:
    """Whether ``store`` names an fsspec location (``scheme://...``)."""
    return "://" in store


def package_path(store: str) -> Path:
    """The file of a ``package:MODULE/RESOURCE`` store in the installed package."""
    from importlib.resources import files

    module, _, resource = store[len(PACKAGE_SCHEME):].partition("/")
    try:
        return Path(str(files(module).joinpath(resource)))
    except ModuleNotFoundError as exc:
        msg = f"the package {module!r} that ships this model is not installed here"
        raise ModelError(msg) from exc


def _verified_sha256(path: Path) -> str:
    """sha256 of ``path``, hashed once per process while size and mtime hold."""
    status = path.stat()
    key = (str(path), status.st_size, status.st_mtime_ns)
    with _LOCK:
        if key in _VERIFIED:
            return _VERIFIED[key]
    digest = sha256_file(path)
    with _LOCK:
        _VERIFIED[key] = digest
    return digest


def _check(ref: ModelRef, path: Path, where: str) -> None:
    if not path.is_file():
        msg = f"model {ref.ref} (stage {ref.stage}): {where} has no file {ref.filename}"
        raise ModelError(msg)
    actual = _verified_sha256(path)
    if actual != ref.sha256:
        msg = (
            f"model {ref.ref} (stage {ref.stage}): {where} holds bytes with sha256 {actual}, "
            f"not the registered {ref.sha256}; the file was changed or corrupted, so it is refused"
        )
        raise ModelError(msg)


def fetch(ref: ModelRef, engine: Engine | None = None) -> ModelRef:
    """A local, verified copy of ``ref``'s artefact; returns ``ref`` with its ``path``.

    Raises
    ------
    ModelError
        The bytes cannot be found, or their sha256 is not the registered one.
    """
    if ref.store.startswith(PACKAGE_SCHEME):
        path = package_path(ref.store)
        _check(ref, path, f"the installed package file {path}")
        return ref.at(path)
    if ref.store.startswith("file://"):
        path = Path(ref.store[len("file://"):])
        _check(ref, path, f"the file {path}")
        return ref.at(path)
    target = cache_dir() / ref.sha256 / ref.filename
    if target.is_file() and _verified_sha256(target) == ref.sha256:
        return ref.at(target)
    if ref.store == DATABASE_STORE:
        if engine is None:
            msg = f"model {ref.ref} is stored in the results database; a database connection is needed to fetch it"
            raise ModelError(msg)
        with engine.connect() as connection:
            content = connection.execute(
                select(ArtefactRow.content).where(ArtefactRow.sha256 == ref.sha256)
            ).scalar_one_or_none()
        if content is None:
            msg = f"model {ref.ref}: the results database holds no artefact with sha256 {ref.sha256}"
            raise ModelError(msg)
        _write_atomically(target, lambda handle: handle.write(content))
        where = "the copy fetched from the results database"
    elif is_url(ref.store):
        _write_atomically(target, lambda handle: _download(ref.store, handle))
        where = f"the copy fetched from {ref.store}"
    else:
        msg = f"model {ref.ref}: unknown artefact store {ref.store!r}"
        raise ModelError(msg)
    try:
        _check(ref, target, where)
    except ModelError:
        target.unlink(missing_ok=True)
        raise
    return ref.at(target)


def _download(url: str, handle) -> None:
    import fsspec

    try:
        with fsspec.open(url, "rb") as source:
            for block in iter(lambda: source.read(1 << 20), b""):
                handle.write(block)
    except (OSError, ValueError, ImportError) as exc:
        msg = f"cannot fetch the model artefact {url}: {exc}"
        raise ModelError(msg) from exc


def _write_atomically(target: Path, write) -> None:
    """Write through ``write(handle)`` to a temporary file, sync it, rename it to ``target``."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        descriptor, temporary = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    except OSError as exc:
        msg = f"cannot write to the model cache {target.parent}: {exc.strerror or exc}"
        raise ModelError(msg) from exc
    try:
        with os.fdopen(descriptor, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, target)
    except OSError as exc:
        Path(temporary).unlink(missing_ok=True)
        msg = f"cannot write {target}: {exc.strerror or exc}"
        raise ModelError(msg) from exc
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def put_in_database(connection: Connection, path: Path, sha256: str) -> None:
    """Store the bytes of ``path`` in the ``artefacts`` table (once per sha256)."""
    exists = connection.execute(select(ArtefactRow.sha256).where(ArtefactRow.sha256 == sha256)).first()
    if exists:
        return
    content = Path(path).read_bytes()
    connection.execute(
        ArtefactRow.__table__.insert().values(sha256=sha256, size=len(content), content=content, created_at=utcnow())
    )


def upload(prefix: str, path: Path, sha256: str) -> tuple[str, bool]:
    """Copy ``path`` to ``PREFIX/SHA256/FILENAME`` through fsspec.

    Returns the object's URL and whether this call created it. Written under
    a temporary name first and moved into place where the store can rename.
    """
    import fsspec

    url = f"{prefix.rstrip('/')}/{sha256}/{Path(path).name}"
    try:
        filesystem, object_path = fsspec.core.url_to_fs(url)
        if filesystem.exists(object_path):
            return url, False
        temporary = f"{object_path}.part-{os.getpid()}"
        filesystem.makedirs(filesystem._parent(object_path), exist_ok=True)
        filesystem.put_file(str(path), temporary)
        filesystem.mv(temporary, object_path)
    except (OSError, ValueError, ImportError) as exc:
        msg = f"cannot store the model artefact at {url}: {exc}"
        raise ModelError(msg) from exc
    return url, True
