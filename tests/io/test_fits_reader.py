"""read_cutout on real mirabest files and on every odd or bad input it must handle."""

from __future__ import annotations

import bz2
import csv
import gzip
import hashlib

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning

from survey_classifier.cutout import CutoutSource
from survey_classifier.errors import (
    CutoutLimitError,
    CutoutReadError,
    FITSQuirkWarning,
    NoWCSWarning,
)
from survey_classifier.io import ReadLimits, read_cutout

# ------------------------------------------------------------------ real files


def test_mirabest_cutout_matches_astropy(mirabest_dir):
    path = sorted((mirabest_dir / "fits").glob("*.fits"))[0]
    cutout = read_cutout(path)
    with fits.open(path) as hdulist:
        expected = hdulist[0].data
        wcs = WCS(hdulist[0].header)
    assert cutout.data.dtype == np.float32
    assert cutout.data.shape == (150, 150)
    np.testing.assert_array_equal(cutout.data, expected)
    ra, dec = wcs.wcs_pix2world([[74.5, 74.5]], 0)[0]
    assert cutout.ra_deg == pytest.approx(ra, abs=1e-9)
    assert cutout.dec_deg == pytest.approx(dec, abs=1e-9)
    assert cutout.pixel_scale_arcsec == pytest.approx(1.8, rel=1e-9)
    assert cutout.bunit == "JY/BEAM"
    assert cutout.beam_major_arcsec is None  # SkyView FIRST cutouts carry no BMAJ
    assert cutout.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert cutout.hdu == 0
    assert cutout.warnings == []
    assert cutout.wcs.pixel_shape == (150, 150)
    assert cutout.source == CutoutSource(path=str(path))


def test_mirabest_positions_agree_with_labels(mirabest_dir):
    """The WCS centres agree with labels.csv to its rounding (0.001 deg).

    labels.csv gives positions to three decimals, so agreement within 1 arcsec
    cannot hold; 99% agree to the rounding and a handful (8 of 1027) differ
    by up to 9 arcsec in the catalogue itself.
    """
    with open(mirabest_dir / "labels.csv", newline="") as stream:
        rows = list(csv.DictReader(stream))
    offsets = []
    for row in rows:
        cutout = read_cutout(mirabest_dir / "fits" / row["file"])
        d_ra = (cutout.ra_deg - float(row["ra_deg"])) * np.cos(np.radians(cutout.dec_deg))
        d_dec = cutout.dec_deg - float(row["dec_deg"])
        offsets.append(np.hypot(d_ra, d_dec) * 3600.0)
    offsets = np.array(offsets)
    rounding = np.hypot(0.0005, 0.0005) * 3600.0 + 1e-6
    assert len(offsets) == 1027
    assert np.mean(offsets <= rounding) > 0.99
    assert offsets.max() < 10.0


# -------------------------------------------------------------------- quirks


def test_radio_image_with_four_axes_is_squeezed(tmp_path, image_data, fits_tools):
    header = fits_tools.celestial_header(image_data.shape)
    header["WCSAXES"] = 4
    header["CTYPE3"], header["CRVAL3"], header["CDELT3"], header["CRPIX3"] = "FREQ", 1.4e9, 1e6, 1.0
    header["CTYPE4"], header["CRVAL4"], header["CDELT4"], header["CRPIX4"] = "STOKES", 1.0, 1.0, 1.0
    header["BMAJ"], header["BMIN"], header["BUNIT"] = 0.0015, 0.0012, "JY/BEAM"
    path = tmp_path / "radio.fits"
    fits.PrimaryHDU(image_data[np.newaxis, np.newaxis], header=header).writeto(path)
    cutout = read_cutout(path)
    assert cutout.data.shape == image_data.shape
    np.testing.assert_array_equal(cutout.data, image_data)
    assert cutout.wcs.naxis == 2
    assert list(cutout.wcs.wcs.ctype) == ["RA---TAN", "DEC--TAN"]
    expected = WCS(header).celestial.wcs_pix2world([[24.5, 19.5]], 0)[0]
    assert (cutout.ra_deg, cutout.dec_deg) == pytest.approx(tuple(expected), abs=1e-10)
    assert cutout.beam_major_arcsec == pytest.approx(5.4)
    assert cutout.beam_minor_arcsec == pytest.approx(4.32)
    assert cutout.pixel_scale_arcsec == pytest.approx(1.8)


