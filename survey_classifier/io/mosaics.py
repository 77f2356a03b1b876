"""Cutouts cut from survey mosaics on the fly: their identity, and the cutting.

A catalogue position cut from a mosaic tile is a cutout like any file: it
has a path, the key of its row in the results database, that says
everything a worker needs to make it again::

    mosaic:TILE[|TILE2|...]#RA,DEC,SIZE

``TILE`` is the path or URL of the tile the cutout is cut from, the one of
the collection where the position lies farthest from an edge (chosen by
:mod:`survey_classifier.footprints` when the run is prepared); further
tiles, separated by ``|``, fill the part of a cutout that runs over the
edge of the first (a source that straddles tiles). ``RA,DEC`` is the
catalogue position in degrees (7 decimals, 0.4 mas) and ``SIZE`` the side
of the square cutout, ``150px`` or ``270arcsec``. For example
``mosaic:/data/first/14000+32270E.fits#140.1234567,+32.4567890,270arcsec``.

:func:`read_mosaic_cutout` cuts it: the box of the first tile's own pixel
grid centred on the position (the pixels and WCS that
:class:`astropy.nddata.Cutout2D` gives in ``partial`` mode, from the same
:func:`astropy.nddata.utils.overlap_slices`; no resampling), in the
physical unit of the tile with NaN where it is blank. Pixels beyond its
edge are taken from the further tiles: copied where a tile shares the first
one's pixel grid (tiles cut from one mosaic), interpolated bilinearly where
its projection differs. The cutout carries the tile's beam and unit, a WCS
shifted to its own pixels, and its origin (tile, pixel position).

Refused, as a :class:`~survey_classifier.errors.CutoutReadError` stored
against the cutout under the stage ``read``: a position off the tile (off
every tile of the collection: the planner names the nearest), on a blank
(NaN) pixel, or so close to an edge that part of the cutout lies outside
every tile.
"""

from __future__ import annotations

import io
import math
import re
from dataclasses import dataclass

import numpy as np

from survey_classifier.checksum import sha256_bytes
from survey_classifier.cutout import Cutout, CutoutSource
from survey_classifier.errors import CutoutError, CutoutLimitError, CutoutReadError, SurveyClassifierError
from survey_classifier.io import remote
from survey_classifier.io.tiles import TileCache, TileHeader

__all__ = [
    "MOSAIC_SCHEME",
    "CutoutSize",
    "MosaicCutoutSpec",
    "is_mosaic_path",
    "read_mosaic_cutout",
    "write_cutout_fits",
]

