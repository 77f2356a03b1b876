"""The one preprocessing function shared by training and inference.

Every model stores the :class:`PreprocessConfig` it was trained with (as a
dict in its metadata), and inference rebuilds the same configuration from it,
so a model never sees pixels prepared differently from those it learned on.

The default recipe follows the MiraBest preparation (Porter & Scaife):

1. background: the sigma-clipped median of the finite pixels is subtracted
   and the sigma-clipped standard deviation is the noise estimate (3 sigma,
   5 passes: the statistics of ``astropy.stats.sigma_clipped_stats``,
   computed by :func:`survey_classifier.stats.clipped_background`);
2. clipping: pixels below ``clip_sigma`` times the noise are set to zero
   (blank pixels too);
3. crop: the central ``crop`` x ``crop`` pixels are kept (optional);
4. resize: flux-conserving area resampling to ``size`` x ``size``;
5. scaling: ``"minmax"`` maps the image to [0, 1] (an image with nothing
   above the threshold stays all zeros), ``"none"`` keeps Jy/beam.

Options for morphology (self-organising maps; Galvin et al. 2019, Mostert
et al. 2021), all off by default, so the default recipe is unchanged:

* ``centre="emission"``: the window is centred on the flux-weighted
  centroid of the source's islands (found as the ``measure`` stage finds
  them: :func:`survey_classifier.islands.kept_islands`) instead of the
  cutout centre;
* ``extent``: the side of the window: ``"fixed"`` (``crop`` pixels, or the
  whole image), ``"arcsec"`` (``crop_arcsec``, needs the pixel scale) or
  ``"islands"``: the source's own scale, the radius about the centre that
  holds ``source_flux_fraction`` of the islands' flux, made to span
  ``source_fill`` of the window (at least ``crop_min`` pixels). Such a
  window is resampled by :func:`survey_classifier._source_window.resample_window`
  and padded with zeros past the image edge;
* ``islands_only``: pixels outside the kept islands are set to zero;
* ``island_reach``: only the islands that come within that many input pixels
  of the cutout centre (the catalogue position) are the source, or the
  nearest island when none does (Galvin et al. 2019 kept the islands in a
  central region); the others, unrelated sources in the field, are left out
  of the centre and the window and set to zero;
* ``circle_diameter``: pixels (of the output) outside the centred circle of
  that diameter are set to zero, PINK's circular region;
* ``stretch``: ``"sqrt"`` takes the square root of the (clipped,
  non-negative) image, ``"log"`` ``log(1 + S / noise)``, before the scaling,
  so that faint lobes and jets weigh more against a bright core;
  ``"square"`` squares it, so that the brightest parts (cores, hot spots)
  weigh more against faint emission;
* ``scaling="peak"`` divides by the brightest pixel, ``"total"`` by the
  summed flux (after the circle), so the image sums to 1.

Bump :data:`PREPROCESS_VERSION` whenever the arithmetic changes; a model
whose metadata names another version is refused.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from functools import lru_cache

import numpy as np

from survey_classifier._source_window import emission_centre, enclosing_radius, reaching_islands, resample_window
from survey_classifier.checksum import sha256_bytes
from survey_classifier.islands import kept_islands
from survey_classifier.stats import clipped_background

__all__ = [
    "PREPROCESS_VERSION",
    "PreprocessConfig",
    "empty_preparation_reason",
    "preprocess",
    "resample_matrix",
]

PREPROCESS_VERSION = 1

_BACKGROUNDS = ("sigma_clip", "none")
_SCALINGS = ("minmax", "peak", "total", "none")
_CENTRES = ("image", "emission")
_STRETCHES = ("linear", "sqrt", "log", "square")
_EXTENTS = ("fixed", "arcsec", "islands")


@dataclass(frozen=True)
class PreprocessConfig:
    """Parameters of :func:`preprocess`; they travel with every model.

    Parameters
    ----------
    size : int
        Output image side in pixels.
    crop : int or None
        Side of the central region kept before resizing; None keeps all.
    background : {"sigma_clip", "none"}
        Background and noise estimate.
    clip_sigma : float or None
        Pixels below this many sigma are set to zero; None disables clipping.
    scaling : {"minmax", "peak", "total", "none"}
        Final intensity scaling.
    version : int
        Version of the preprocessing arithmetic.
    centre : {"image", "emission"}
        Centre of the window: the cutout's, or the flux-weighted centroid
        of the kept islands (the cutout's when there is none).
    extent : {"fixed", "arcsec", "islands"}
        Side of the window: ``crop`` pixels (None: the whole image),
        ``crop_arcsec``, or the source's own scale from its islands.
    crop_arcsec : float or None
        Window side in arcsec for ``extent="arcsec"``.
    source_flux_fraction : float
        ``extent="islands"``: the source radius holds this fraction of the
        islands' flux about the centre.
    source_fill : float
        ``extent="islands"``: the source diameter spans this fraction of the
        window side.
    crop_min : float
        ``extent="islands"``: smallest window side in input pixels (compact
        sources are not blown up beyond it).
    islands_only : bool
        Set every pixel outside the kept islands to zero.
    island_reach : float or None
        Keep only the islands with a pixel within this distance (input
        pixels) of the cutout centre, or the nearest one when none is; zero
        the others. None keeps every island.
    island_sigma : tuple of float
        Flood and seed levels of the islands in units of the noise (those
        of the ``measure`` stage).
    circle_diameter : float or None
        Zero the output outside the centred circle of this diameter (pixels).
    stretch : {"linear", "sqrt", "log", "square"}
        Intensity transform before the scaling (``"log"``: ``log(1 + S / noise)``).
    """

    size: int = 64
    crop: int | None = None
    background: str = "sigma_clip"
    clip_sigma: float | None = 3.0
    scaling: str = "minmax"
    version: int = PREPROCESS_VERSION
    centre: str = "image"
    extent: str = "fixed"
    crop_arcsec: float | None = None
    source_flux_fraction: float = 0.9
    source_fill: float = 0.8
    crop_min: float = 16.0
    islands_only: bool = False
    island_reach: float | None = None
    island_sigma: tuple[float, float] = (3.0, 5.0)
    circle_diameter: float | None = None
    stretch: str = "linear"

    def __post_init__(self):
        if self.version != PREPROCESS_VERSION:
            msg = (
                f"preprocessing version {self.version} is not supported by this "
                f"survey-classifier (it implements version {PREPROCESS_VERSION}); "
                "retrain the model or install the release that made it"
            )
            raise ValueError(msg)
        if self.background not in _BACKGROUNDS:
            msg = f"background must be one of {_BACKGROUNDS}, got {self.background!r}"
            raise ValueError(msg)
        if self.scaling not in _SCALINGS:
            msg = f"scaling must be one of {_SCALINGS}, got {self.scaling!r}"
            raise ValueError(msg)
        if int(self.size) < 2:
            msg = f"size must be at least 2 pixels, got {self.size}"
            raise ValueError(msg)
        if self.crop is not None and int(self.crop) < 2:
            msg = f"crop must be None or at least 2 pixels, got {self.crop}"
            raise ValueError(msg)
        self._validate_morphology()

    def _validate_morphology(self):
        object.__setattr__(self, "island_sigma", tuple(float(level) for level in self.island_sigma))
        if self.centre not in _CENTRES:
            msg = f"centre must be one of {_CENTRES}, got {self.centre!r}"
            raise ValueError(msg)
        if self.stretch not in _STRETCHES:
            msg = f"stretch must be one of {_STRETCHES}, got {self.stretch!r}"
            raise ValueError(msg)
        if self.stretch != "linear" and self.clip_sigma is None:
            msg = f"stretch={self.stretch!r} needs clipping (clip_sigma) to keep the image non-negative"
            raise ValueError(msg)
        if self.stretch == "log" and self.background != "sigma_clip":
            msg = "stretch='log' needs background='sigma_clip' (the noise)"
            raise ValueError(msg)
        if self.extent not in _EXTENTS:
            msg = f"extent must be one of {_EXTENTS}, got {self.extent!r}"
            raise ValueError(msg)
        if (self.extent == "arcsec") != (self.crop_arcsec is not None):
            msg = f"crop_arcsec is needed with extent='arcsec' and only then, got {self.crop_arcsec!r}"
            raise ValueError(msg)
        if self.crop_arcsec is not None and not self.crop_arcsec > 0:
            msg = f"crop_arcsec must be positive, got {self.crop_arcsec}"
            raise ValueError(msg)
        if self.extent != "fixed" and self.crop is not None:
            msg = f"crop ({self.crop} pixels) applies to extent='fixed' only, not {self.extent!r}"
            raise ValueError(msg)
        if not (0 < self.source_flux_fraction <= 1 and 0 < self.source_fill <= 1 and self.crop_min >= 2):
            msg = (
                "source_flux_fraction and source_fill must lie in (0, 1] and crop_min be at least 2 "
                f"pixels, got {self.source_flux_fraction}, {self.source_fill}, {self.crop_min}"
            )
            raise ValueError(msg)
        if self.island_reach is not None and not self.island_reach >= 0:
            msg = f"island_reach must be None or a distance >= 0 input pixels, got {self.island_reach}"
            raise ValueError(msg)
        flood, seed = self.island_sigma if len(self.island_sigma) == 2 else (0.0, -1.0)
        if not 0 < flood <= seed:
            msg = f"island_sigma must be (flood, seed) with 0 < flood <= seed, got {self.island_sigma}"
            raise ValueError(msg)
        if self.uses_islands and self.background != "sigma_clip":
            msg = (
                "centre='emission', extent='islands', islands_only and island_reach need "
                "background='sigma_clip' (the noise)"
            )
            raise ValueError(msg)
        if self.circle_diameter is not None and not 0 < self.circle_diameter <= self.size * np.sqrt(2):
            msg = f"circle_diameter must be positive and fit the {self.size}-pixel image, got {self.circle_diameter}"
            raise ValueError(msg)

    @property
    def uses_islands(self) -> bool:
        """Whether the preparation finds the source's islands."""
        return (
            self.centre == "emission" or self.extent == "islands" or self.islands_only or self.island_reach is not None
        )

    def to_dict(self) -> dict:
        values = asdict(self)
        values["island_sigma"] = list(self.island_sigma)
        return values

    @classmethod
    def from_dict(cls, values: dict) -> PreprocessConfig:
        known = {name: values[name] for name in cls.__dataclass_fields__ if name in values}
        if "island_sigma" in known:
            known["island_sigma"] = tuple(known["island_sigma"])
        unknown = sorted(set(values) - set(known))
        if unknown:
            msg = f"unknown preprocessing parameters {unknown}"
            raise ValueError(msg)
        return cls(**known)

    def digest(self) -> str:
        """Short stable hash of the parameters (cache key, model metadata)."""
        return _digest(self)


@lru_cache(maxsize=256)
def _digest(config: PreprocessConfig) -> str:
    text = json.dumps(config.to_dict(), sort_keys=True)
    return sha256_bytes(text.encode())[:16]


@lru_cache(maxsize=64)
def resample_matrix(n_in: int, n_out: int) -> np.ndarray:
    """Matrix ``R`` (n_out x n_in) of area weights: ``R @ row`` averages bins.

    Output pixel ``i`` covers input coordinates ``[i, i+1) * n_in / n_out``;
    each input pixel contributes the fraction of it that the output pixel
    covers, so a constant image stays constant and flux density per pixel
    is averaged, not sampled.
    """
    edges = np.arange(n_out + 1) * (n_in / n_out)
    lo = edges[:-1, None]
    hi = edges[1:, None]
    pixel = np.arange(n_in)[None, :]
    overlap = np.clip(np.minimum(hi, pixel + 1) - np.maximum(lo, pixel), 0.0, None)
    return (overlap / overlap.sum(axis=1, keepdims=True)).astype(np.float32)


def _central_crop(image: np.ndarray, crop: int) -> np.ndarray:
    ny, nx = image.shape
    if crop > min(ny, nx):
        msg = f"crop of {crop} pixels is larger than the {ny}x{nx} image"
        raise ValueError(msg)
    y0 = (ny - crop) // 2
    x0 = (nx - crop) // 2
    return image[y0 : y0 + crop, x0 : x0 + crop]


def preprocess(
    image: np.ndarray, config: PreprocessConfig | None = None, *, pixel_scale_arcsec: float | None = None
) -> np.ndarray:
    """Prepare one 2-D image for a model (see the module docstring).

    Parameters
    ----------
    image : ndarray, shape (ny, nx)
        Pixel values in their physical unit; NaN marks blank pixels.
    config : PreprocessConfig, optional
        Defaults to ``PreprocessConfig()``.
    pixel_scale_arcsec : float, optional
        Pixel side in arcsec; needed by ``extent="arcsec"`` only.

    Returns
    -------
    ndarray, shape (size, size), float32

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(1)
    >>> image = rng.normal(0.0, 1e-4, (150, 150)).astype("float32")
    >>> image[70:80, 70:80] += 0.01
    >>> out = preprocess(image, PreprocessConfig(size=32))
    >>> out.shape, float(out.max())
    ((32, 32), 1.0)
    """
    config = config or PreprocessConfig()
    image = np.asarray(image, dtype=np.float32)
    if image.ndim != 2:
        msg = f"preprocess expects a 2-D image, got shape {image.shape}"
        raise ValueError(msg)
    finite = np.isfinite(image)
    if not finite.any():
        msg = "image has no finite pixels (all blank or NaN)"
        raise ValueError(msg)
    work = np.where(finite, image, np.float32(0.0))
    kept = None
    if config.background == "sigma_clip":
        median, std = clipped_background(image[finite], sigma=3.0, maxiters=5)
        work = np.where(finite, work - np.float32(median), np.float32(0.0))
        if config.uses_islands:
            flood, seed = config.island_sigma
            kept, labels, _ = kept_islands(work, std, threshold_sigma=flood, seed_sigma=seed)
            if config.island_reach is not None:
                reaching = reaching_islands(kept, labels, float(config.island_reach))
                work[kept & ~reaching] = 0.0
                kept = reaching
            window = _source_window(work, kept, config, pixel_scale_arcsec)
        if config.clip_sigma is not None:
            work[work < config.clip_sigma * std] = 0.0
        if config.islands_only:
            work[~kept] = 0.0
    elif config.clip_sigma is not None:
        work[work < 0.0] = 0.0
    size = int(config.size)
    if config.extent == "fixed" and config.centre == "image":
        if config.crop is not None:
            work = _central_crop(work, int(config.crop))
        ny, nx = work.shape
        if (ny, nx) != (size, size):
            work = resample_matrix(ny, size) @ work @ resample_matrix(nx, size).T
    else:
        if kept is None:  # extent="arcsec" about the cutout centre
            window = _source_window(work, None, config, pixel_scale_arcsec)
        work = resample_window(work, *window, size)
    if config.circle_diameter is not None:
        work = np.where(_circle(size, float(config.circle_diameter)), work, np.float32(0.0))
    if config.stretch == "sqrt":
        work = np.sqrt(np.maximum(work, np.float32(0.0)))
    elif config.stretch == "log":
        work = np.log1p(np.maximum(work, np.float32(0.0)) / np.float32(std))
    elif config.stretch == "square":
        work = np.square(np.maximum(work, np.float32(0.0)))
    return np.ascontiguousarray(_scaled(work, config.scaling), dtype=np.float32)


def empty_preparation_reason(image: np.ndarray, config: PreprocessConfig, *, unit: str | None = None) -> str:
    """Why ``config`` prepares ``image`` as an all-zero image, in words an astronomer can act on.

    For a preparation built on islands that is a source too faint for it: no
    island reaches the seed level, so there is nothing to centre the window
    on, to size it by or (``islands_only``) to keep. A map placing such an
    empty image would place nothing (three of the 1027 MiraBest cutouts
    with som-mirabest 3's preparation: diffuse emission peaking at 4.3 to
    4.8 sigma). ``unit`` is the image's (``BUNIT``), used in the noise figure.

    >>> rng = np.random.default_rng(2)
    >>> faint = rng.normal(0.0, 1e-4, (64, 64)).astype("float32")
    >>> config = PreprocessConfig(centre="image", extent="islands", islands_only=True, scaling="peak")
    >>> float(np.abs(preprocess(faint, config)).max())
    0.0
    >>> empty_preparation_reason(faint, config, unit="Jy/beam")[:60]
    'no source to place: no island of emission reaches the 5 sigm'
    """
    finite = np.isfinite(image)
    if config.background != "sigma_clip" or not config.uses_islands or not finite.any():
        return "the prepared image is empty (no pixel above zero after preprocessing): nothing to place"
    median, noise = clipped_background(image[finite], sigma=3.0, maxiters=5)
    peak = (float(np.max(image[finite])) - float(median)) / float(noise) if noise > 0 else float("nan")
    seed = config.island_sigma[1]
    noise_text = _in_unit(float(noise), unit)
    return (
        f"no source to place: no island of emission reaches the {seed:g} sigma seed level of the "
        f"preparation (brightest pixel {peak:.1f} sigma above the background, noise {noise_text}), so "
        f"the prepared image is empty"
    )


def _in_unit(value: float, unit: str | None) -> str:
    """``value`` of ``unit`` (a FITS ``BUNIT``) as an astronomer writes it: mJy/beam for a brightness in Jy/beam."""
    if not unit:
        return f"{value:.3g}"
    from astropy import units

    try:  # surveys write JY/BEAM, Jy/beam, JY/BM...: read it case-blind
        brightness = units.Unit(unit.lower().replace("jy", "Jy").replace("/bm", "/beam"), parse_strict="raise")
        return f"{(value * brightness).to_value(units.mJy / units.beam):.3g} mJy/beam"
    except (ValueError, units.UnitsError):
        return f"{value:.3g} {unit}"


def _scaled(work, scaling):
    if scaling == "minmax":
        low = work.min()
        span = work.max() - low
        return (work - low) / span if span > 0 else np.zeros_like(work)
    if scaling in ("peak", "total"):
        norm = work.max() if scaling == "peak" else work.sum(dtype=np.float64)
        return work / np.float32(norm) if norm > 0 else np.zeros_like(work)
    return work


@lru_cache(maxsize=16)
def _circle(size: int, diameter: float) -> np.ndarray:
    """True on the pixels whose centres lie inside the centred circle of ``diameter``."""
    offsets = np.arange(size) - (size - 1) / 2.0
    inside = offsets[:, None] ** 2 + offsets[None, :] ** 2 <= (diameter / 2.0) ** 2
    inside.flags.writeable = False
    return inside


def _source_window(signal, kept, config, pixel_scale_arcsec):
    """Centre ``(x, y)`` and side (input pixels) of the window for ``config``."""
    ny, nx = signal.shape
    centre = (nx / 2.0, ny / 2.0)
    if config.centre == "emission":
        centre = emission_centre(signal, kept) or centre
    if config.extent == "fixed":
        return centre, float(config.crop or min(ny, nx))
    if config.extent == "arcsec":
        if not pixel_scale_arcsec or not pixel_scale_arcsec > 0:
            msg = (
                f"extent='arcsec' ({config.crop_arcsec} arcsec) needs the pixel scale, and this image "
                "has none (no celestial WCS)"
            )
            raise ValueError(msg)
        return centre, float(config.crop_arcsec) / float(pixel_scale_arcsec)
    radius = enclosing_radius(signal, kept, centre, config.source_flux_fraction)
    if radius is None:
        return centre, float(min(ny, nx))
    return centre, max(2.0 * radius / config.source_fill, float(config.crop_min))