def test_cd_matrix_instead_of_cdelt(tmp_path, image_data, fits_tools):
    angle = np.radians(30.0)
    scale = 2.0 / 3600.0
    header = fits_tools.celestial_header(image_data.shape)
    for key in ("CDELT1", "CDELT2"):
        del header[key]
    header["CD1_1"] = -scale * np.cos(angle)
    header["CD1_2"] = scale * np.sin(angle)
    header["CD2_1"] = scale * np.sin(angle)
    header["CD2_2"] = scale * np.cos(angle)
    header["CRPIX1"] = 10.0  # reference pixel away from the centre
    path = tmp_path / "cd.fits"
    fits.PrimaryHDU(image_data, header=header).writeto(path)
    cutout = read_cutout(path)
    assert cutout.warnings == []
    expected = WCS(header).wcs_pix2world([[24.5, 19.5]], 0)[0]
    assert cutout.ra_deg == pytest.approx(expected[0], abs=1e-10)
    assert cutout.dec_deg == pytest.approx(expected[1], abs=1e-10)
    assert cutout.ra_deg != pytest.approx(150.0, abs=1e-4)
    assert cutout.pixel_scale_arcsec == pytest.approx(2.0)


def test_missing_equinox_and_radesys_warns(tmp_path, image_data, fits_tools):
    header = fits_tools.celestial_header(image_data.shape)
    del header["RADESYS"]
    path = tmp_path / "noframe.fits"
    fits.PrimaryHDU(image_data, header=header).writeto(path)
    with pytest.warns(FITSQuirkWarning, match="neither RADESYS nor EQUINOX.*ICRS"):
        cutout = read_cutout(path)
    assert (cutout.ra_deg, cutout.dec_deg) == pytest.approx((150.0, 2.0), abs=1e-9)  # CRPIX at centre
    assert len(cutout.warnings) == 1 and str(path) in cutout.warnings[0]


def test_fk5_without_equinox_warns(tmp_path, image_data, fits_tools):
    header = fits_tools.celestial_header(image_data.shape)
    header["RADESYS"] = "FK5"
    path = tmp_path / "fk5.fits"
    fits.PrimaryHDU(image_data, header=header).writeto(path)
    with pytest.warns(FITSQuirkWarning, match="FK5 without EQUINOX; assuming J2000"):
        cutout = read_cutout(path)
    assert cutout.dec_deg == pytest.approx(2.0, abs=1e-9)


def test_tab_in_comment_cards_is_tolerated(tmp_path, image_data, fits_tools):
    header = fits_tools.celestial_header(image_data.shape)
    cards = [
        "SIMPLE  =                    T",
        "BITPIX  =                  -32",
        "NAXIS   =                    2",
        f"NAXIS1  = {image_data.shape[1]:>20}",
        f"NAXIS2  = {image_data.shape[0]:>20}",
        *fits_tools.header_cards(header),
        "BUNIT   = 'JY/BEAM '",
        "COMMENT Provenance:\tThe FIRST project team",
        "COMMENT Resolution:\t5\"",
    ]
    path = fits_tools.write_raw_fits(tmp_path / "tab.fits", cards, image_data.astype(">f4"))
    assert b"\t" in path.read_bytes()
    with pytest.warns(FITSQuirkWarning, match=r"non-printable.*TAB.*COMMENT"):
        cutout = read_cutout(path)
    np.testing.assert_array_equal(cutout.data, image_data)
    assert cutout.bunit == "JY/BEAM"
    assert cutout.pixel_scale_arcsec == pytest.approx(1.8)
    assert len(cutout.warnings) == 1 and "tab.fits" in cutout.warnings[0]


