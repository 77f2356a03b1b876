"""Inputs named by fsspec URLs: object stores (``s3://``, ``gs://``), ``https://``, ``file://``.

Every input of a run (cutout files, catalogues, mosaic tiles) may be a URL
instead of a local path. Local paths and ``file://`` URLs are read from the
local filesystem directly (mosaic tiles memory-mapped); other URLs go
through :mod:`fsspec` and the filesystem package of their scheme (``s3fs``
for ``s3://``, ``gcsfs`` for ``gs://``, ``aiohttp`` for ``https://``), which
must be installed where the run is prepared and on every worker.

Credentials and endpoints are those of the storage library: for S3 the
usual ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY`` (or a profile), and
``AWS_ENDPOINT_URL_S3`` or ``FSSPEC_S3_ENDPOINT_URL`` for an S3-compatible
server (MinIO, Ceph, moto); fsspec reads any ``FSSPEC_<SCHEME>_<OPTION>``
variable as an option of that scheme's filesystem.

Reads are ranges where the format allows: :func:`read_range` asks the
store for the bytes it needs (an HTTP range request), so a worker cutting
stamps out of a 1 GB tile fetches a few MB of rows, not the tile.
"""

from __future__ import annotations

import glob
import io
import os
import posixpath
from dataclasses import dataclass

from survey_classifier.errors import SurveyClassifierError

__all__ = [
    "RemoteInputError",
    "FileEntry",
    "is_url",
    "local_path",
    "join",
    "parent",
    "basename",
    "filesystem",
    "file_entry",
    "list_files",
    "read_bytes",
    "read_range",
    "open_binary",
    "write_bytes",
]

_GLOB_CHARACTERS = frozenset("*?[")


class RemoteInputError(SurveyClassifierError):
    """An input URL cannot be listed or read (no such object, no access, no filesystem package)."""


@dataclass(frozen=True)
class FileEntry:
    """A file found by listing: its path or URL, its size, and a token that changes when it does.

    ``version`` is the modification time in nanoseconds for a local file,
    the ETag (or last-modified time) the store reports for an object.
    """

    url: str
    size: int
    version: str


def is_url(path) -> bool:
    """Whether ``path`` names an fsspec location (``scheme://...``) rather than a local path."""
    return "://" in str(path)


def local_path(path) -> str | None:
    """The local filesystem path of ``path`` (a plain path or a ``file://`` URL); None for a remote URL."""
    text = os.fspath(path) if not isinstance(path, str) else path
    if text.startswith("file://"):
        return text[len("file://"):]
    return None if is_url(text) else text


def join(base: str, name: str) -> str:
    """``name`` taken relative to the folder ``base`` (a path or a URL); absolute names and URLs as given."""
    if is_url(name):
        return name
    if is_url(base):
        if name.startswith("/"):  # from the root of the bucket (of the filesystem, for file://)
            return _scheme(base) + (name if base.startswith("file://") else name.lstrip("/"))
        return _scheme(base) + posixpath.normpath(posixpath.join(_path_part(base), name))
    return os.path.normpath(os.path.join(base, os.path.expanduser(name)))


def parent(path: str) -> str:
    """The folder holding ``path`` (a path or a URL)."""
    if is_url(path):
        return _scheme(path) + posixpath.dirname(_path_part(path).rstrip("/"))
    return os.path.dirname(os.path.abspath(path))


def basename(path: str) -> str:
    """The file name at the end of ``path`` (a path or a URL)."""
    return posixpath.basename(str(path).rstrip("/")) if is_url(path) else os.path.basename(path)


def _scheme(url: str) -> str:
    """``"s3://"`` of ``"s3://bucket/key"``."""
    return url.partition("://")[0] + "://"


def _path_part(url: str) -> str:
    return url.partition("://")[2]


def filesystem(url: str):
    """The fsspec filesystem of ``url`` and the path inside it."""
    try:
        import fsspec
    except ImportError as exc:  # pragma: no cover - fsspec is a dependency
        msg = f"reading {url} needs fsspec: pip install fsspec"
        raise RemoteInputError(msg) from exc
    try:
        return fsspec.core.url_to_fs(url)
    except (ImportError, ValueError) as exc:
        scheme = url.partition("://")[0]
        hint = {"s3": "s3fs", "gs": "gcsfs", "gcs": "gcsfs", "http": "aiohttp", "https": "aiohttp"}.get(scheme)
        extra = f" (pip install {hint})" if hint else ""
        msg = f"cannot open {url}: no filesystem for the scheme {scheme!r}{extra}: {exc}"
        raise RemoteInputError(msg) from exc


def _describe(url: str, exc: Exception) -> str:
    if isinstance(exc, FileNotFoundError):
        return f"{url}: no such file or object"
    if isinstance(exc, PermissionError):
        return f"{url}: access denied ({exc})"
    return f"{url}: {type(exc).__name__}: {' '.join(str(exc).split())}"


