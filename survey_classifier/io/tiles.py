"""Survey mosaic tiles: their headers, and boxes of their pixels read without reading the tile.

A tile is a FITS image of thousands of pixels a side with one celestial WCS
(a FIRST, NVSS, LoTSS, RACS or EMU mosaic). :func:`read_tile_header` finds
the first image HDU by reading headers only, block by block (a few range
requests on an object store), and keeps what cutting needs: the pixel
layout (data offset, BITPIX, shape, BSCALE/BZERO/BLANK), the celestial WCS,
pixel scale, beam and unit.

:class:`TileCache` opens each tile once per batch:

- a local uncompressed tile is memory-mapped (:class:`numpy.memmap` at the
  data offset): cutting a box touches only the pages of its rows;
- a remote uncompressed tile (``s3://``, ``gs://``, ``https://``) is read in
  bands of whole rows, one range request per band of about 8 MiB, kept
  while the batch lasts (the sources of a batch are ordered by tile and
  row, so one band serves many cutouts);
- a compressed tile (tile-compressed ``.fits.fz``, or gzip) goes through
  :mod:`astropy.io.fits`: a local ``.fz`` decompresses only the compression
  tiles a box overlaps; a gzip tile, or a remote compressed one, is read
  whole once per batch (decompress such tiles for survey-scale runs).

Header fields are cached per process, keyed by the tile's version (its
modification time, or the ETag of an object), so a tile changed between
batches is read afresh.
"""

from __future__ import annotations

import math
import re
import threading
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np

from survey_classifier.errors import CutoutReadError
from survey_classifier.io import remote

__all__ = ["TILE_SUFFIXES", "TileHeader", "TileCache", "read_tile_header", "physical_values"]

#: File name endings taken as tiles when a folder of mosaics is listed.
TILE_SUFFIXES = (".fits", ".fit", ".fts", ".fits.fz", ".fz", ".fits.gz")

_BLOCK = 2880
_CARD = 80
_BITPIX_DTYPES = {8: "u1", 16: ">i2", 32: ">i4", 64: ">i8", -32: ">f4", -64: ">f8"}
_PRINTABLE = bytes(range(0x20, 0x7F))
_SANITISE = bytes(b if 0x20 <= b < 0x7F else 0x20 for b in range(256))
_AIPS_BEAM = re.compile(r"BMAJ\s*=\s*([-+0-9.EeDd]+)\s+BMIN\s*=\s*([-+0-9.EeDd]+)")
#: Bytes of whole rows fetched by one range request from a remote tile.
BAND_BYTES = 8 * 1024 * 1024
#: Bands of rows kept per remote tile while a batch lasts.
MAX_BANDS = 4
_HEADER_CACHE_SIZE = 4096


@dataclass
class TileHeader:
    """What is needed to cut boxes out of one tile, read from its header.

    Attributes
    ----------
    url : str
        Path or URL of the tile.
    version : str
        Modification time (local) or ETag (object store) when read.
    hdu : int
        Index of the image HDU.
    shape : tuple of int
        ``(ny, nx)`` of the image (degenerate axes dropped).
    data_offset : int
        Byte offset of the pixels in the file (uncompressed tiles).
    dtype : str
        Big-endian numpy dtype of the stored pixels.
    bscale, bzero : float
    blank : int or None
    compression : str or None
        None, ``"tile"`` (``.fits.fz``) or ``"gzip"``.
    header : str
        The image HDU's header cards, one per line.
    wcs : astropy.wcs.WCS
        The celestial WCS, ``pixel_shape`` set; shared by every cutout of
        the tile: copy it before changing it.
    pixel_scale_arcsec : float
        Geometric mean of the two celestial pixel scales.
    beam_arcsec : tuple of float or None
        ``(major, minor)`` FWHM from BMAJ/BMIN (or an AIPS HISTORY card).
    bunit : str or None
    warnings : tuple of str
        Quirks of the header that were tolerated (wcslib fixes).
    """

    url: str
    version: str
    hdu: int
    shape: tuple[int, int]
    data_offset: int
    dtype: str
    bscale: float
    bzero: float
    blank: int | None
    compression: str | None
    header: str
    wcs: Any = None
    pixel_scale_arcsec: float = math.nan
    beam_arcsec: tuple[float, float] | None = None
    bunit: str | None = None
    warnings: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        """The tile's file name."""
        return remote.basename(self.url)


def _fail(url, reason, hdu=None):
    return CutoutReadError(url, reason, hdu=hdu)