def test_blank_on_int16_with_bscale_bzero(tmp_path, fits_tools):
    stored = np.arange(-600, 600, dtype=np.int16).reshape(30, 40)
    stored[5, 7] = -32768
    stored[20, 1] = -32768
    cards = [
        "SIMPLE  =                    T",
        "BITPIX  =                   16",
        "NAXIS   =                    2",
        "NAXIS1  =                   40",
        "NAXIS2  =                   30",
        "BSCALE  =              0.00025",
        "BZERO   =                 0.01",
        "BLANK   =               -32768",
    ]
    path = fits_tools.write_raw_fits(tmp_path / "int16.fits", cards, stored.astype(">i2"))
    with pytest.warns(NoWCSWarning):
        cutout = read_cutout(path)
    assert cutout.data.dtype == np.float32
    assert np.isnan(cutout.data[5, 7]) and np.isnan(cutout.data[20, 1])
    assert cutout.mask.sum() == 2
    expected = stored.astype(np.float64) * 0.00025 + 0.01
    finite = ~cutout.mask
    np.testing.assert_allclose(cutout.data[finite], expected[finite], rtol=1e-6, atol=1e-9)
    # astropy agrees
    np.testing.assert_allclose(fits.getdata(path), cutout.data, rtol=1e-6, atol=1e-8, equal_nan=True)


def test_gzip_compressed_file(tmp_path, image_data, fits_tools):
    plain = tmp_path / "plain.fits"
    fits.PrimaryHDU(image_data, header=fits_tools.celestial_header(image_data.shape)).writeto(plain)
    packed = tmp_path / "packed.fits.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    cutout = read_cutout(packed)
    reference = read_cutout(plain)
    np.testing.assert_array_equal(cutout.data, reference.data)
    assert (cutout.ra_deg, cutout.dec_deg) == (reference.ra_deg, reference.dec_deg)
    assert cutout.sha256 == hashlib.sha256(packed.read_bytes()).hexdigest()
    assert cutout.sha256 != reference.sha256


def test_bzip2_and_multi_member_gzip(tmp_path, image_data, fits_tools):
    plain = tmp_path / "plain.fits"
    fits.PrimaryHDU(image_data, header=fits_tools.celestial_header(image_data.shape)).writeto(plain)
    content = plain.read_bytes()
    packed = tmp_path / "packed.fits.bz2"
    packed.write_bytes(bz2.compress(content))
    np.testing.assert_array_equal(read_cutout(packed).data, image_data)
    members = tmp_path / "members.fits.gz"  # as written by concatenating gzip files
    members.write_bytes(gzip.compress(content[:5000]) + gzip.compress(content[5000:]))
    np.testing.assert_array_equal(read_cutout(members).data, image_data)
    packed.write_bytes(bz2.compress(content)[:-100])
    with pytest.raises(CutoutReadError, match="truncated file: the bzip2 stream ends early"):
        read_cutout(packed)


def test_tile_compressed_file(tmp_path, image_data, fits_tools):
    image_data[3, 4] = np.nan
    header = fits_tools.celestial_header(image_data.shape)
    header["BMAJ"], header["BMIN"] = 5.4 / 3600, 5.4 / 3600
    compressed = fits.CompImageHDU(
        image_data, header=header, compression_type="GZIP_2", quantize_level=0.0
    )
    path = tmp_path / "tiles.fits.fz"
    fits.HDUList([fits.PrimaryHDU(), compressed]).writeto(path)
    cutout = read_cutout(path)
    assert cutout.hdu == 1
    np.testing.assert_array_equal(cutout.data, image_data)
    assert cutout.mask.sum() == 1
    assert cutout.pixel_scale_arcsec == pytest.approx(1.8)
    assert cutout.beam_major_arcsec == pytest.approx(5.4)
    assert cutout.ra_deg == pytest.approx(WCS(header).wcs_pix2world([[24.5, 19.5]], 0)[0][0])


def test_tile_compressed_int16_with_blank(tmp_path, fits_tools):
    stored = np.arange(0, 1200, dtype=np.int16).reshape(30, 40)
    stored[2, 3] = -32768
    compressed = fits.CompImageHDU(stored, header=fits_tools.celestial_header(stored.shape), compression_type="RICE_1")
    compressed.header["BSCALE"] = 0.5
    compressed.header["BZERO"] = 10.0
    compressed.header["BLANK"] = -32768
    path = tmp_path / "ints.fits.fz"
    fits.HDUList([fits.PrimaryHDU(), compressed]).writeto(path)
    cutout = read_cutout(path)
    assert np.isnan(cutout.data[2, 3])
    assert cutout.data[0, 1] == pytest.approx(1 * 0.5 + 10.0)
    assert cutout.data[29, 39] == pytest.approx(1199 * 0.5 + 10.0)