def _version(info: dict) -> str:
    for key in ("ETag", "etag", "LastModified", "last_modified", "mtime", "created"):
        value = info.get(key)
        if value is not None:
            return str(value).strip('"')
    return ""


def file_entry(path: str) -> FileEntry:
    """Size and version token of one file or object.

    Raises
    ------
    FileNotFoundError
        There is no such file or object.
    RemoteInputError
        The store cannot be reached or refuses access.
    """
    local = local_path(path)
    if local is not None:
        status = os.stat(local)
        return FileEntry(url=path, size=status.st_size, version=str(status.st_mtime_ns))
    fs, inner = filesystem(path)
    try:
        info = fs.info(inner)
    except FileNotFoundError:
        raise
    except Exception as exc:  # every store has its own exception zoo
        raise RemoteInputError(_describe(path, exc)) from exc
    return FileEntry(url=path, size=int(info.get("size") or 0), version=_version(info))


def list_files(spec: str, suffixes: tuple[str, ...]) -> list[FileEntry]:
    """Files named by ``spec``: a folder (its files ending in ``suffixes``), a glob, or one file.

    ``spec`` is a local path or a URL. Sorted by name; not recursive.
    """
    local = local_path(spec)
    as_url = spec.startswith("file://")
    if local is not None:
        if os.path.isdir(local):
            names = sorted(e.path for e in os.scandir(local) if e.is_file() and e.name.lower().endswith(suffixes))
        elif _GLOB_CHARACTERS.intersection(local):
            names = sorted(n for n in glob.glob(local) if os.path.isfile(n))
        elif os.path.isfile(local):
            names = [local]
        else:
            msg = f"{spec}: no such file or folder"
            raise RemoteInputError(msg)
        entries = []
        for name in names:
            status = os.stat(name)
            url = f"file://{os.path.abspath(name)}" if as_url else os.path.abspath(name)
            entries.append(FileEntry(url=url, size=status.st_size, version=str(status.st_mtime_ns)))
        return entries
    fs, inner = filesystem(spec)
    try:
        if _GLOB_CHARACTERS.intersection(inner):
            found = fs.glob(inner, detail=True)
        elif fs.isdir(inner):
            found = {
                info["name"]: info
                for info in fs.ls(inner, detail=True)
                if info.get("type") != "directory" and info["name"].lower().endswith(suffixes)
            }
        else:
            found = {inner: fs.info(inner)}
    except FileNotFoundError:
        msg = f"{spec}: no such file, folder or object"
        raise RemoteInputError(msg) from None
    except Exception as exc:
        raise RemoteInputError(_describe(spec, exc)) from exc
    return [
        FileEntry(url=fs.unstrip_protocol(name), size=int(info.get("size") or 0), version=_version(info))
        for name, info in sorted(found.items())
        if info.get("type") != "directory"
    ]


def read_bytes(path: str, *, max_bytes: int | None = None) -> bytes:
    """The whole content of a (small) file or object, refused beyond ``max_bytes``.

    Raises
    ------
    FileNotFoundError
        No such file or object.
    ValueError
        It is larger than ``max_bytes`` (the message gives its size).
    RemoteInputError
        The store cannot be read.
    """
    local = local_path(path)
    if local is not None:
        with open(local, "rb") as stream:
            return stream.read()
    fs, inner = filesystem(path)
    try:
        if max_bytes is None:
            return fs.cat_file(inner)
        content = fs.cat_file(inner, start=0, end=max_bytes + 1)  # one request, never more than the limit
        if len(content) > max_bytes:
            msg = f"{fs.size(inner)} bytes"
            raise ValueError(msg)
        return content
    except (FileNotFoundError, ValueError):
        raise
    except Exception as exc:
        raise RemoteInputError(_describe(path, exc)) from exc


def read_range(path: str, start: int, end: int) -> bytes:
    """Bytes ``[start, end)`` of a file or object: one range request to a store."""
    local = local_path(path)
    if local is not None:
        with open(local, "rb") as stream:
            stream.seek(start)
            return stream.read(end - start)
    fs, inner = filesystem(path)
    try:
        return fs.cat_file(inner, start=start, end=end)
    except FileNotFoundError:
        raise
    except Exception as exc:
        raise RemoteInputError(_describe(path, exc)) from exc


def open_binary(path: str):
    """A binary file object over the whole content (local file, or the object's bytes in memory)."""
    local = local_path(path)
    if local is not None:
        return open(local, "rb")
    return io.BytesIO(read_bytes(path))


def write_bytes(path: str, content: bytes) -> None:
    """Write a whole file or object (creating a local folder when needed)."""
    local = local_path(path)
    if local is not None:
        os.makedirs(os.path.dirname(os.path.abspath(local)), exist_ok=True)
        with open(local, "wb") as handle:
            handle.write(content)
        return
    fs, inner = filesystem(path)
    try:
        fs.pipe_file(inner, content)
    except Exception as exc:
        raise RemoteInputError(_describe(path, exc)) from exc
