"""The identity of a model: made once by the registry, passed down as one object.

A :class:`ModelRef` names a model artefact (stage, name, version, sha256)
and says where its bytes are (``store``). Every result a stage makes is
stored under ``ref.ref`` (``"name:version"``) with ``ref.sha256`` beside it;
no stage derives its own identity from a file's name or metadata.

A :class:`ShippedModel` declares a model that ships inside a Python
package (survey-classifier's own models, or a plugin's): the registry seeds
one entry per shipped model when a database is created or upgraded, so
``models list`` shows what runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from importlib.resources import files
from pathlib import Path, PurePosixPath
from typing import Any

__all__ = ["ModelRef", "ShippedModel", "DATABASE_STORE", "PACKAGE_SCHEME"]

#: ``store`` of an artefact whose bytes are in the results database (``artefacts`` table).
DATABASE_STORE = "database"
#: ``store`` prefix of an artefact shipped inside an installed package: ``package:MODULE/RESOURCE``.
PACKAGE_SCHEME = "package:"

_MESSAGE_KEYS = ("stage", "name", "version", "sha256", "filename", "store", "registered")


@dataclass(frozen=True)
class ModelRef:
    """One model artefact: who it is and where its bytes are.

    Parameters
    ----------
    stage : str
        The stage that runs it.
    name, version : str
        Its registry identity; ``name:version`` is stored with every result.
    sha256 : str
        Hex sha256 of the artefact's bytes; checked before every load.
    filename : str
        The artefact's file name (``model.onnx``, ``som.npz``...).
    store : str
        Where the bytes are: :data:`DATABASE_STORE`, ``package:MODULE/RESOURCE``
        (shipped with an installed package), or an fsspec URL (``s3://...``,
        ``file:///...``).
    registered : bool
        False for a file used directly, outside the registry: its ``ref`` is
        then ``file:FILENAME@SHA256[:12]``.
    companions : tuple of (filename, sha256, store)
        The files registered with the artefact (a map's ``neurons.json``:
        the stage's ``model_companions``), each kept and verified as the
        artefact is; :meth:`companion` gives the reference of one. Not part
        of the model's identity, nor of a task message (workers run the
        artefact alone).
    path : Path or None
        A local, verified copy (set by :func:`survey_classifier.artefacts.fetch`);
        belongs to this process, never sent anywhere.
    """

    stage: str
    name: str
    version: str
    sha256: str
    filename: str
    store: str
    registered: bool = True
    companions: tuple[tuple[str, str, str], ...] = field(default=(), compare=False, repr=False)
    path: Path | None = field(default=None, compare=False, repr=False)

    @property
    def ref(self) -> str:
        """``"name:version"``, the ``model_ref`` stored with each result."""
        if self.registered:
            return f"{self.name}:{self.version}"
        return f"file:{self.filename}@{self.sha256[:12]}"

    def at(self, path: str | Path) -> ModelRef:
        """The same reference with its local, verified copy at ``path``."""
        return replace(self, path=Path(path))

    def companion(self, filename: str) -> ModelRef | None:
        """The file ``filename`` registered with this model, as a reference of its own (None without one).

        It keeps the model's stage, name and version, with the file's own
        sha256, name and store, so :func:`survey_classifier.artefacts.fetch`
        fetches and verifies it as it does the artefact.
        """
        for name, sha256, store in self.companions:
            if name == filename:
                return replace(self, sha256=sha256, filename=name, store=store, companions=(), path=None)
        return None

    def to_message(self) -> dict[str, Any]:
        """JSON-ready form, as a task message carries it (no local path)."""
        return {key: getattr(self, key) for key in _MESSAGE_KEYS}

    @classmethod
    def from_message(cls, message: Mapping[str, Any]) -> ModelRef:
        """Rebuild a reference from :meth:`to_message`'s output."""
        missing = [key for key in _MESSAGE_KEYS if key not in message]
        if missing:
            msg = f"a model reference needs {list(_MESSAGE_KEYS)}; {dict(message)} lacks {missing}"
            raise ValueError(msg)
        return cls(**{key: message[key] for key in _MESSAGE_KEYS})

    def __str__(self) -> str:
        return f"{self.ref} (stage {self.stage}, sha256 {self.sha256[:12]}…)"


@dataclass(frozen=True)
class ShippedModel:
    """A model that ships inside an installed package.

    Parameters
    ----------
    name, version : str
        Its registry identity.
    package : str
        Importable package holding the file (``survey_classifier``, ``sc_first4``).
    resource : str
        Path of the artefact inside the package (``models/fr-cnn/model.onnx``).
    sha256 : str
        The artefact's sha256, as released; a different file is refused.
    card : str, optional
        Path of its model card inside the package.
    metrics : mapping, optional
        Headline figures from the card, stored in the registry.
    companions : mapping, optional
        ``filename -> sha256`` of the files shipped beside the artefact that
        its stage keeps with its models (``Stage.model_companions``: a map's
        ``neurons.json``); recorded with it when it is registered, and
        verified like it when fetched.
    """

    name: str
    version: str
    package: str
    resource: str
    sha256: str
    card: str | None = None
    metrics: Mapping[str, float] | None = None
    companions: Mapping[str, str] | None = None

    def path(self) -> Path:
        """The artefact in the installed package."""
        return Path(str(files(self.package).joinpath(self.resource)))

    def card_text(self) -> str | None:
        if self.card is None:
            return None
        return files(self.package).joinpath(self.card).read_text(encoding="utf-8")

    def ref(self, stage: str) -> ModelRef:
        """The registry reference of this model for ``stage``."""
        return ModelRef(
            stage=stage,
            name=self.name,
            version=self.version,
            sha256=self.sha256,
            filename=Path(self.resource).name,
            store=f"{PACKAGE_SCHEME}{self.package}/{self.resource}",
            companions=tuple(
                (filename, sha256, f"{PACKAGE_SCHEME}{self.package}/{PurePosixPath(self.resource).with_name(filename)}")
                for filename, sha256 in (self.companions or {}).items()
            ),
        )