def test_image_in_extension_after_empty_primary(tmp_path, image_data, fits_tools):
    path = tmp_path / "multi.fits"
    image = fits.ImageHDU(image_data, header=fits_tools.celestial_header(image_data.shape), name="SCI")
    table = fits.BinTableHDU.from_columns([fits.Column(name="x", format="E", array=np.arange(3))])
    fits.HDUList([fits.PrimaryHDU(), table, image, fits.ImageHDU(image_data * 2)]).writeto(path)
    cutout = read_cutout(path)
    assert cutout.hdu == 2
    np.testing.assert_array_equal(cutout.data, image_data)
    assert cutout.pixel_scale_arcsec == pytest.approx(1.8)


def test_three_axes_with_one_plane_is_squeezed(tmp_path, image_data, fits_tools):
    header = fits_tools.celestial_header(image_data.shape)
    header["CTYPE3"] = "FREQ"
    path = tmp_path / "oneplane.fits"
    fits.PrimaryHDU(image_data[np.newaxis], header=header).writeto(path)
    cutout = read_cutout(path)
    assert cutout.data.shape == image_data.shape
    assert cutout.ra_deg is not None


def test_no_wcs_is_read_with_unknown_position(tmp_path, image_data):
    path = tmp_path / "nowcs.fits"
    fits.PrimaryHDU(image_data).writeto(path)
    with pytest.warns(NoWCSWarning, match="no celestial WCS"):
        cutout = read_cutout(path)
    assert cutout.ra_deg is None and cutout.dec_deg is None
    assert cutout.pixel_scale_arcsec is None and cutout.wcs is None
    np.testing.assert_array_equal(cutout.data, image_data)
    assert "nowcs.fits" in cutout.warnings[0]


def test_non_standard_unit_is_fixed_with_a_warning(tmp_path, image_data, fits_tools):
    header = fits_tools.celestial_header(image_data.shape)
    cards = [
        "SIMPLE  =                    T",
        "BITPIX  =                  -32",
        "NAXIS   =                    2",
        f"NAXIS1  = {image_data.shape[1]:>20}",
        f"NAXIS2  = {image_data.shape[0]:>20}",
        *[c for c in fits_tools.header_cards(header) if not c.startswith("CUNIT")],
        "CUNIT1  = 'DEGREES'",
        "CUNIT2  = 'DEGREES'",
    ]
    path = fits_tools.write_raw_fits(tmp_path / "units.fits", cards, image_data.astype(">f4"))
    with pytest.warns(FITSQuirkWarning, match="unitfix"):
        cutout = read_cutout(path)
    assert cutout.pixel_scale_arcsec == pytest.approx(1.8)


def test_unpadded_data_is_tolerated(tmp_path, image_data, fits_tools):
    header = fits_tools.celestial_header(image_data.shape)
    cards = [
        "SIMPLE  =                    T",
        "BITPIX  =                  -32",
        "NAXIS   =                    2",
        f"NAXIS1  = {image_data.shape[1]:>20}",
        f"NAXIS2  = {image_data.shape[0]:>20}",
        *fits_tools.header_cards(header),
    ]
    path = fits_tools.write_raw_fits(tmp_path / "short.fits", cards, image_data.astype(">f4"), pad=False)
    with pytest.warns(FITSQuirkWarning, match="not padded"):
        cutout = read_cutout(path)
    np.testing.assert_array_equal(cutout.data, image_data)


# ---------------------------------------------------------------- bad inputs


def test_not_a_fits_file(tmp_path):
    path = tmp_path / "notes.fits"
    path.write_text("RA,Dec\n150.0,2.0\n" * 200)
    with pytest.raises(CutoutReadError, match="not a FITS file") as info:
        read_cutout(path)
    assert info.value.path == str(path)


def test_zero_bytes(tmp_path):
    path = tmp_path / "empty.fits"
    path.write_bytes(b"")
    with pytest.raises(CutoutReadError, match=r"empty \(0 bytes\)"):
        read_cutout(path)


def test_missing_file(tmp_path):
    with pytest.raises(CutoutReadError, match="file not found"):
        read_cutout(tmp_path / "absent.fits")


