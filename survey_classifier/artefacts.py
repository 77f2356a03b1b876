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

import errno
import logging
import os
import socket
import tempfile
import threading
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.engine import Connection, Engine

from survey_classifier.checksum import sha256_file
from survey_classifier.db.models import ArtefactRow, utcnow
from survey_classifier.errors import ModelError
from survey_classifier.modelref import DATABASE_STORE, PACKAGE_SCHEME, ModelRef

__all__ = ["cache_dir", "fetch", "put_in_database", "upload", "package_path", "is_url", "disk_problem"]

log = logging.getLogger(__name__)

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
        where = f"the copy of {ref.filename} fetched from the results database"
    elif is_url(ref.store):
        _write_atomically(target, lambda handle: _download(ref.store, handle))
        where = f"the copy of {ref.filename} fetched from {ref.store}"
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


#: Where the name of a temporary file (``.NAME.HOST.PID.random``) says which process on which machine wrote it.
_HOST = socket.gethostname().replace(".", "-")[:40] or "host"


def _temporary_prefix(target: Path) -> str:
    return f".{target.name}.{_HOST}."


def _remove_stale_temporaries(target: Path) -> None:
    """Remove the temporary files of ``target`` left by writers on this machine that died (SIGKILL, power)."""
    prefix = _temporary_prefix(target)
    try:
        leftovers = [p for p in target.parent.iterdir() if p.name.startswith(prefix)]
    except OSError:
        return
    for leftover in leftovers:
        pid = leftover.name[len(prefix):].partition(".")[0]
        if pid.isdigit() and not _alive(int(pid)):
            leftover.unlink(missing_ok=True)
            log.info("removed %s, left by a writer that died", leftover.name)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _sync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable (where the filesystem can: not on every one)."""
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def disk_problem(exc: OSError) -> str:
    """What an ``OSError`` of a write means, in words (a full disk, a file size limit, a read-only place)."""
    reason = exc.strerror or str(exc)
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"{reason}: the disk is full or over its quota"
    if exc.errno == errno.EFBIG:
        return f"{reason}: a file size limit was reached"
    if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return f"{reason}: the place is not writable"
    return reason


def _write_atomically(target: Path, write) -> None:
    """Write through ``write(handle)`` to a temporary file beside ``target``, sync it, rename it to ``target``.

    A crash at any point leaves either no ``target`` or the complete one;
    the temporary file a killed writer leaves is removed by the next writer
    of the same target on this machine.
    """
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_temporaries(target)
        descriptor, temporary = tempfile.mkstemp(prefix=f"{_temporary_prefix(target)}{os.getpid()}.",
                                                 dir=target.parent)
    except OSError as exc:
        msg = f"cannot write to {target.parent}: {disk_problem(exc)}"
        raise ModelError(msg) from exc
    try:
        with os.fdopen(descriptor, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, target)
        _sync_folder(target.parent)
    except OSError as exc:
        Path(temporary).unlink(missing_ok=True)
        msg = f"cannot write {target}: {disk_problem(exc)}; nothing was kept"
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

    Returns the object's URL and whether this call created it. A local
    folder (``file://``) is written as the cache is (temporary name, fsync,
    rename); other stores get the object under a temporary name, then moved.
    An object already there is reused only when its bytes have ``sha256``.
    """
    import fsspec

    url = f"{prefix.rstrip('/')}/{sha256}/{Path(path).name}"
    try:
        filesystem, object_path = fsspec.core.url_to_fs(url)
        local = "file" in _protocols(filesystem)
        if filesystem.exists(object_path):
            if _stored_sha256(filesystem, object_path) == sha256:
                return url, False
            log.warning("replacing %s: its bytes are not those of sha256 %s", url, sha256)
        if local:
            _write_atomically(Path(object_path), lambda handle: _copy(path, handle))
            return url, True
        temporary = f"{object_path}.part-{_HOST}-{os.getpid()}"
        filesystem.makedirs(filesystem._parent(object_path), exist_ok=True)
        try:
            filesystem.put_file(str(path), temporary)
            filesystem.mv(temporary, object_path)
        except BaseException:
            _remove_quietly(filesystem, temporary)
            raise
    except OSError as exc:
        msg = f"cannot store the model artefact at {url}: {disk_problem(exc)}; nothing was registered"
        raise ModelError(msg) from exc
    except (ValueError, ImportError) as exc:
        msg = f"cannot store the model artefact at {url}: {exc}"
        raise ModelError(msg) from exc
    return url, True


def _protocols(filesystem) -> tuple[str, ...]:
    protocol = filesystem.protocol
    return (protocol,) if isinstance(protocol, str) else tuple(protocol)


def _copy(path: Path, handle) -> None:
    with open(path, "rb") as source:
        for block in iter(lambda: source.read(1 << 20), b""):
            handle.write(block)


def _stored_sha256(filesystem, object_path: str) -> str:
    import hashlib

    digest = hashlib.sha256()
    with filesystem.open(object_path, "rb") as stored:
        for block in iter(lambda: stored.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _remove_quietly(filesystem, object_path: str) -> None:
    try:
        if filesystem.exists(object_path):
            filesystem.rm(object_path)
    except (OSError, ValueError):
        log.warning("could not remove the temporary object %s", object_path)
