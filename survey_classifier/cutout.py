"""The in-memory cutout handed from the reader to the stages."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from survey_classifier.columns import Column

__all__ = ["CutoutSource", "Cutout"]


@dataclass(frozen=True)
class CutoutSource:
    """Where a cutout comes from, before it is read.

    Parameters
    ----------
    path : str
        File path of the FITS (or image) file.
    catalogue_id : str or None
        Identifier from the input catalogue, when the input was a table.
    ra_deg, dec_deg : float or None
        Position given by the catalogue (the WCS centre is used when absent).
    extra : dict
        Other catalogue columns, carried through to the results database.
    extra_columns : dict
        ``{name: Column}``: unit, UCD and description of each ``extra``
        column as the catalogue gives them (recorded when a run is
        registered; not part of the source's identity).
    """

    path: str
    catalogue_id: str | None = None
    ra_deg: float | None = None
    dec_deg: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    extra_columns: dict[str, Column] = field(default_factory=dict, compare=False, repr=False)


@dataclass
class Cutout:
    """A cutout read from disk: pixels, mask, position and provenance.

    ``data`` holds the image in its physical unit (Jy/beam for radio surveys)
    as float32 with NaN where the pixel is blank; ``mask`` is True there.
    Angles are in degrees and arcseconds, as the attribute names say.
    """

    source: CutoutSource
    hdu: int
    data: np.ndarray
    sha256: str
    ra_deg: float | None = None
    dec_deg: float | None = None
    pixel_scale_arcsec: float | None = None
    beam_major_arcsec: float | None = None
    beam_minor_arcsec: float | None = None
    bunit: str | None = None
    wcs: Any = None
    warnings: list[str] = field(default_factory=list)
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: ``{stage name: (stage version, model_ref, model_sha256)}`` of each entry of ``results``
    provenance: dict[str, tuple[str, str, str | None]] = field(default_factory=dict)
    _preprocessed: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    @property
    def path(self) -> str:
        return self.source.path

    @property
    def mask(self) -> np.ndarray:
        """Boolean array, True where the pixel is blank (NaN or BLANK)."""
        return ~np.isfinite(self.data)

    def preprocessed(self, config) -> np.ndarray:
        """The image after :func:`survey_classifier.preprocess.preprocess`.

        Cached per configuration, so stages that share preprocessing
        parameters share the work.
        """
        from survey_classifier.preprocess import preprocess

        key = config.digest()
        if key not in self._preprocessed:
            self._preprocessed[key] = preprocess(self.data, config, pixel_scale_arcsec=self.pixel_scale_arcsec)
        return self._preprocessed[key]
