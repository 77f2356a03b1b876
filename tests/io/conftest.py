"""Fixtures for the reader tests (mirabest_dir comes from tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS


def celestial_header(shape=(64, 64), *, ra_deg=150.0, dec_deg=2.0, scale_deg=0.0005):
    """A TAN header with the reference pixel at the image centre."""
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [ra_deg, dec_deg]
    wcs.wcs.crpix = [(shape[1] + 1) / 2, (shape[0] + 1) / 2]
    wcs.wcs.cdelt = [-scale_deg, scale_deg]
    wcs.wcs.radesys = "ICRS"
    return wcs.to_header()


def write_raw_fits(path, cards, data=None, *, pad=True):
    """Write a one-HDU FITS file from raw 80-character cards and big-endian data.

    ``cards`` is a list of str (each padded to 80 characters, so they may hold
    characters astropy would refuse, such as TAB); the END card is added.
    """
    text = "".join(card.ljust(80)[:80] for card in cards) + "END".ljust(80)
    header = text.encode("latin-1")
    header += b" " * (-len(header) % 2880)
    payload = b""
    if data is not None:
        payload = np.ascontiguousarray(data).tobytes()
        if pad:
            payload += b"\0" * (-len(payload) % 2880)
    Path(path).write_bytes(header + payload)
    return Path(path)


def header_cards(header: fits.Header) -> list[str]:
    return [str(card) for card in header.cards]


@pytest.fixture
def fits_tools():
    """The helpers above, as a fixture (test modules cannot import conftest)."""
    return SimpleNamespace(
        celestial_header=celestial_header, write_raw_fits=write_raw_fits, header_cards=header_cards
    )


@pytest.fixture
def image_data():
    rng = np.random.default_rng(42)
    return rng.normal(0.0, 1e-4, size=(40, 50)).astype(np.float32)