def test_truncated_data(tmp_path, image_data, fits_tools):
    path = tmp_path / "cut.fits"
    fits.PrimaryHDU(image_data, header=fits_tools.celestial_header(image_data.shape)).writeto(path)
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(CutoutReadError, match="truncated file.*8000 data bytes") as info:
        read_cutout(path)
    assert info.value.hdu == 0


def test_truncated_header(tmp_path, mirabest_dir):
    source = sorted((mirabest_dir / "fits").glob("*.fits"))[0]
    path = tmp_path / "cut_header.fits"
    path.write_bytes(source.read_bytes()[:4000])  # the header spans 6 blocks
    with pytest.raises(CutoutReadError, match="truncated"):
        read_cutout(path)


def test_truncated_gzip(tmp_path, image_data):
    path = tmp_path / "cut.fits.gz"
    plain = tmp_path / "plain.fits"
    fits.PrimaryHDU(image_data).writeto(plain)
    path.write_bytes(gzip.compress(plain.read_bytes())[:-200])
    with pytest.raises(CutoutReadError, match="truncated file: the gzip stream ends early"):
        read_cutout(path)


def test_no_image_hdu(tmp_path):
    path = tmp_path / "table.fits"
    table = fits.BinTableHDU.from_columns([fits.Column(name="flux", format="E", array=np.ones(4))])
    fits.HDUList([fits.PrimaryHDU(), table]).writeto(path)
    with pytest.raises(CutoutReadError, match=r"no HDU holds an image.*1 BINTABLE"):
        read_cutout(path)


def test_all_nan_image(tmp_path):
    path = tmp_path / "blank.fits"
    fits.PrimaryHDU(np.full((20, 20), np.nan, dtype=np.float32)).writeto(path)
    with pytest.raises(CutoutReadError, match="all pixels are blank") as info:
        read_cutout(path)
    assert info.value.hdu == 0


def test_one_dimensional_data(tmp_path):
    path = tmp_path / "spectrum.fits"
    fits.PrimaryHDU(np.arange(100, dtype=np.float32)).writeto(path)
    with pytest.raises(CutoutReadError, match=r"1-D data \(NAXIS1=100\)"):
        read_cutout(path)


def test_cube_with_several_planes_is_refused_naming_the_axis(tmp_path, image_data, fits_tools):
    header = fits_tools.celestial_header(image_data.shape)
    header["CTYPE3"] = "FREQ"
    path = tmp_path / "cube.fits"
    fits.PrimaryHDU(np.stack([image_data] * 3), header=header).writeto(path)
    with pytest.raises(CutoutReadError, match=r"axis 3 \(CTYPE3='FREQ'\) of length 3") as info:
        read_cutout(path)
    assert info.value.hdu == 0


def test_file_over_the_size_limit(tmp_path, image_data):
    path = tmp_path / "big.fits"
    fits.PrimaryHDU(image_data).writeto(path)
    with pytest.raises(CutoutLimitError, match="max_bytes"):
        read_cutout(path, limits=ReadLimits(max_bytes=5000))


def test_gzip_over_the_size_limit_once_decompressed(tmp_path):
    path = tmp_path / "bomb.fits.gz"
    plain = tmp_path / "zeros.fits"
    fits.PrimaryHDU(np.zeros((200, 200), dtype=np.float32)).writeto(plain)
    path.write_bytes(gzip.compress(plain.read_bytes()))
    assert path.stat().st_size < 5000
    with pytest.raises(CutoutLimitError, match="decompress to more than"):
        read_cutout(path, limits=ReadLimits(max_bytes=50_000))


def test_image_over_the_pixel_limit(tmp_path, image_data):
    path = tmp_path / "wide.fits"
    fits.PrimaryHDU(image_data).writeto(path)
    with pytest.raises(CutoutLimitError, match=r"50 x 40 = 2000 pixels.*max_pixels"):
        read_cutout(path, limits=ReadLimits(max_pixels=1999))


def test_compressed_image_over_the_pixel_limit(tmp_path, image_data):
    path = tmp_path / "wide.fits.fz"
    fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(image_data)]).writeto(path)
    with pytest.raises(CutoutLimitError, match="max_pixels") as info:
        read_cutout(path, limits=ReadLimits(max_pixels=1000))
    assert info.value.hdu == 1


