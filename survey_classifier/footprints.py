"""The footprint index of survey mosaic tiles, and the choice of a tile for each catalogue position.

``classify``/``submit`` with ``--mosaics`` turn catalogue rows into cutouts
cut from tiles. This module does it when the run is prepared, before any
worker starts:

1. :func:`index_tiles` lists the tiles of a collection (a folder, a glob or
   a URL of either) and keeps, in the ``mosaic_tiles`` table of the results
   database, each tile's footprint: shape, celestial WCS, centre and
   radius. A tile's header is read once, and again only when the tile
   changes (its modification time or ETag), so a collection of thousands
   of tiles on an object store is listed, not re-read, by later runs.
2. :func:`plan_cutouts` places every position on the tiles: candidate tiles
   are those whose centre lies within their radius plus the cutout's half
   diagonal (a k-d tree on unit vectors), the position is projected onto
   each candidate's pixel grid, and the tile where it lies farthest from an
   edge is chosen. When the cutout runs over that tile's edge, the other
   candidates that cover the rest (tested on a grid of points across the
   cutout) are listed after it: the cutout is then a mosaic of tiles. A
   position off every tile is given the nearest tile, so that reading it
   records why it failed.

The result is one :class:`~survey_classifier.cutout.CutoutSource` per row,
whose path is the ``mosaic:`` path of
:class:`~survey_classifier.io.mosaics.MosaicCutoutSpec`, ordered by tile and
row on the tile, so that a batch reads few tiles and neighbouring rows.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from sqlalchemy import select
from sqlalchemy.engine import Engine

from survey_classifier.cutout import CutoutSource
from survey_classifier.db.models import MosaicTileRow, utcnow
from survey_classifier.db.store import upsert_rows
from survey_classifier.errors import CatalogueError, CutoutError, SurveyClassifierError
from survey_classifier.io import remote
from survey_classifier.io.mosaics import CutoutSize, MosaicCutoutSpec
from survey_classifier.io.tiles import TILE_SUFFIXES, read_tile_header

__all__ = ["TileFootprint", "index_tiles", "plan_cutouts", "mosaic_sources", "box_corner"]

log = logging.getLogger(__name__)

#: Points per side of the grid on which a cutout's coverage by other tiles is tested.
_COVERAGE_GRID = 9
_HEADER_THREADS = 16
_IN_CHUNK = 500


@dataclass
class TileFootprint:
    """Where one tile lies on the sky."""

    url: str
    shape: tuple[int, int]
    wcs_header: str
    ra_deg: float
    dec_deg: float
    radius_deg: float
    pixel_scale_arcsec: float

    @property
    def name(self) -> str:
        return remote.basename(self.url)

    @functools.cached_property
    def wcs(self):
        """The celestial WCS, built from the stored cards when first needed."""
        from astropy.wcs import WCS

        wcs = WCS(self.wcs_header, relax=True)
        wcs.pixel_shape = (self.shape[1], self.shape[0])
        return wcs


def box_corner(position, n: int):
    """First pixel index of the ``n``-pixel box centred on ``position``: ``ceil(position - n / 2)``.

    The rule of :func:`astropy.nddata.utils.overlap_slices` (and so of
    :class:`~astropy.nddata.Cutout2D`), which the reader applies.
    """
    return np.ceil(np.asarray(position, dtype=float) - n / 2.0).astype(np.int64)


def _footprint_row(header, entry) -> dict:
    """The ``mosaic_tiles`` row of a tile header just read."""
    wcs = header.wcs
    ny, nx = header.shape
    corners = np.array([[-0.5, -0.5], [nx - 0.5, -0.5], [-0.5, ny - 0.5], [nx - 0.5, ny - 0.5]])
    centre = wcs.wcs_pix2world([[(nx - 1) / 2.0, (ny - 1) / 2.0]], 0)[0]
    world = wcs.wcs_pix2world(corners, 0)
    if not (np.isfinite(centre).all() and np.isfinite(world).all()):
        reason = "its corners or centre fall outside the projection; a tile must lie wholly on the sky"
        raise CutoutError(header.url, reason, hdu=header.hdu)
    radius = float(np.max(_separation_deg(centre[0], centre[1], world[:, 0], world[:, 1])))
    beam = header.beam_arcsec
    return {
        "url": header.url,
        "size_bytes": entry.size,
        "version": entry.version,
        "hdu": header.hdu,
        "naxis1": nx,
        "naxis2": ny,
        "wcs_header": wcs.to_header_string(relax=True),
        "ra_deg": float(centre[0]) % 360.0,
        "dec_deg": float(centre[1]),
        "radius_deg": radius,
        "pixel_scale_arcsec": header.pixel_scale_arcsec,
        "beam_major_arcsec": None if beam is None else beam[0],
        "beam_minor_arcsec": None if beam is None else beam[1],
        "indexed_at": utcnow(),
    }


def _separation_deg(ra1, dec1, ra2, dec2):
    ra1, dec1, ra2, dec2 = (np.radians(np.asarray(v, dtype=float)) for v in (ra1, dec1, ra2, dec2))
    term = np.sin((dec2 - dec1) / 2) ** 2 + np.cos(dec1) * np.cos(dec2) * np.sin((ra2 - ra1) / 2) ** 2
    return np.degrees(2 * np.arcsin(np.sqrt(np.clip(term, 0.0, 1.0))))


def index_tiles(engine: Engine, spec: str) -> list[TileFootprint]:
    """The footprints of the tiles named by ``spec``, indexed in the results database.

    Parameters
    ----------
    engine : Engine
        Results database (upgraded).
    spec : str
        A folder (its files ending in ``.fits``, ``.fit``, ``.fts``,
        ``.fits.fz``, ``.fits.gz``), a glob, or one file; local or a URL.

    Returns
    -------
    list of TileFootprint
        In name order.

    Raises
    ------
    SurveyClassifierError
        No tile found, or a tile that cannot be used (the message names it and why).
    """
    entries = remote.list_files(spec, TILE_SUFFIXES)
    if not entries:
        msg = f"--mosaics {spec}: no tiles found (looked for files ending in {', '.join(TILE_SUFFIXES)})"
        raise SurveyClassifierError(msg)
    table = MosaicTileRow.__table__
    stored = {}
    with engine.connect() as connection:
        urls = [entry.url for entry in entries]
        for start in range(0, len(urls), _IN_CHUNK):
            chunk = urls[start : start + _IN_CHUNK]
            for row in connection.execute(select(table).where(table.c.url.in_(chunk))).mappings():
                stored[row["url"]] = dict(row)
    stale = [e for e in entries if e.url not in stored or (stored[e.url]["version"], stored[e.url]["size_bytes"])
             != (e.version, e.size)]
    if stale:
        log.info("indexing %d of %d tiles of %s", len(stale), len(entries), spec)
        threads = 1 if all(remote.local_path(e.url) is not None for e in stale) else _HEADER_THREADS
        with ThreadPoolExecutor(max_workers=threads) as pool:
            rows = list(pool.map(_index_one, stale))
        with engine.begin() as connection:
            upsert_rows(connection, table, rows, key=("url",))
        stored.update({row["url"]: row for row in rows})
    return [
        TileFootprint(
            url=entry.url,
            shape=(stored[entry.url]["naxis2"], stored[entry.url]["naxis1"]),
            wcs_header=stored[entry.url]["wcs_header"],
            ra_deg=stored[entry.url]["ra_deg"],
            dec_deg=stored[entry.url]["dec_deg"],
            radius_deg=stored[entry.url]["radius_deg"],
            pixel_scale_arcsec=stored[entry.url]["pixel_scale_arcsec"],
        )
        for entry in entries
    ]


def _index_one(entry) -> dict:
    try:
        return _footprint_row(read_tile_header(entry.url, entry), entry)
    except CutoutError as exc:
        msg = f"mosaic tile {exc}"
        raise SurveyClassifierError(msg) from None


def _unit_vectors(ra_deg, dec_deg) -> np.ndarray:
    ra, dec = np.radians(ra_deg), np.radians(dec_deg)
    return np.column_stack([np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)])


def _chord(angle_deg) -> float:
    return 2.0 * math.sin(math.radians(min(float(angle_deg), 180.0)) / 2.0)


def plan_cutouts(
    sources: Sequence[CutoutSource], tiles: Sequence[TileFootprint], size: CutoutSize
) -> list[CutoutSource]:
    """Give every catalogue row the ``mosaic:`` path of its cutout, ordered by tile and row.

    Parameters
    ----------
    sources : sequence of CutoutSource
        Catalogue rows; each needs ``ra_deg`` and ``dec_deg``.
    tiles : sequence of TileFootprint
    size : CutoutSize

    Returns
    -------
    list of CutoutSource
        The same rows with their ``path`` set, sorted by tile then pixel row.

    Raises
    ------
    CatalogueError
        Rows without a position.
    """
    from scipy.spatial import cKDTree

    missing = [i for i, s in enumerate(sources) if s.ra_deg is None or s.dec_deg is None]
    if missing:
        rows = ", ".join(str(i + 1) for i in missing[:10]) + (" ..." if len(missing) > 10 else "")
        msg = (
            f"{len(missing)} catalogue rows have no RA/Dec (rows {rows}); cutting from mosaics needs a position "
            "for every row (name the columns with --ra-column/--dec-column)"
        )
        raise CatalogueError(msg)
    if not sources:
        return []
    ra = np.array([s.ra_deg for s in sources], dtype=float)
    dec = np.array([s.dec_deg for s in sources], dtype=float)
    n_sources = len(sources)
    best_tile = np.full(n_sources, -1, dtype=np.int64)
    best_margin = np.full(n_sources, -np.inf)  # arcsec from the nearest edge of the best tile (< 0: off it)
    best_y = np.zeros(n_sources)
    fits_whole = np.zeros(n_sources, dtype=bool)
    candidates: dict[int, list[int]] = {}
    tree = cKDTree(_unit_vectors(ra, dec))
    for t, tile in enumerate(tiles):
        n = size.pixels(tile.pixel_scale_arcsec)
        reach = tile.radius_deg + n * tile.pixel_scale_arcsec / 3600.0 * math.sqrt(0.5)
        near = np.asarray(tree.query_ball_point(_unit_vectors([tile.ra_deg], [tile.dec_deg])[0], _chord(reach)))
        if near.size == 0:
            continue
        xy = tile.wcs.wcs_world2pix(np.column_stack([ra[near], dec[near]]), 0)
        x, y = xy[:, 0], xy[:, 1]
        ny, nx = tile.shape
        margin_px = np.minimum.reduce([x + 0.5, nx - 0.5 - x, y + 0.5, ny - 0.5 - y])
        margin_px = np.where(np.isfinite(margin_px), margin_px, -np.inf)
        margin = margin_px * tile.pixel_scale_arcsec  # arcsec: comparable between tiles of different scales
        corner_x, corner_y = box_corner(np.nan_to_num(x), n), box_corner(np.nan_to_num(y), n)
        whole = (corner_x >= 0) & (corner_y >= 0) & (corner_x + n <= nx) & (corner_y + n <= ny) & (margin_px > 0)
        for i in near[~whole & (margin_px > -n)].tolist():
            candidates.setdefault(i, []).append(t)
        better = (margin > best_margin[near]) & ~(fits_whole[near] & ~whole)
        better |= whole & ~fits_whole[near]
        chosen = near[better]
        best_tile[chosen] = t
        best_margin[chosen] = margin[better]
        best_y[chosen] = y[better]
        fits_whole[chosen] = whole[better]
    unplaced = np.flatnonzero(best_tile < 0)
    if unplaced.size:
        centres = cKDTree(_unit_vectors([t.ra_deg for t in tiles], [t.dec_deg for t in tiles]))
        _, nearest = centres.query(_unit_vectors(ra[unplaced], dec[unplaced]))
        best_tile[unplaced] = np.atleast_1d(nearest)
    planned = []
    for i, source in enumerate(sources):
        tile_urls = [tiles[best_tile[i]].url]
        if not fits_whole[i] and best_margin[i] > 0:
            tile_urls += _covering_tiles(tiles, int(best_tile[i]), candidates.get(i, []), ra[i], dec[i], size)
        spec = MosaicCutoutSpec(tuple(tile_urls), float(ra[i]), float(dec[i]), size)
        planned.append((int(best_tile[i]), float(best_y[i]), i, dataclasses.replace(source, path=spec.path)))
    planned.sort(key=lambda item: item[:3])
    return [source for *_, source in planned]


def _covering_tiles(tiles, primary: int, others: list[int], ra_deg, dec_deg, size) -> list[str]:
    """Tiles, after ``primary``, that cover the points of the cutout lying outside it (sampled on a grid)."""
    tile = tiles[primary]
    n = size.pixels(tile.pixel_scale_arcsec)
    x, y = tile.wcs.wcs_world2pix([[ra_deg, dec_deg]], 0)[0]
    steps = np.linspace(-0.49, n - 0.51, _COVERAGE_GRID)
    grid_x, grid_y = np.meshgrid(box_corner(x, n) + steps, box_corner(y, n) + steps)
    points = np.column_stack([grid_x.ravel(), grid_y.ravel()])
    ny, nx = tile.shape
    outside = ~((points[:, 0] >= -0.5) & (points[:, 0] < nx - 0.5) & (points[:, 1] >= -0.5) & (points[:, 1] < ny - 0.5))
    world = tile.wcs.wcs_pix2world(points[outside], 0)
    uncovered = np.ones(len(world), dtype=bool)
    chosen = []
    for t in others:
        if t == primary or not uncovered.any():
            continue
        other = tiles[t]
        pixels = other.wcs.wcs_world2pix(world, 0)
        oy, ox = other.shape
        inside = (
            np.isfinite(pixels).all(axis=1)
            & (pixels[:, 0] >= -0.5) & (pixels[:, 0] < ox - 0.5) & (pixels[:, 1] >= -0.5) & (pixels[:, 1] < oy - 0.5)
        )
        if (inside & uncovered).any():
            chosen.append(other.url)
            uncovered &= ~inside
    return chosen


def mosaic_sources(
    engine: Engine,
    catalogues: Sequence[str],
    mosaics: str,
    size: CutoutSize,
    *,
    id_column=None,
    ra_column=None,
    dec_column=None,
) -> list[CutoutSource]:
    """The cutouts of a mosaic run: every row of ``catalogues`` placed on the tiles of ``mosaics``.

    Parameters
    ----------
    engine : Engine
        Results database, where the tiles are indexed.
    catalogues : sequence of str
        Catalogue tables (paths or URLs) with RA and Dec columns; other
        columns are carried through as for any catalogue.
    mosaics : str
        Folder, glob or file of tiles (a path or a URL).
    size : CutoutSize
    id_column, ra_column, dec_column : str, optional
        As for :func:`~survey_classifier.io.inputs.read_catalogue`.
    """
    from survey_classifier.io.inputs import read_catalogue

    rows: list[CutoutSource] = []
    for catalogue in catalogues:
        read = read_catalogue(
            catalogue, file_column=False, id_column=id_column, ra_column=ra_column, dec_column=dec_column
        )
        if read and all(s.ra_deg is None for s in read):
            msg = (
                f"catalogue {catalogue}: no RA/Dec columns found; cutting from mosaics needs them "
                "(name them with --ra-column/--dec-column)"
            )
            raise CatalogueError(msg)
        rows.extend(read)
    tiles = index_tiles(engine, mosaics)
    return plan_cutouts(rows, tiles, size)