MOSAIC_SCHEME = "mosaic:"
_SIZE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([a-zA-Z\"']*)\s*$")
_ANGLE_UNITS = {"arcsec": 1.0, '"': 1.0, "arcmin": 60.0, "'": 60.0, "deg": 3600.0}
#: Largest offset (pixels) from a whole-pixel shift for two tiles to count as sharing one pixel grid.
_ALIGNED_TOLERANCE_PX = 1e-6


@dataclass(frozen=True)
class CutoutSize:
    """The side of a square cutout: pixels of the tile (``unit="px"``) or an angle (``unit="arcsec"``)."""

    value: float
    unit: str

    @classmethod
    def parse(cls, text) -> CutoutSize:
        """``150``, ``150px``, ``270arcsec``, ``4.5arcmin``, ``0.075deg`` (also ``270"``, ``4.5'``).

        Raises
        ------
        ValueError
            Not a positive number with one of those units.
        """
        match = _SIZE.match(str(text))
        unit = match.group(2).lower() if match else ""
        if match is None or (unit not in ("", "px", "pix", "pixel", "pixels") and unit not in _ANGLE_UNITS):
            msg = f"cutout size {text!r}: expected pixels (150, 150px) or an angle (270arcsec, 4.5arcmin, 0.075deg)"
            raise ValueError(msg)
        value = float(match.group(1))
        if unit in _ANGLE_UNITS:
            size = cls(value * _ANGLE_UNITS[unit], "arcsec")
        else:
            if value != int(value):
                msg = f"cutout size {text!r}: a size in pixels must be a whole number"
                raise ValueError(msg)
            size = cls(float(int(value)), "px")
        if size.value <= 0:
            msg = f"cutout size {text!r} must be positive"
            raise ValueError(msg)
        return size

    def pixels(self, pixel_scale_arcsec: float) -> int:
        """Side in pixels on a tile of this pixel scale (an angle rounded to whole pixels, at least 2)."""
        if self.unit == "px":
            return int(self.value)
        return max(2, int(round(self.value / pixel_scale_arcsec)))

    def __str__(self) -> str:
        return f"{int(self.value)}px" if self.unit == "px" else f"{self.value:g}arcsec"


@dataclass(frozen=True)
class MosaicCutoutSpec:
    """A cutout to cut: tiles (the first gives the pixel grid), catalogue position, size."""

    tiles: tuple[str, ...]
    ra_deg: float
    dec_deg: float
    size: CutoutSize

    @property
    def path(self) -> str:
        """The cutout's identity: ``mosaic:TILE[|TILE2...]#RA,DEC,SIZE``."""
        return f"{MOSAIC_SCHEME}{'|'.join(self.tiles)}#{self.ra_deg:.7f},{self.dec_deg:+.7f},{self.size}"

    @classmethod
    def parse(cls, path: str) -> MosaicCutoutSpec:
        """The spec of a ``mosaic:`` path.

        Raises
        ------
        CutoutReadError
            The path is not of the form ``mosaic:TILE[|TILE...]#RA,DEC,SIZE``.
        """
        body = path[len(MOSAIC_SCHEME):] if path.startswith(MOSAIC_SCHEME) else None
        tiles, _, position = (body or "").rpartition("#")
        parts = position.split(",")
        try:
            if not tiles or len(parts) != 3:
                raise ValueError(path)
            ra_deg, dec_deg = float(parts[0]), float(parts[1])
            size = CutoutSize.parse(parts[2])
        except ValueError:
            reason = "not a mosaic cutout path (expected mosaic:TILE[|TILE...]#RA,DEC,SIZE)"
            raise CutoutReadError(path, reason) from None
        return cls(tuple(tiles.split("|")), ra_deg, dec_deg, size)


def is_mosaic_path(path: str) -> bool:
    """Whether ``path`` names a cutout to cut from mosaic tiles."""
    return path.startswith(MOSAIC_SCHEME)


def read_mosaic_cutout(source: CutoutSource, *, tiles: TileCache | None = None, limits=None) -> Cutout:
    """Cut the cutout a ``mosaic:`` path names.

    Parameters
    ----------
    source : CutoutSource
        Its ``path`` is a ``mosaic:`` path (:class:`MosaicCutoutSpec`).
    tiles : TileCache, optional
        The tiles open for the batch being read; a cache of its own (closed
        on return) when None.
    limits : ReadLimits, optional
        ``max_pixels`` applies to the cutout (not to the tile).

    Returns
    -------
    Cutout
        As :func:`~survey_classifier.io.fits.read_cutout` gives for a file,
        ``sha256`` being the hash of the pixels (float32, little-endian), and
        ``origin`` naming the tile(s) and the position's pixel on the first.

    Raises
    ------
    CutoutReadError
        Off the tile, on a blank pixel, too close to the edge of every tile;
        the tile unreadable.
    CutoutLimitError
        The cutout has more pixels than ``limits.max_pixels``.
    """
    spec = MosaicCutoutSpec.parse(source.path)
    if tiles is None:
        with TileCache() as own:
            return read_mosaic_cutout(source, tiles=own, limits=limits)
    return _Cutter(source, spec, tiles, limits).cut()


class _Cutter:
    """One mosaic cutout being cut."""

    def __init__(self, source, spec, tiles, limits):
        self.source = source
        self.spec = spec
        self.tiles = tiles
        self.limits = limits

    def fail(self, reason, tile: TileHeader | None = None):
        return CutoutReadError(self.source.path, reason, hdu=None if tile is None else tile.hdu)

    def cut(self) -> Cutout:
        from astropy.nddata.utils import NoOverlapError, overlap_slices

        spec = self.spec
        primary = self.tiles.header(spec.tiles[0])
        x, y = (float(v) for v in primary.wcs.wcs_world2pix([[spec.ra_deg, spec.dec_deg]], 0)[0])
        ny, nx = primary.shape
        if not (math.isfinite(x) and math.isfinite(y)) or not (-0.5 <= x < nx - 0.5 and -0.5 <= y < ny - 0.5):
            where = f"at pixel ({x:.1f}, {y:.1f})" if math.isfinite(x) and math.isfinite(y) else "not projectable"
            reason = (
                f"off every tile: the position is {where} of {primary.name} ({nx}x{ny}), the tile of the "
                "mosaics nearest to it"
            )
            raise self.fail(reason, primary)
        n = spec.size.pixels(primary.pixel_scale_arcsec)
        if self.limits is not None and n * n > self.limits.max_pixels:
            reason = f"a {n}x{n} cutout is over the limit of {self.limits.max_pixels} pixels (ReadLimits.max_pixels)"
            raise CutoutLimitError(self.source.path, reason)
        try:
            large, small = overlap_slices(primary.shape, (n, n), (y, x), mode="partial")
        except NoOverlapError:  # pragma: no cover - the position is on the tile
            raise self.fail(f"off tile {primary.name}", primary) from None
        data = np.full((n, n), np.nan, dtype=np.float32)
        data[small] = self.tiles.box(primary.url, *large)
        centre = data[int(round(y)) - large[0].start + small[0].start, int(round(x)) - large[1].start + small[1].start]
        if not math.isfinite(centre):
            raise self.fail(f"on a blank (NaN) region of tile {primary.name}: the pixel at the source position "
                            f"({x:.1f}, {y:.1f}) is blank", primary)
        corner = (large[1].start - small[1].start, large[0].start - small[0].start)  # (x, y) of pixel [0, 0]
        wcs = primary.wcs.deepcopy()
        wcs.wcs.crpix = wcs.wcs.crpix - np.array(corner, dtype=float)
        wcs.pixel_shape = (n, n)
        covered = np.zeros((n, n), dtype=bool)
        covered[small] = True
        used = [primary.name]
        if not covered.all() or not np.isfinite(data).all():
            used += self._fill_from_other_tiles(data, covered, wcs)
        if not covered.all():
            self._edge_failure(primary, x, y, n, covered)
        if not np.isfinite(data).any():  # pragma: no cover - the centre is finite
            raise self.fail(f"on a blank (NaN) region of tile {primary.name}", primary)
        centre_world = wcs.wcs_pix2world([[(n - 1) / 2.0, (n - 1) / 2.0]], 0)[0]
        beam = primary.beam_arcsec
        return Cutout(
            source=self.source,
            hdu=primary.hdu,
            data=data,
            sha256=sha256_bytes(data.astype("<f4", copy=False).tobytes()),
            ra_deg=float(centre_world[0]) % 360.0,
            dec_deg=float(centre_world[1]),
            pixel_scale_arcsec=primary.pixel_scale_arcsec,
            beam_major_arcsec=None if beam is None else beam[0],
            beam_minor_arcsec=None if beam is None else beam[1],
            bunit=primary.bunit,
            wcs=wcs,
            warnings=list(primary.warnings),
            origin={"tile": primary.url, "x": round(x, 3), "y": round(y, 3), "tiles": used},
        )

    def _edge_failure(self, primary: TileHeader, x, y, n, covered):
        ny, nx = primary.shape
        margin = min(x + 0.5, nx - 0.5 - x, y + 0.5, ny - 0.5 - y)
        outside = int((~covered).sum())
        if len(self.spec.tiles) == 1:
            reason = (
                f"too close to the edge of tile {primary.name}: the source is at pixel ({x:.1f}, {y:.1f}), "
                f"{margin:.1f} px from the edge, and a {n} px cutout needs {n / 2:g}; no other tile covers the rest"
            )
        else:
            names = ", ".join(remote.basename(t) for t in self.spec.tiles)
            reason = f"too close to the edge of the mosaics: {outside} of {n * n} cutout pixels lie outside every " \
                     f"tile ({names})"
        raise self.fail(reason, primary)

    def _fill_from_other_tiles(self, data, covered, wcs) -> list[str]:
        """Fill uncovered (and blank) pixels from the further tiles, in order; the names of those used."""
        used = []
        n = data.shape[0]
        rows, columns = np.mgrid[0:n, 0:n]
        for url in self.spec.tiles[1:]:
            wanted = ~covered | ~np.isfinite(data)
            if not wanted.any():
                break
            tile = self.tiles.header(url)
            world = wcs.wcs_pix2world(np.column_stack([columns[wanted], rows[wanted]]).astype(float), 0)
            pixels = tile.wcs.wcs_world2pix(world, 0)
            xs, ys = pixels[:, 0], pixels[:, 1]
            ny, nx = tile.shape
            inside = np.isfinite(xs) & np.isfinite(ys) & (xs >= -0.5) & (xs < nx - 0.5) & (ys >= -0.5) & (ys < ny - 0.5)
            if not inside.any():
                continue
            xs, ys = xs[inside], ys[inside]
            values = self._values(tile, xs, ys, columns[wanted][inside], rows[wanted][inside])
            target_rows, target_columns = rows[wanted][inside], columns[wanted][inside]
            fill = np.isfinite(values) | ~covered[target_rows, target_columns]
            data[target_rows[fill], target_columns[fill]] = values[fill]
            covered[target_rows, target_columns] = True
            used.append(tile.name)
        return used

    def _values(self, tile: TileHeader, xs, ys, target_x, target_y) -> np.ndarray:
        """Pixel values of ``tile`` at its fractional pixels (xs, ys): copied when the grids align, else bilinear."""
        from scipy import ndimage

        ny, nx = tile.shape
        shift_x, shift_y = xs - target_x, ys - target_y
        aligned = (
            np.ptp(shift_x) < _ALIGNED_TOLERANCE_PX and np.ptp(shift_y) < _ALIGNED_TOLERANCE_PX
            and abs(shift_x[0] - round(shift_x[0])) < _ALIGNED_TOLERANCE_PX
            and abs(shift_y[0] - round(shift_y[0])) < _ALIGNED_TOLERANCE_PX
        )
        x_low = max(0, int(math.floor(xs.min())))
        x_high = min(nx, int(math.ceil(xs.max())) + 2)
        y_low = max(0, int(math.floor(ys.min())))
        y_high = min(ny, int(math.ceil(ys.max())) + 2)
        box = self.tiles.box(tile.url, slice(y_low, y_high), slice(x_low, x_high))
        if aligned:
            return box[np.rint(ys).astype(int) - y_low, np.rint(xs).astype(int) - x_low]
        local_y = np.clip(ys, 0, ny - 1) - y_low
        local_x = np.clip(xs, 0, nx - 1) - x_low
        return ndimage.map_coordinates(box, [local_y, local_x], order=1, mode="nearest").astype(np.float32)


def write_cutout_fits(cutout: Cutout, folder: str) -> str:
    """Write a mosaic cutout as a FITS file in ``folder`` (a path or a URL); returns where.

    The file is named after the catalogue id (else the position) and keeps
    the WCS, beam, unit and origin (``MOSAIC``, ``TILE``, ``TILE_X``,
    ``TILE_Y`` cards) of the cutout.
    """
    from astropy.io import fits

    source = cutout.source
    stem = source.catalogue_id or f"J{cutout.ra_deg:.5f}{cutout.dec_deg:+.5f}"
    stem = re.sub(r"[^A-Za-z0-9._+-]+", "_", stem).strip("_") or "cutout"
    header = cutout.wcs.to_header() if cutout.wcs is not None else fits.Header()
    if cutout.beam_major_arcsec is not None:
        header["BMAJ"] = (cutout.beam_major_arcsec / 3600.0, "[deg] beam FWHM major axis")
        header["BMIN"] = (cutout.beam_minor_arcsec / 3600.0, "[deg] beam FWHM minor axis")
    if cutout.bunit:
        header["BUNIT"] = cutout.bunit
    origin = cutout.origin or {}
    header["TILE"] = (remote.basename(str(origin.get("tile", ""))), "mosaic tile cut from")
    header["TILE_X"] = (origin.get("x"), "0-based pixel of the source on the tile")
    header["TILE_Y"] = (origin.get("y"), "0-based pixel of the source on the tile")
    header["HISTORY"] = f"cut by survey-classifier from {source.path}"
    buffer = io.BytesIO()
    fits.PrimaryHDU(cutout.data, header=header).writeto(buffer)
    target = remote.join(folder, f"{stem}.fits")
    try:
        remote.write_bytes(target, buffer.getvalue())
    except (OSError, SurveyClassifierError) as exc:
        raise CutoutError(source.path, f"cut, but cannot be saved as {target} ({exc})") from None
    return target
