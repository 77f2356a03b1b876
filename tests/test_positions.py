"""Positions and radii as astronomers write them, read by one parser for the CLI, the API and the page."""

import pytest
from astropy import units as u
from astropy.coordinates import SkyCoord

from survey_classifier.positions import PositionError, parse_dec, parse_position, parse_ra, parse_radius


@pytest.mark.parametrize(
    "text, expected",
    [
        ("10:00:00 +02:12:00", (150.0, 2.2)),
        ("10h00m00s +02d12m00s", (150.0, 2.2)),
        ("10 00 00 +02 12 00", (150.0, 2.2)),
        ("150.0 2.2", (150.0, 2.2)),
        ("150.0, 2.2", (150.0, 2.2)),
        ("10:00:00-02:12:00", (150.0, -2.2)),
        ("23:59:59.9 -89:59:59", (359.999583333, -89.999722222)),
        ("0 -00:30:00", (0.0, -0.5)),
    ],
)
def test_positions(text, expected):
    ra, dec = parse_position(text)
    assert ra == pytest.approx(expected[0], abs=1e-8) and dec == pytest.approx(expected[1], abs=1e-8)


def test_sexagesimal_agrees_with_astropy_skycoord():
    for text in ("13:29:52.7 +47:11:43", "00:42:44.3 +41:16:09", "05:35:17.3 -05:23:28"):
        coord = SkyCoord(text, unit=(u.hourangle, u.deg))
        assert parse_position(text) == pytest.approx((coord.ra.deg, coord.dec.deg), abs=1e-9)


@pytest.mark.parametrize(
    "text, degrees",
    [("0.5", 0.5), ("30arcsec", 30 / 3600), ('30"', 30 / 3600), ("2arcmin", 2 / 60), ("2'", 2 / 60),
     ("0.5deg", 0.5), ("1d", 1.0), (0.25, 0.25)],
)
def test_radii(text, degrees):
    assert parse_radius(text) == pytest.approx(degrees, rel=1e-12)


def test_a_plain_number_is_degrees_and_sexagesimal_ra_is_hours():
    assert parse_ra("150.25") == 150.25 and parse_ra("10:01:00") == pytest.approx(150.25)
    assert parse_ra("10h01m") == pytest.approx(150.25) and parse_ra("150d15m") == pytest.approx(150.25)
    assert parse_dec("+02:12:00") == pytest.approx(2.2) and parse_dec("-2.2") == -2.2
    assert parse_ra(360) == 0.0


@pytest.mark.parametrize(
    "call, words",
    [
        (lambda: parse_ra("abc"), "ra: 'abc' is not an angle"),
        (lambda: parse_ra("25:00:00"), "ra: '25:00:00' is not an angle"),
        (lambda: parse_ra("10:00:60"), "is not an angle"),  # astropy would only warn and carry the minute
        (lambda: parse_ra("400"), "right ascension must be in [0, 360]"),
        (lambda: parse_ra("nan"), "not an angle"),
        (lambda: parse_ra("1e999"), "finite"),
        (lambda: parse_dec("-91"), "declination must be in [-90, 90]"),
        (lambda: parse_dec("", parameter="--dec"), "--dec: expected an angle, got an empty value"),
        (lambda: parse_radius("0"), "above 0 and at most 180 degrees"),
        (lambda: parse_radius("30kg"), "radius: '30kg' is not an angle"),
        (lambda: parse_radius("11", maximum_deg=10), "at most 10 degrees"),
        (lambda: parse_position("150.0"), "is not a position; give RA and Dec"),
        (lambda: parse_position("1 2 3"), "is not a position"),
        (lambda: parse_position("x" * 100), "too long"),
    ],
)
def test_refusals_name_the_parameter(call, words):
    with pytest.raises(PositionError, match=None) as raised:
        call()
    assert words in str(raised.value)