def _header_cards(read, url, offset):
    """The header starting at ``offset`` as text, and the offset of its data; read block by block."""
    chunks = []
    position = offset
    while True:
        block = read(position, position + 4 * _BLOCK)
        if not block:
            raise _fail(url, f"truncated file: a header at byte {offset} has no END card")
        chunks.append(block)
        text = b"".join(chunks)
        for start in range(0, len(text) - _CARD + 1, _CARD):
            if text[start : start + 3] == b"END" and not text[start + 3 : start + _CARD].strip():
                cards = text[:start].translate(_SANITISE)
                data_offset = offset + -(-(start + _CARD) // _BLOCK) * _BLOCK
                return cards.decode("ascii"), data_offset
        if len(block) < 4 * _BLOCK:
            raise _fail(url, f"truncated file: a header at byte {offset} has no END card")
        position += len(block)


def read_tile_header(url: str, entry: remote.FileEntry | None = None) -> TileHeader:
    """Find the first image HDU of a tile and read what cutting needs, without its pixels.

    Parameters
    ----------
    url : str
        Local path or URL of the tile.
    entry : FileEntry, optional
        Its size and version, when already listed.

    Raises
    ------
    CutoutReadError
        Not a FITS file, no image HDU, a cube with more than one plane, no
        celestial WCS on the image axes.
    """
    from astropy.io import fits

    entry = entry or remote.file_entry(url)
    first = remote.read_range(url, 0, min(4 * _BLOCK, entry.size))
    if first.startswith(b"\x1f\x8b"):
        return _astropy_header(url, entry, "gzip")

    def read(start, end):  # the first blocks are read once
        end = min(end, entry.size)
        return first[start:end] if end <= len(first) else remote.read_range(url, start, end)

    offset = 0
    index = 0
    while offset < entry.size:
        text, data_offset = _header_cards(read, url, offset)
        if index == 0 and not text.startswith("SIMPLE  ="):
            raise _fail(url, "not a FITS file (it does not begin with the card 'SIMPLE  =')")
        header = fits.Header.fromstring(text)
        naxes = [int(header.get(f"NAXIS{axis}", 0)) for axis in range(1, int(header.get("NAXIS", 0)) + 1)]
        n_pixels = math.prod(naxes) if naxes else 0
        if header.get("XTENSION", "").strip() == "BINTABLE" and header.get("ZIMAGE") is True:
            return _astropy_header(url, entry, "tile")
        if n_pixels and header.get("XTENSION", "IMAGE").strip() == "IMAGE" and not header.get("GROUPS"):
            return _image_header(url, entry, index, header, naxes, data_offset)
        bitpix = int(header.get("BITPIX", 8))
        data_bytes = abs(bitpix) // 8 * int(header.get("GCOUNT", 1)) * (int(header.get("PCOUNT", 0)) + n_pixels)
        offset = data_offset + -(-data_bytes // _BLOCK) * _BLOCK
        index += 1
    raise _fail(url, "no HDU holds an image")


def _image_axes(url, index, header, naxes) -> tuple[int, int]:
    planes = [(axis + 1, length) for axis, length in enumerate(naxes) if axis >= 2 and length > 1]
    if planes:
        described = ", ".join(f"axis {a} ({header.get(f'CTYPE{a}', '?')}) of length {n}" for a, n in planes)
        raise _fail(url, f"a cube with more than one plane ({described}); a tile must be one 2-D image", index)
    if len(naxes) < 2 or naxes[0] < 2 or naxes[1] < 2:
        raise _fail(url, f"not a 2-D image (NAXISn = {naxes})", index)
    return naxes[1], naxes[0]


def _image_header(url, entry, index, header, naxes, data_offset) -> TileHeader:
    bitpix = header.get("BITPIX")
    if bitpix not in _BITPIX_DTYPES:
        raise _fail(url, f"BITPIX = {bitpix!r} is not a valid FITS pixel type", index)
    shape = _image_axes(url, index, header, naxes)
    blank = header.get("BLANK")
    tile = TileHeader(
        url=url,
        version=entry.version,
        hdu=index,
        shape=shape,
        data_offset=data_offset,
        dtype=_BITPIX_DTYPES[bitpix],
        bscale=float(header.get("BSCALE", 1.0)),
        bzero=float(header.get("BZERO", 0.0)),
        blank=blank if isinstance(blank, int) and bitpix > 0 else None,
        compression=None,
        header=header.tostring(sep="\n"),
    )
    needed = data_offset + shape[0] * shape[1] * abs(bitpix) // 8
    if needed > entry.size:
        raise _fail(url, f"truncated file: the image needs {needed} bytes, the file has {entry.size}", index)
    return _checked(tile)


def _astropy_header(url, entry, compression) -> TileHeader:
    """Header of a compressed tile, through astropy (the whole file for a remote or gzip tile)."""
    from astropy.io import fits

    with _open_astropy(url) as hdulist:
        for index, hdu in enumerate(hdulist):
            if hdu.is_image and hdu.header.get("NAXIS", 0) >= 2:
                header = hdu.header
                naxes = [int(header[f"NAXIS{axis}"]) for axis in range(1, header["NAXIS"] + 1)]
                tile = TileHeader(
                    url=url,
                    version=entry.version,
                    hdu=index,
                    shape=_image_axes(url, index, header, naxes),
                    data_offset=0,
                    dtype=str(np.dtype(fits.BITPIX2DTYPE[header["BITPIX"]]).newbyteorder(">")),
                    bscale=float(header.get("BSCALE", 1.0)),
                    bzero=float(header.get("BZERO", 0.0)),
                    blank=header.get("BLANK") if header["BITPIX"] > 0 else None,
                    compression=compression,
                    header=header.tostring(sep="\n"),
                )
                return _checked(tile)
    raise _fail(url, "no HDU holds an image")


def _open_astropy(url):
    from astropy.io import fits

    local = remote.local_path(url)
    source = local if local is not None else remote.open_binary(url)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fits.open(source, memmap=False, do_not_scale_image_data=True)


def _checked(tile: TileHeader) -> TileHeader:
    """The tile with its WCS, scale, beam and unit: a tile without a celestial WCS is refused here."""
    from astropy.io import fits
    from astropy.wcs import WCS, FITSFixedWarning
    from astropy.wcs.utils import proj_plane_pixel_scales


    header = fits.Header.fromstring(tile.header, sep="\n")
    quirks = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            full = WCS(header, relax=True)
        except Exception as exc:  # wcslib raises a zoo of exception types
            raise _fail(tile.url, f"invalid WCS ({' '.join(str(exc).split())})", tile.hdu) from None
    for warning in caught:
        text = " ".join(str(warning.message).split())
        if issubclass(warning.category, FITSFixedWarning) and "'datfix'" in text:
            continue
        quirks.append(f"tile {tile.name}: {text}")
    if (full.wcs.lng, full.wcs.lat) != (0, 1):
        ctypes = ", ".join(f"CTYPE{a}={c!r}" for a, c in enumerate(full.wcs.ctype, 1))
        reason = f"no celestial WCS with longitude on axis 1 and latitude on axis 2 ({ctypes}); cannot place positions"
        raise _fail(tile.url, reason, tile.hdu)
    celestial = full.celestial if full.naxis > 2 else full
    celestial.pixel_shape = (tile.shape[1], tile.shape[0])
    scales = proj_plane_pixel_scales(celestial)
    bunit = header.get("BUNIT")
    tile.wcs = celestial
    tile.pixel_scale_arcsec = float(math.sqrt(abs(scales[0] * scales[1]))) * 3600.0
    tile.beam_arcsec = _beam(header)
    tile.bunit = str(bunit).strip() if bunit else None
    tile.warnings = tuple(quirks)
    return tile


def _beam(header) -> tuple[float, float] | None:
    bmaj, bmin = header.get("BMAJ"), header.get("BMIN")
    if not (isinstance(bmaj, (int, float)) and isinstance(bmin, (int, float))):
        match = _AIPS_BEAM.search(str(header.get("HISTORY", "")))
        if match is None:
            return None
        try:
            bmaj, bmin = (float(v.replace("D", "E").replace("d", "e")) for v in match.groups())
        except ValueError:
            return None
    if bmaj > 0 and bmin > 0 and math.isfinite(bmaj) and math.isfinite(bmin):
        return float(bmaj) * 3600.0, float(bmin) * 3600.0
    return None


def physical_values(stored: np.ndarray, bscale: float, bzero: float, blank: int | None) -> np.ndarray:
    """Stored pixels as float32 in their physical unit: BSCALE, BZERO applied, BLANK (and NaN) as NaN."""
    if stored.dtype.kind == "f":
        if bscale == 1.0 and bzero == 0.0:
            return np.array(stored, dtype=np.float32)
        return (stored * bscale + bzero).astype(np.float32)
    image = stored.astype(np.float64)  # float32 arithmetic loses digits near zero
    if bscale != 1.0:
        image *= bscale
    if bzero != 0.0:
        image += bzero
    image = image.astype(np.float32)
    if blank is not None:
        image[stored == blank] = np.nan
    return image


# ----------------------------------------------------------------- pixels


class _MappedTile:
    """A local uncompressed tile, memory-mapped."""

    def __init__(self, header: TileHeader):
        self.header = header
        self._pixels = np.memmap(
            remote.local_path(header.url), dtype=header.dtype, mode="r", offset=header.data_offset,
            shape=header.shape,
        )

    def stored(self, rows: slice, columns: slice) -> np.ndarray:
        return self._pixels[rows, columns]

    def close(self) -> None:
        mapping = getattr(self._pixels, "_mmap", None)
        self._pixels = None
        if mapping is not None:
            try:
                mapping.close()
            except BufferError:  # a view of the pixels is still held: unmapped when it goes
                pass


class _BandedTile:
    """A remote uncompressed tile read in bands of whole rows, one range request each."""

    def __init__(self, header: TileHeader):
        self.header = header
        self.itemsize = np.dtype(header.dtype).itemsize
        self.row_bytes = header.shape[1] * self.itemsize
        self.bands: OrderedDict[tuple[int, int], np.ndarray] = OrderedDict()
        self.n_requests = 0

    def _band(self, first: int, stop: int) -> tuple[int, np.ndarray]:
        for (low, high), band in self.bands.items():
            if low <= first and stop <= high:
                self.bands.move_to_end((low, high))
                return low, band
        n_rows = max(stop - first, BAND_BYTES // self.row_bytes)
        high = min(self.header.shape[0], first + n_rows)
        start = self.header.data_offset + first * self.row_bytes
        content = remote.read_range(self.header.url, start, start + (high - first) * self.row_bytes)
        self.n_requests += 1
        if len(content) != (high - first) * self.row_bytes:
            msg = f"short read: {len(content)} bytes for rows {first}-{high - 1}"
            raise CutoutReadError(self.header.url, msg, hdu=self.header.hdu)
        band = np.frombuffer(content, dtype=self.header.dtype).reshape(high - first, self.header.shape[1])
        self.bands[(first, high)] = band
        while len(self.bands) > MAX_BANDS:
            self.bands.popitem(last=False)
        return first, band

    def stored(self, rows: slice, columns: slice) -> np.ndarray:
        low, band = self._band(rows.start, rows.stop)
        return band[rows.start - low : rows.stop - low, columns]

    def close(self) -> None:
        self.bands.clear()


class _AstropyTile:
    """A compressed tile through astropy: ``.section`` reads only what a box needs where it can."""

    def __init__(self, header: TileHeader):
        self.header = header
        self._hdulist = _open_astropy(header.url)
        hdu = self._hdulist[header.hdu]
        self._section = hdu.section if header.compression == "tile" else np.asarray(hdu.data)

    def stored(self, rows: slice, columns: slice) -> np.ndarray:
        ndim = len(getattr(self._section, "shape", ()))
        index = (0,) * (ndim - 2) + (rows, columns)
        return np.asarray(self._section[index])

    def close(self) -> None:
        self._section = None
        self._hdulist.close()


class TileCache:
    """The tiles opened while one batch is read: each opened once, all closed at the end.

    Use as a context manager around the reading of a batch. Headers are kept
    for the life of the process (checked against the tile's version when a
    batch first asks for the tile); pixel access is per batch.
    """

    _headers: OrderedDict[str, TileHeader] = OrderedDict()
    _lock = threading.Lock()

    def __init__(self):
        self._open: dict[str, object] = {}
        self._checked: dict[str, TileHeader] = {}

    def header(self, url: str) -> TileHeader:
        """The tile's header (read at most once per batch, and once per version per process)."""
        if url in self._checked:
            return self._checked[url]
        try:
            entry = remote.file_entry(url)
            with self._lock:
                cached = self._headers.get(url)
            if cached is None or cached.version != entry.version:
                cached = read_tile_header(url, entry)
        except FileNotFoundError:
            raise _fail(url, "tile not found") from None
        except (OSError, remote.RemoteInputError) as exc:
            raise _fail(url, f"cannot read the tile ({getattr(exc, 'strerror', None) or exc})") from None
        with self._lock:
            self._headers[url] = cached
            self._headers.move_to_end(url)
            while len(self._headers) > _HEADER_CACHE_SIZE:
                self._headers.popitem(last=False)
        self._checked[url] = cached
        return cached

    def box(self, url: str, rows: slice, columns: slice) -> np.ndarray:
        """Pixels ``[rows, columns]`` (inside the image) of the tile, float32, physical unit, NaN where blank."""
        header = self.header(url)
        tile = self._open.get(url)
        if tile is None:
            if header.compression is not None:
                tile = _AstropyTile(header)
            elif remote.local_path(url) is not None:
                tile = _MappedTile(header)
            else:
                tile = _BandedTile(header)
            self._open[url] = tile
        try:
            stored = tile.stored(rows, columns)
        except (OSError, remote.RemoteInputError) as exc:
            raise _fail(url, f"cannot read rows {rows.start}-{rows.stop - 1} of the tile ({exc})", header.hdu) from None
        return physical_values(stored, header.bscale, header.bzero, header.blank)

    def requests(self) -> int:
        """Range requests made to object stores for pixels in this batch."""
        return sum(getattr(tile, "n_requests", 0) for tile in self._open.values())

    def close(self) -> None:
        for tile in self._open.values():
            tile.close()
        self._open.clear()
        self._checked.clear()

    def __enter__(self) -> TileCache:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