def test_limits_are_validated():
    with pytest.raises(ValueError, match="max_pixels"):
        ReadLimits(max_pixels=0)


def test_sip_distortion_is_applied(tmp_path, image_data, fits_tools):
    header = fits_tools.celestial_header(image_data.shape)
    header["CTYPE1"], header["CTYPE2"] = "RA---TAN-SIP", "DEC--TAN-SIP"
    header["CRPIX1"], header["CRPIX2"] = 1.0, 1.0  # so that the centre is far from the reference
    header["A_ORDER"], header["B_ORDER"] = 2, 2
    header["A_2_0"], header["B_0_2"] = 2e-3, -1e-3
    path = tmp_path / "sip.fits"
    fits.PrimaryHDU(image_data, header=header).writeto(path)
    cutout = read_cutout(path)
    reference = WCS(header)
    expected = reference.all_pix2world([[24.5, 19.5]], 0)[0]
    undistorted = reference.wcs_pix2world([[24.5, 19.5]], 0)[0]
    assert abs(expected[0] - undistorted[0]) * 3600 > 1.0  # the distortion matters here
    assert cutout.ra_deg == pytest.approx(expected[0], abs=1e-10)
    assert cutout.dec_deg == pytest.approx(expected[1], abs=1e-10)
    assert cutout.wcs.sip is not None


def test_obsolete_keywords_each_give_one_warning(tmp_path, fits_tools):
    header = fits_tools.celestial_header((40, 50))
    cards = [
        "SIMPLE  =                    T",
        "BITPIX  =                  -32",
        "NAXIS   =                    2",
        "NAXIS1  =                   50",
        "NAXIS2  =                   40",
        *[c for c in fits_tools.header_cards(header) if not c.startswith(("RADESYS", "PC"))],
        "RADECSYS= 'FK5     '",
        "EPOCH   =               2000.0",
        "CROTA2  =                 10.0",
        "BLANK   =                    0",
    ]
    path = fits_tools.write_raw_fits(tmp_path / "old.fits", cards, np.ones((40, 50), ">f4"))
    with pytest.warns(FITSQuirkWarning) as record:
        cutout = read_cutout(path)
    messages = [str(w.message) for w in record]
    assert len(messages) == 2 == len(cutout.warnings)
    assert any("RADECSYS keyword is deprecated" in m for m in messages)
    assert any("BLANK applies only to integer images" in m for m in messages)
    assert cutout.wcs.wcs.radesys == "FK5" and cutout.wcs.wcs.equinox == 2000.0
    assert np.all(cutout.data == 1.0)  # BLANK = 0 did not blank the float pixels
    with pytest.warns(FITSFixedWarning, match="RADECSYS"):
        rotated = WCS(fits.Header.fromstring("".join(c.ljust(80) for c in cards[5:]) + "END".ljust(80)))
    expected = rotated.wcs_pix2world([[24.5, 19.5]], 0)[0]
    assert (cutout.ra_deg, cutout.dec_deg) == pytest.approx(tuple(expected), abs=1e-10)


def test_every_tenth_mirabest_file_matches_astropy_exactly(mirabest_dir):
    """The fast card reader against astropy.io.fits + astropy.wcs on real files."""
    import warnings

    from astropy.wcs import FITSFixedWarning

    for path in sorted((mirabest_dir / "fits").glob("*.fits"))[::10]:
        cutout = read_cutout(path)
        with fits.open(path) as hdulist, warnings.catch_warnings():
            warnings.simplefilter("ignore", FITSFixedWarning)
            header = hdulist[0].header
            expected = hdulist[0].data
            wcs = WCS(header)
        np.testing.assert_array_equal(cutout.data, expected, err_msg=str(path))
        centre = ((header["NAXIS1"] - 1) / 2, (header["NAXIS2"] - 1) / 2)
        assert (cutout.ra_deg, cutout.dec_deg) == pytest.approx(tuple(wcs.wcs_pix2world([centre], 0)[0]), abs=1e-10)
        assert np.allclose(cutout.wcs.wcs.cdelt, wcs.wcs.cdelt) and np.allclose(cutout.wcs.wcs.crpix, wcs.wcs.crpix)
        assert cutout.bunit == header.get("BUNIT")
