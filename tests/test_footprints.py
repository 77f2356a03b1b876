"""The footprint index of mosaic tiles in the results database, and the choice of tiles for positions."""

from __future__ import annotations

import os

import pytest
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS
from sqlalchemy import select

from survey_classifier.cutout import CutoutSource
from survey_classifier.db.models import MosaicTileRow
from survey_classifier.errors import CatalogueError, SurveyClassifierError
from survey_classifier.footprints import index_tiles, mosaic_sources, plan_cutouts
from survey_classifier.io.mosaics import CutoutSize, MosaicCutoutSpec
from survey_classifier.synthetic import make_synthetic_mosaic


@pytest.fixture(scope="module")
def mosaic(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mosaic")
    truth = make_synthetic_mosaic(folder, n_sources=12, seed=1, tile_shape=(512, 512), overlap=200)
    with fits.open(folder / "tiles" / "tile_0_0.fits") as hdus:
        wcs = WCS(hdus[0].header)
    return folder, truth, wcs


def _rows(engine):
    with engine.connect() as connection:
        return {row.url: row for row in connection.execute(select(MosaicTileRow.__table__))}


def test_the_index_is_built_once_and_read_again_only_for_changed_tiles(mosaic, engine):
    folder, _, _ = mosaic
    tiles = index_tiles(engine, str(folder / "tiles"))
    assert [t.name for t in tiles] == ["tile_0_0.fits", "tile_0_1.fits", "tile_1_0.fits", "tile_1_1.fits"]
    first = _rows(engine)
    assert len(first) == 4
    row = first[str(folder / "tiles" / "tile_0_1.fits")]
    assert (row.naxis1, row.naxis2, row.hdu) == (512, 512, 0)
    assert row.pixel_scale_arcsec == pytest.approx(1.8) and row.beam_major_arcsec == pytest.approx(5.4)
    # the radius reaches the corners: half the diagonal of 512 pixels of 1.8 arcsec
    assert row.radius_deg == pytest.approx(512 * 2**0.5 / 2 * 1.8 / 3600, rel=1e-3)

    assert [t.url for t in index_tiles(engine, str(folder / "tiles" / "tile_*.fits"))] == [t.url for t in tiles]
    assert {url: r.indexed_at for url, r in _rows(engine).items()} == {url: r.indexed_at for url, r in first.items()}

    changed = folder / "tiles" / "tile_1_0.fits"
    os.utime(changed, ns=(changed.stat().st_atime_ns, changed.stat().st_mtime_ns + 10**9))
    index_tiles(engine, str(folder / "tiles"))
    after = _rows(engine)
    assert [url for url in after if after[url].indexed_at != first[url].indexed_at] == [str(changed)]


def test_each_position_gets_the_tile_where_it_lies_farthest_from_an_edge(mosaic, engine):
    folder, _, wcs = mosaic
    # tiles of 512 pixels overlapping by 200: tile_0_0 spans x 0-511, tile_0_1 x 312-823
    positions = {"left": (340.2, 150.4), "right": (480.3, 150.7), "middle": (411.6, 256.2), "low": (100.3, 100.8)}
    sources = [CutoutSource("", name, *wcs.wcs_pix2world([p], 0)[0]) for name, p in positions.items()]
    planned = plan_cutouts(sources, index_tiles(engine, str(folder / "tiles")), CutoutSize.parse("150"))
    tiles = {s.catalogue_id: [os.path.basename(t) for t in MosaicCutoutSpec.parse(s.path).tiles] for s in planned}
    # "middle" is 99.9 pixels from the right edge of tile_0_0 and 100.1 from the left edge of tile_0_1
    assert tiles == {"left": ["tile_0_0.fits"], "right": ["tile_0_1.fits"], "middle": ["tile_0_1.fits"],
                     "low": ["tile_0_0.fits"]}
    assert [s.catalogue_id for s in planned] == ["low", "left", "right", "middle"]  # by tile, then row
    ra, dec = sources[0].ra_deg, sources[0].dec_deg
    assert planned[1].path == f"mosaic:{folder / 'tiles' / 'tile_0_0.fits'}#{ra:.7f},{dec:+.7f},150px"


def test_catalogue_rows_without_positions_and_empty_collections_are_refused(mosaic, engine, tmp_path):
    folder, truth, _ = mosaic
    catalogue = tmp_path / "names.csv"
    Table({"name": ["a", "b"], "flux": [1.0, 2.0]}).write(catalogue)
    with pytest.raises(CatalogueError, match="no RA/Dec columns found"):
        mosaic_sources(engine, [str(catalogue)], str(folder / "tiles"), CutoutSize.parse("150"))
    partial = tmp_path / "partial.csv"
    partial.write_text("id,ra,dec\na,150.0,30.0\nb,,\n")
    with pytest.raises(CatalogueError, match=r"1 catalogue rows have no RA/Dec \(rows 2\)"):
        mosaic_sources(engine, [str(partial)], str(folder / "tiles"), CutoutSize.parse("150"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(SurveyClassifierError, match="no tiles found"):
        mosaic_sources(engine, [str(folder / "catalogue.csv")], str(tmp_path / "empty"), CutoutSize.parse("150"))
    sources = mosaic_sources(engine, [str(folder / "catalogue.csv")], str(folder / "tiles"), CutoutSize.parse("150"))
    assert sorted(s.catalogue_id for s in sources) == sorted(truth["id"])
    assert all(set(s.extra) == {"id", "kind", "flux_jy", "separation_arcsec", "pa_deg"} for s in sources)
