"""Inputs on an object store (a local S3 server): cutouts, catalogues and mosaic tiles read as from disk."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from astropy.table import Table

from survey_classifier.errors import CutoutLimitError, CutoutReadError
from survey_classifier.footprints import index_tiles, mosaic_sources
from survey_classifier.io import remote
from survey_classifier.io.fits import ReadLimits, read_cutout
from survey_classifier.io.inputs import expand_inputs
from survey_classifier.io.mosaics import CutoutSize, read_mosaic_cutout
from survey_classifier.io.tiles import TileCache
from survey_classifier.synthetic import make_synthetic_mosaic


@pytest.fixture
def cutouts(tmp_path, mirabest_files):
    folder = tmp_path / "cutouts"
    folder.mkdir()
    for path in mirabest_files[:6]:
        shutil.copy(path, folder)
    names = [p.name for p in mirabest_files[:6]] + ["missing.fits"]
    Table({"file": names, "id": [f"S{i}" for i in range(7)], "note": list("abcdefg")}).write(folder / "catalogue.csv")
    return folder


def test_cutouts_and_catalogues_in_a_bucket_read_as_from_disk(s3_server, cutouts):
    url = s3_server.upload(cutouts, "s3://survey/cutouts")
    listed = expand_inputs([f"{url}/"])
    assert [s.path for s in listed] == [f"{url}/{p.name}" for p in sorted(cutouts.glob("*.fits"))]
    assert [s.path for s in expand_inputs([f"{url}/*.fits"])] == [s.path for s in listed]
    for source in listed:
        from_store = read_cutout(source)
        from_disk = read_cutout(cutouts / source.path.rsplit("/", 1)[1])
        np.testing.assert_array_equal(from_store.data, from_disk.data)
        assert (from_store.sha256, from_store.ra_deg) == (from_disk.sha256, from_disk.ra_deg)
    rows = expand_inputs([f"{url}/catalogue.csv"])
    assert [s.path for s in rows[:2]] == [f"{url}/{name}" for name in Table.read(cutouts / "catalogue.csv")["file"][:2]]
    assert (rows[0].catalogue_id, rows[0].extra) == ("S0", {"id": "S0", "note": "a"})
    with pytest.raises(CutoutReadError, match="file not found"):
        read_cutout(rows[-1])
    with pytest.raises(CutoutLimitError, match=r"file is 109440 bytes, over the limit of 1000 bytes"):
        read_cutout(rows[0], limits=ReadLimits(max_bytes=1000))


def test_a_mosaic_in_a_bucket_is_read_by_ranges(s3_server, tmp_path, engine):
    make_synthetic_mosaic(tmp_path / "survey", n_sources=20, seed=4, tile_shape=(1500, 1500), grid=(1, 2))
    url = s3_server.upload(tmp_path / "survey", "s3://survey/first")
    size = CutoutSize.parse("150")
    local = mosaic_sources(engine, [str(tmp_path / "survey" / "catalogue.csv")], str(tmp_path / "survey" / "tiles"),
                           size)
    remote_sources = mosaic_sources(engine, [f"{url}/catalogue.csv"], f"{url}/tiles", size)
    tiles = index_tiles(engine, f"{url}/tiles/")
    assert [t.url for t in tiles] == [f"{url}/tiles/tile_0_0.fits", f"{url}/tiles/tile_0_1.fits"]
    assert [s.catalogue_id for s in remote_sources] == [s.catalogue_id for s in local]
    with TileCache() as from_disk, TileCache() as from_store:
        for near, far in zip(local, remote_sources):
            assert far.path.startswith(f"mosaic:{url}/tiles/tile_0_")
            disk, store = read_mosaic_cutout(near, tiles=from_disk), read_mosaic_cutout(far, tiles=from_store)
            np.testing.assert_array_equal(store.data, disk.data)
            assert store.sha256 == disk.sha256 and store.wcs.wcs.compare(disk.wcs.wcs)
        # the rows of the 20 sources, in bands of 8 MiB: a few requests, not the tiles (9 MB each)
        assert from_store.requests() <= 4
    entry = remote.file_entry(f"{url}/tiles/tile_0_0.fits")
    assert entry.size == (tmp_path / "survey" / "tiles" / "tile_0_0.fits").stat().st_size and entry.version


def test_paths_and_urls_are_joined_like_folders():
    assert remote.join("s3://survey/cutouts", "a/b.fits") == "s3://survey/cutouts/a/b.fits"
    assert remote.join("s3://survey/cutouts/", "../tiles/t.fits") == "s3://survey/tiles/t.fits"
    assert remote.join("s3://survey/cutouts", "/other/t.fits") == "s3://other/t.fits"
    assert remote.join("file:///data/cutouts", "/other/t.fits") == "file:///other/t.fits"
    assert remote.join("s3://survey/cutouts", "gs://else/t.fits") == "gs://else/t.fits"
    assert remote.join("/data/cutouts", "x/../t.fits") == "/data/cutouts/t.fits"
    assert remote.parent("https://example.org/first/catalogue.csv") == "https://example.org/first"
    assert remote.basename("s3://survey/tiles/14000+32270E.fits") == "14000+32270E.fits"
    assert remote.local_path("file:///data/t.fits") == "/data/t.fits" and remote.local_path("s3://b/t") is None


def test_a_scheme_without_a_filesystem_is_named():
    with pytest.raises(remote.RemoteInputError, match="no filesystem for the scheme 'nosuchstore'"):
        expand_inputs(["nosuchstore://bucket/cutouts/"])
