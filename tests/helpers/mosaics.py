"""Mosaics for the tests: real MiraBest cutouts reprojected into one survey grid, and stamps cut the plain
astropy way (``Cutout2D``), independently of the package's reader, to compare with."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.nddata import Cutout2D
from astropy.table import Table
from astropy.wcs import WCS

__all__ = ["precut", "precut_catalogue", "mirabest_mosaic", "stage_results"]


def precut(tile: Path, ra_deg: float, dec_deg: float, size: int, out: Path) -> Path:
    """Cut a ``size``-pixel stamp at (ra, dec) from a tile with astropy alone and write it (WCS, beam, unit)."""
    with fits.open(tile) as hdus:
        header = hdus[0].header
        data = np.squeeze(hdus[0].data).astype(np.float32)
        wcs = WCS(header).celestial
    position = wcs.wcs_world2pix([[ra_deg, dec_deg]], 0)[0]
    stamp = Cutout2D(data, tuple(position), (size, size), wcs=wcs, mode="strict")
    out_header = stamp.wcs.to_header()
    for key in ("BMAJ", "BMIN", "BPA", "BUNIT"):
        if key in header:
            out_header[key] = header[key]
    fits.PrimaryHDU(stamp.data, header=out_header).writeto(out, overwrite=True)
    return out


def precut_catalogue(truth: Table, tile_of, size: int, folder: Path) -> Path:
    """Pre-cut stamps of every row of ``truth`` (``tile_of(row)`` gives its tile) and their catalogue."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for row in truth:
        name = f"{row['id']}.fits"
        precut(tile_of(row), float(row["ra_deg"]), float(row["dec_deg"]), size, folder / name)
        rows.append((name, row["id"], float(row["ra_deg"]), float(row["dec_deg"])))
    catalogue = folder / "catalogue.csv"
    Table(rows=rows, names=("file", "id", "ra_deg", "dec_deg")).write(catalogue, format="ascii.csv", overwrite=True)
    return catalogue


def mirabest_mosaic(files: list[Path], folder: Path, *, per_side=4, spacing=170, centre=(210.0, 40.0)):
    """Place real MiraBest cutouts on one SIN grid of 1.8 arcsec pixels with ``reproject``.

    Each cutout is moved to the centre of a slot of ``spacing`` pixels (its
    WCS re-centred on the slot's position) and reprojected (bilinear) onto
    the grid; between the cutouts the mosaic is blank (NaN), as survey
    mosaics are beyond their coverage. Returns the tile path and the
    catalogue (``id``, ``ra_deg``, ``dec_deg``, ``original`` file).
    """
    from reproject import reproject_interp

    folder.mkdir(parents=True, exist_ok=True)
    side = per_side * spacing
    grid = WCS(naxis=2)
    grid.wcs.ctype = ["RA---SIN", "DEC--SIN"]
    grid.wcs.crval = list(centre)
    grid.wcs.crpix = [(side + 1) / 2.0, (side + 1) / 2.0]
    grid.wcs.cdelt = [-1.8 / 3600.0, 1.8 / 3600.0]
    grid.wcs.radesys = "FK5"
    grid.wcs.equinox = 2000.0
    mosaic = np.full((side, side), np.nan, dtype=np.float32)
    rows = []
    for index, path in enumerate(files[: per_side * per_side]):
        with fits.open(path) as hdus:
            data = hdus[0].data.astype(np.float32)
            wcs = WCS(hdus[0].header).celestial
            unit = hdus[0].header.get("BUNIT")
        slot_x = (index % per_side) * spacing + (spacing - 1) / 2.0
        slot_y = (index // per_side) * spacing + (spacing - 1) / 2.0
        ra, dec = grid.wcs_pix2world([[slot_x, slot_y]], 0)[0]
        moved = wcs.deepcopy()
        centre_pixel = ((data.shape[1] - 1) / 2.0, (data.shape[0] - 1) / 2.0)
        moved.wcs.crpix = [centre_pixel[0] + 1, centre_pixel[1] + 1]
        moved.wcs.crval = [ra, dec]
        placed, footprint = reproject_interp((data, moved), grid, shape_out=mosaic.shape, order="bilinear")
        inside = footprint > 0
        mosaic[inside] = placed[inside]
        rows.append((f"MB{index:02d}", float(ra), float(dec), path.name))
    header = grid.to_header()
    header["BUNIT"] = unit  # SkyView's FIRST cutouts record no beam: neither does the mosaic
    tile = folder / "mirabest_mosaic.fits"
    fits.PrimaryHDU(mosaic, header=header).writeto(tile, overwrite=True)
    catalogue = folder / "positions.csv"
    Table(rows=rows, names=("id", "ra_deg", "dec_deg", "original")).write(catalogue, format="ascii.csv",
                                                                            overwrite=True)
    return tile, catalogue


def stage_results(table: Table) -> dict[str, dict]:
    """The stage columns of a ``query_results`` table by catalogue id (positions and paths left out)."""
    stage_columns = [
        name for name in table.colnames
        if name.startswith(("measure_", "cnn_", "som_", "anomaly_")) and not name.endswith(("_run_id", "updated_at"))
    ]
    out = {}
    for row in table:
        values = {}
        for name in stage_columns:
            value = row[name]
            values[name] = None if np.ma.is_masked(value) else (value.item() if hasattr(value, "item") else value)
        out[str(row["catalogue_id"])] = values
    return out
