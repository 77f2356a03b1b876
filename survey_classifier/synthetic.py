"""Synthetic FIRST-like radio cutouts with known truth, for the demo and tests.

The cutouts imitate VLA FIRST images as SkyView serves them: float32 FITS in
Jy/beam, 1.8 arcsec pixels on a TAN projection centred on the source, a
circular 5.4 arcsec (FWHM) restoring beam recorded in BMAJ/BMIN, and noise of
0.15 mJy/beam correlated on the scale of the beam (white noise smoothed by the
beam and rescaled, as in an interferometric image). Three kinds of source are
drawn, at random positions, position angles and fluxes:

``compact``
    An unresolved source: one beam-sized component.
``fri``
    An FRI-like radio galaxy: a bright core and two jets whose surface
    brightness fades outward, with unequal sides (Doppler boosting).
``frii``
    An FRII-like radio galaxy: a faint core and two lobes that are brightest
    at their outer edges, where compact hotspots sit.

Each component is an elliptical Gaussian of known total flux convolved with
the beam analytically, so the image holds exactly the flux of the truth table
(apart from the noise and the wings beyond the cutout edge).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from scipy import ndimage

__all__ = ["KINDS", "make_synthetic_cutouts", "make_synthetic_mosaic", "render_components"]

#: Kinds of synthetic source, drawn in turn.
KINDS = ("compact", "fri", "frii")

PIXEL_SCALE_ARCSEC = 1.8
BEAM_FWHM_ARCSEC = 5.4
NOISE_JY = 1.5e-4
_FWHM_TO_SIGMA = 1.0 / (2.0 * math.sqrt(2.0 * math.log(2.0)))


def render_components(shape, components, *, beam_sigma_px):
    """Image (Jy/beam) of Gaussian components convolved with a circular beam.

    Parameters
    ----------
    shape : tuple of int
        (ny, nx) of the image.
    components : iterable of tuple
        ``(x, y, flux_jy, sigma_major_px, sigma_minor_px, angle_rad)``: the
        centre in 0-based pixels, the total flux, the intrinsic Gaussian
        widths (0 for a point source) and the angle of the major axis from
        the +x axis.
    beam_sigma_px : float
        Gaussian sigma of the beam in pixels.

    Returns
    -------
    ndarray of float64
        Each component contributes ``flux * beam_area / (2 pi s1 s2)`` at its
        peak, with ``s1**2 = sigma_major**2 + beam_sigma**2`` (likewise s2),
        so that summing the image and dividing by the beam area in pixels
        gives back the total flux.
    """
    ny, nx = shape
    y, x = np.mgrid[0:ny, 0:nx].astype(np.float64)
    image = np.zeros(shape)
    beam_var = beam_sigma_px**2
    for cx, cy, flux, sigma_major, sigma_minor, angle in components:
        var_major = sigma_major**2 + beam_var
        var_minor = sigma_minor**2 + beam_var
        cos, sin = math.cos(angle), math.sin(angle)
        along = (x - cx) * cos + (y - cy) * sin
        across = -(x - cx) * sin + (y - cy) * cos
        peak = flux * beam_var / math.sqrt(var_major * var_minor)
        image += peak * np.exp(-0.5 * (along**2 / var_major + across**2 / var_minor))
    return image


def _noise(rng, shape, beam_sigma_px, dtype=np.float64):
    """Noise of rms NOISE_JY correlated like a restored interferometric image."""
    white = rng.standard_normal(shape, dtype=dtype)
    # smoothing white noise by a Gaussian of sigma s gives an autocorrelation of
    # sigma s*sqrt(2); s = beam/sqrt(2) makes it the shape of the beam
    smooth = ndimage.gaussian_filter(white, beam_sigma_px / math.sqrt(2.0), mode="wrap")
    smooth *= NOISE_JY / smooth.std()
    return smooth


def _double(rng, kind, centre, flux_jy, separation_px, angle):
    """Components of an FRI or FRII source along ``angle`` (radians)."""
    cx, cy = centre
    components = []
    half = separation_px / 2.0
    side_ratio = rng.uniform(0.55, 1.0)  # the receding side is fainter
    if kind == "fri":
        core_fraction = rng.uniform(0.15, 0.3)
        components.append((cx, cy, core_fraction * flux_jy, 0.0, 0.0, angle))
        jet_flux = (1.0 - core_fraction) * flux_jy
        # a smooth jet: overlapping knots about a pixel apart, fading outward
        # and widening as the jet expands
        n_knots = max(6, int(half))
        weights = np.exp(-3.0 * np.arange(n_knots) / n_knots)
        for sign, share in ((1.0, 1.0 / (1.0 + side_ratio)), (-1.0, side_ratio / (1.0 + side_ratio))):
            for knot, weight in enumerate(weights):
                distance = half * (knot + 1) / n_knots
                flux = jet_flux * share * weight / weights.sum()
                width = 0.6 + 1.8 * (knot + 1) / n_knots
                components.append(
                    (
                        cx + sign * distance * math.cos(angle),
                        cy + sign * distance * math.sin(angle),
                        flux,
                        width * 1.3,
                        width,
                        angle,
                    )
                )
    else:  # frii
        core_fraction = rng.uniform(0.0, 0.05)
        if core_fraction > 0.01:
            components.append((cx, cy, core_fraction * flux_jy, 0.0, 0.0, angle))
        lobe_flux = (1.0 - core_fraction) * flux_jy
        for sign, share in ((1.0, 1.0 / (1.0 + side_ratio)), (-1.0, side_ratio / (1.0 + side_ratio))):
            hotspot = 0.35 * lobe_flux * share
            lobe = 0.65 * lobe_flux * share
            ux, uy = sign * math.cos(angle), sign * math.sin(angle)
            components.append((cx + half * ux, cy + half * uy, hotspot, 0.3, 0.3, angle))
            # the lobe trails back towards the core from the hotspot
            lobe_length = 0.25 * half
            components.append(
                (
                    cx + (half - lobe_length) * ux,
                    cy + (half - lobe_length) * uy,
                    lobe,
                    lobe_length,
                    rng.uniform(1.5, 3.0),
                    angle,
                )
            )
    return components


def make_synthetic_cutouts(directory, n=24, *, seed=0, size=150):
    """Write ``n`` synthetic FIRST-like cutouts and their truth catalogue.

    Parameters
    ----------
    directory : str or os.PathLike
        Created if needed; receives ``synthetic_NNN_KIND.fits`` files and
        ``catalogue.csv``.
    n : int
        Number of cutouts; the kinds of :data:`KINDS` are drawn in turn.
    seed : int
        Seed of the random generator: the same seed writes the same files,
        byte for byte.
    size : int
        Side of the square cutouts in pixels (1.8 arcsec each).

    Returns
    -------
    astropy.table.Table
        The truth, also written as ``catalogue.csv``: ``file`` (name
        relative to ``directory``), ``ra_deg``, ``dec_deg`` (the image
        centre, where the source is centred), ``kind``, ``flux_jy`` (total),
        ``separation_arcsec`` (distance between the outer hotspots of an
        FRII, the ends of the jets of an FRI, 0 for a compact source) and
        ``pa_deg`` (position angle of the axis, east of north).

    Examples
    --------
    >>> from survey_classifier.synthetic import make_synthetic_cutouts  # doctest: +SKIP
    >>> truth = make_synthetic_cutouts("demo_cutouts", n=6)  # doctest: +SKIP
    >>> list(truth["kind"])  # doctest: +SKIP
    ['compact', 'fri', 'frii', 'compact', 'fri', 'frii']
    """
    from astropy.io import fits
    from astropy.table import Table

    if int(n) < 1:
        msg = f"n must be at least 1, got {n!r}"
        raise ValueError(msg)
    if int(size) < 32:
        msg = f"size must be at least 32 pixels, got {size!r}"
        raise ValueError(msg)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    beam_sigma_px = BEAM_FWHM_ARCSEC * _FWHM_TO_SIGMA / PIXEL_SCALE_ARCSEC
    shape = (size, size)
    centre = ((size - 1) / 2.0, (size - 1) / 2.0)
    max_separation_px = 0.75 * size

    rows = []
    for index in range(int(n)):
        kind = KINDS[index % len(KINDS)]
        ra_deg = float(rng.uniform(110.0, 250.0))
        dec_deg = float(np.degrees(np.arcsin(rng.uniform(-0.1, 0.87))))
        pa_deg = float(rng.uniform(0.0, 180.0))
        # position angle is east of north; east is -x (RA grows leftwards)
        angle = math.radians(90.0 + pa_deg)
        if kind == "compact":
            flux_jy = float(10 ** rng.uniform(math.log10(0.003), math.log10(0.08)))
            separation_px = 0.0
            components = [(centre[0], centre[1], flux_jy, 0.0, 0.0, angle)]
        else:
            low, high = (0.02, 0.3) if kind == "fri" else (0.05, 0.6)
            flux_jy = float(10 ** rng.uniform(math.log10(low), math.log10(high)))
            separation_px = float(rng.uniform(20.0, max_separation_px))
            components = _double(rng, kind, centre, flux_jy, separation_px, angle)
        image = render_components(shape, components, beam_sigma_px=beam_sigma_px)
        image += _noise(rng, shape, beam_sigma_px)
        name = f"synthetic_{index:03d}_{kind}.fits"
        _write(fits, directory / name, image.astype(np.float32), ra_deg, dec_deg, size, kind)
        rows.append(
            (
                name,
                ra_deg,
                dec_deg,
                kind,
                flux_jy,
                separation_px * PIXEL_SCALE_ARCSEC,
                pa_deg,
            )
        )
    truth = Table(
        rows=rows,
        names=("file", "ra_deg", "dec_deg", "kind", "flux_jy", "separation_arcsec", "pa_deg"),
    )
    truth.write(directory / "catalogue.csv", format="ascii.csv", overwrite=True)
    return truth


def _write(fits, path, image, ra_deg, dec_deg, size, kind):
    header = fits.Header()
    header["CTYPE1"] = ("RA---TAN", "Right ascension, gnomonic projection")
    header["CTYPE2"] = ("DEC--TAN", "Declination, gnomonic projection")
    header["CRVAL1"] = (ra_deg, "[deg] RA of the reference pixel")
    header["CRVAL2"] = (dec_deg, "[deg] Dec of the reference pixel")
    header["CRPIX1"] = ((size + 1) / 2.0, "reference pixel: the image centre")
    header["CRPIX2"] = ((size + 1) / 2.0, "reference pixel: the image centre")
    header["CDELT1"] = (-PIXEL_SCALE_ARCSEC / 3600.0, "[deg] 1.8 arcsec pixels")
    header["CDELT2"] = (PIXEL_SCALE_ARCSEC / 3600.0, "[deg] 1.8 arcsec pixels")
    header["CUNIT1"] = "deg"
    header["CUNIT2"] = "deg"
    header["RADESYS"] = "FK5"
    header["EQUINOX"] = 2000.0
    header["BMAJ"] = (BEAM_FWHM_ARCSEC / 3600.0, "[deg] beam FWHM major axis")
    header["BMIN"] = (BEAM_FWHM_ARCSEC / 3600.0, "[deg] beam FWHM minor axis")
    header["BPA"] = (0.0, "[deg] beam position angle")
    header["BUNIT"] = "JY/BEAM"
    header["TELESCOP"] = "VLA"
    header["SURVEY"] = "FIRST (synthetic)"
    header["OBJECT"] = f"synthetic {kind}"
    header["COMMENT"] = "Synthetic FIRST-like cutout written by survey_classifier.synthetic"
    fits.PrimaryHDU(image, header=header).writeto(path, overwrite=True)


def _mosaic_sources(rng, n_sources, field_shape, margin_px, min_distance_px, max_separation_px, positions=None):
    """Kinds, global pixel positions, fluxes, sizes and components of the sources of a mosaic."""
    ny, nx = field_shape
    placed = [] if positions is None else [(float(x), float(y)) for x, y in positions]
    attempts = 0
    while len(placed) < n_sources:
        attempts += 1
        if attempts > 200 * n_sources:
            msg = f"cannot place {n_sources} sources {min_distance_px} px apart in a {nx}x{ny} field"
            raise ValueError(msg)
        x, y = rng.uniform(margin_px, nx - 1 - margin_px), rng.uniform(margin_px, ny - 1 - margin_px)
        if all((x - px) ** 2 + (y - py) ** 2 >= min_distance_px**2 for px, py in placed):
            placed.append((x, y))
    sources = []
    for index, (x, y) in enumerate(placed):
        kind = KINDS[index % len(KINDS)]
        pa_deg = float(rng.uniform(0.0, 180.0))
        angle = math.radians(90.0 + pa_deg)  # east of north; east is -x
        if kind == "compact":
            flux_jy = float(10 ** rng.uniform(math.log10(0.003), math.log10(0.08)))
            separation_px = 0.0
            components = [(x, y, flux_jy, 0.0, 0.0, angle)]
        else:
            low, high = (0.02, 0.3) if kind == "fri" else (0.05, 0.6)
            flux_jy = float(10 ** rng.uniform(math.log10(low), math.log10(high)))
            separation_px = float(rng.uniform(20.0, max_separation_px))
            components = _double(rng, kind, (x, y), flux_jy, separation_px, angle)
        sources.append((kind, x, y, flux_jy, separation_px, pa_deg, components))
    return sources


def _paint(image, components, beam_sigma_px, window_px, to_tile=None):
    """Add the components of one source to ``image`` within a window around them.

    ``to_tile`` maps a component's pixel position on the survey's grid to
    the image's own pixels (for a tile with a projection of its own).
    """
    if to_tile is not None:
        components = [(*to_tile(cx, cy), *rest) for cx, cy, *rest in components]
    xs = [component[0] for component in components]
    ys = [component[1] for component in components]
    half = window_px // 2
    x0 = int(round((min(xs) + max(xs)) / 2)) - half
    y0 = int(round((min(ys) + max(ys)) / 2)) - half
    ny, nx = image.shape
    left, bottom = max(0, x0), max(0, y0)
    right, top = min(nx, x0 + window_px), min(ny, y0 + window_px)
    if left >= right or bottom >= top:
        return
    local = [(cx - left, cy - bottom, *rest) for cx, cy, *rest in components]
    image[bottom:top, left:right] += render_components((top - bottom, right - left), local, beam_sigma_px=beam_sigma_px)


def _mosaic_header(fits, shape, crval, crpix, degenerate_axes):
    header = fits.Header()
    ny, nx = shape
    header["CTYPE1"] = ("RA---SIN", "Right ascension, orthographic projection")
    header["CTYPE2"] = ("DEC--SIN", "Declination, orthographic projection")
    header["CRVAL1"] = (crval[0], "[deg] RA of the reference pixel")
    header["CRVAL2"] = (crval[1], "[deg] Dec of the reference pixel")
    header["CRPIX1"] = crpix[0]
    header["CRPIX2"] = crpix[1]
    header["CDELT1"] = (-PIXEL_SCALE_ARCSEC / 3600.0, "[deg] 1.8 arcsec pixels")
    header["CDELT2"] = (PIXEL_SCALE_ARCSEC / 3600.0, "[deg] 1.8 arcsec pixels")
    header["CUNIT1"] = "deg"
    header["CUNIT2"] = "deg"
    if degenerate_axes:  # a FIRST/NVSS image: frequency and Stokes axes of length 1
        header["CTYPE3"], header["CRVAL3"], header["CRPIX3"], header["CDELT3"] = "FREQ", 1.4e9, 1.0, 3e7
        header["CTYPE4"], header["CRVAL4"], header["CRPIX4"], header["CDELT4"] = "STOKES", 1.0, 1.0, 1.0
    header["RADESYS"] = "FK5"
    header["EQUINOX"] = 2000.0
    header["BMAJ"] = (BEAM_FWHM_ARCSEC / 3600.0, "[deg] beam FWHM major axis")
    header["BMIN"] = (BEAM_FWHM_ARCSEC / 3600.0, "[deg] beam FWHM minor axis")
    header["BPA"] = (0.0, "[deg] beam position angle")
    header["BUNIT"] = "JY/BEAM"
    header["TELESCOP"] = "VLA"
    header["SURVEY"] = "FIRST (synthetic mosaic)"
    return header


def make_synthetic_mosaic(
    directory,
    *,
    n_sources=30,
    tile_shape=(1024, 1024),
    grid=(2, 2),
    overlap=128,
    centre=(150.0, 30.0),
    seed=0,
    shared_grid=True,
    degenerate_axes=False,
    margin_px=80,
    min_distance_px=90,
    max_separation_px=110.0,
    noise_jy=NOISE_JY,
    positions=None,
):
    """Write a synthetic FIRST-like survey mosaic, in tiles, and the catalogue of its sources.

    The sky of the survey is one SIN projection about ``centre`` on 1.8 arcsec
    pixels, with the beam and noise of :func:`make_synthetic_cutouts`;
    sources of the three :data:`KINDS` are injected at known positions, at
    least ``min_distance_px`` apart and ``margin_px`` inside the field. The
    field is cut into ``grid`` (rows, columns) tiles of ``tile_shape``
    pixels overlapping by ``overlap`` pixels, as surveys deliver it.

    Parameters
    ----------
    directory : str or os.PathLike
        Receives ``tiles/tile_R_C.fits`` and ``catalogue.csv``.
    shared_grid : bool
        True: the tiles are pieces of one image (one noise field, the same
        projection centre; their pixels agree where they overlap). False:
        each tile has its own SIN projection centred on it, and its own
        noise, like the FIRST coadded images.
    degenerate_axes : bool
        Write NAXIS=4 images (frequency and Stokes axes of length 1).
    noise_jy : float
        Rms of the noise (FIRST's 0.15 mJy/beam); 0 for images of the
        sources alone.
    positions : sequence of (float, float), optional
        Pixel positions (0-based, on the survey's grid: tile ``0_0`` starts
        at its origin) of the sources, instead of random ones; their number
        is then ``n_sources``.

    Returns
    -------
    astropy.table.Table
        The truth, also ``catalogue.csv``: ``id``, ``ra_deg``, ``dec_deg``,
        ``kind``, ``flux_jy`` (total), ``separation_arcsec``, ``pa_deg``.
    """
    from astropy.io import fits
    from astropy.table import Table
    from astropy.wcs import WCS

    directory = Path(directory)
    (directory / "tiles").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    beam_sigma_px = BEAM_FWHM_ARCSEC * _FWHM_TO_SIGMA / PIXEL_SCALE_ARCSEC
    rows, columns = grid
    tile_ny, tile_nx = tile_shape
    field = (rows * (tile_ny - overlap) + overlap, columns * (tile_nx - overlap) + overlap)
    field_crpix = ((field[1] + 1) / 2.0, (field[0] + 1) / 2.0)
    field_wcs = WCS(_mosaic_header(fits, field, centre, field_crpix, False))
    if positions is not None:
        n_sources = len(positions)
    sources = _mosaic_sources(rng, n_sources, field, margin_px, min_distance_px, max_separation_px, positions)
    window = int(max_separation_px) + 80

    tiles = []
    for row in range(rows):
        for column in range(columns):
            x0, y0 = column * (tile_nx - overlap), row * (tile_ny - overlap)
            tiles.append((row, column, x0, y0))
    def noise(shape):
        if noise_jy <= 0:
            return np.zeros(shape, dtype=np.float32)
        return _noise(rng, shape, beam_sigma_px, dtype=np.float32) * np.float32(noise_jy / NOISE_JY)

    if shared_grid:
        sky = noise(field)
        for *_, components in sources:
            _paint(sky, components, beam_sigma_px, window)
    for row, column, x0, y0 in tiles:
        if shared_grid:
            crval, crpix = centre, (field_crpix[0] - x0, field_crpix[1] - y0)
            image = sky[y0 : y0 + tile_ny, x0 : x0 + tile_nx]
        else:
            crval = tuple(field_wcs.wcs_pix2world([[x0 + (tile_nx - 1) / 2.0, y0 + (tile_ny - 1) / 2.0]], 0)[0])
            crpix = ((tile_nx + 1) / 2.0, (tile_ny + 1) / 2.0)
            tile_wcs = WCS(_mosaic_header(fits, tile_shape, crval, crpix, False))

            def to_tile(x, y, tile_wcs=tile_wcs):
                world = field_wcs.wcs_pix2world([[x, y]], 0)
                return tuple(float(v) for v in tile_wcs.wcs_world2pix(world, 0)[0])

            image = noise(tile_shape)
            for *_, components in sources:
                _paint(image, components, beam_sigma_px, window, to_tile=to_tile)
        header = _mosaic_header(fits, tile_shape, crval, crpix, degenerate_axes)
        data = image.reshape((1, 1, *tile_shape)) if degenerate_axes else image
        fits.PrimaryHDU(np.ascontiguousarray(data, dtype=np.float32), header=header).writeto(
            directory / "tiles" / f"tile_{row}_{column}.fits", overwrite=True
        )
    positions = field_wcs.wcs_pix2world([[s[1], s[2]] for s in sources], 0)
    truth = Table(
        rows=[
            (f"SYN{index + 1:04d}", float(ra) % 360.0, float(dec), kind, flux_jy, separation_px * PIXEL_SCALE_ARCSEC,
             pa_deg)
            for index, ((kind, _, _, flux_jy, separation_px, pa_deg, _), (ra, dec)) in enumerate(
                zip(sources, positions)
            )
        ],
        names=("id", "ra_deg", "dec_deg", "kind", "flux_jy", "separation_arcsec", "pa_deg"),
    )
    truth.write(directory / "catalogue.csv", format="ascii.csv", overwrite=True)
    return truth
