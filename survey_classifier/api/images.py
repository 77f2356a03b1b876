"""PNG images rendered on the server: cutouts (the display stretch), SOM neurons and the SOM hit map.

One request must not be able to take the server's memory. A cutout is
read for display with a pixel budget: an image larger than
:data:`PIXEL_BUDGET` pixels is read band by band from its file (plain,
gzip or bzip2 FITS; tile-compressed FITS through astropy's ``section``)
and averaged into blocks as it is read, so a 64-Mpixel cutout never exists
as a whole array, let alone as float64 copies. The display values are
brought to the picture's size before the colour map is applied. Renders
run in a bounded number of slots at once (:class:`RenderSlots`), and the
PNGs are cached with a bound on their bytes (:class:`PngCache`), not on
their number.
"""

from __future__ import annotations

import bz2
import gzip
import io
import math
import threading
import warnings
from collections import OrderedDict
from contextlib import contextmanager

import numpy as np

from survey_classifier.errors import SurveyClassifierError

__all__ = ["cutout_png", "hit_map_png", "array_png", "read_for_display", "read_binned", "PngCache", "RenderSlots",
           "RenderBusy",
           "PIXEL_BUDGET", "CACHE_BYTES", "RENDER_SLOTS"]

#: Largest image (pixels) decoded whole for a picture; larger ones are block-averaged while read.
PIXEL_BUDGET = 4 * 1024 * 1024
#: Default bound of the PNG cache, bytes.
CACHE_BYTES = 64 * 1024 * 1024
#: Default number of pictures rendered at once.
RENDER_SLOTS = 2

_FITS_BLOCK = 2880
_DTYPES = {8: ">u1", 16: ">i2", 32: ">i4", 64: ">i8", -32: ">f4", -64: ">f8"}


class PngCache:
    """PNG bytes by key; the least recently used are dropped while the total is over ``max_bytes``."""

    def __init__(self, max_bytes: int = CACHE_BYTES):
        self.max_bytes = int(max_bytes)
        self._entries: OrderedDict[tuple, bytes] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    @property
    def nbytes(self) -> int:
        """Bytes held now."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: tuple) -> bytes | None:
        with self._lock:
            found = self._entries.get(key)
            if found is not None:
                self._entries.move_to_end(key)
            return found

    def put(self, key: tuple, png: bytes) -> None:
        if len(png) > self.max_bytes:  # never held: it would push out everything else
            return
        with self._lock:
            old = self._entries.pop(key, None)
            self._bytes -= len(old) if old is not None else 0
            self._entries[key] = png
            self._bytes += len(png)
            while self._bytes > self.max_bytes:
                _, dropped = self._entries.popitem(last=False)
                self._bytes -= len(dropped)


class RenderSlots:
    """At most ``slots`` renders at once; a request waits ``wait_s`` seconds for a slot, else is turned away."""

    def __init__(self, slots: int = RENDER_SLOTS, wait_s: float = 2.0):
        if slots < 1:
            msg = f"render slots must be at least 1, got {slots}"
            raise ValueError(msg)
        self.slots = int(slots)
        self.wait_s = float(wait_s)
        self._semaphore = threading.BoundedSemaphore(self.slots)

    @contextmanager
    def held(self):
        """A slot for the ``with`` block; yields False (and holds nothing) when none came free in time."""
        if not self._semaphore.acquire(timeout=self.wait_s):
            yield False
            return
        try:
            yield True
        finally:
            self._semaphore.release()


class RenderBusy(SurveyClassifierError):
    """Every render slot stayed taken for the time a request waits: try again in a moment."""

    def __init__(self, message: str = "the server is drawing as many pictures as it can at once; try again "
                                      "in a second"):
        super().__init__(message)


_CACHE = PngCache()
_SLOTS = RenderSlots()


def _png(rgba: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(rgba, mode="RGBA").save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()


def cutout_png(path: str, sha256: str | None, *, size: int, cmap: str = "inferno", scale: str = "asinh",
               softening_sigma: float | None = None, cache: PngCache | None = None,
               slots: RenderSlots | None = None) -> bytes:
    """PNG of the FITS cutout at ``path``, north up as stored, ``size`` pixels across.

    Drawn with :func:`survey_classifier.display.stretch` (``scale``,
    ``softening_sigma``) from the image read by :func:`read_for_display`.
    Cached in ``cache`` (default: this process's) by path, checksum, size,
    colour map and stretch; a picture not cached is drawn in one of
    ``slots`` (:class:`RenderBusy` when none comes free in time). Raises the
    reader's :class:`~survey_classifier.errors.CutoutReadError` for
    unreadable files.
    """
    from survey_classifier.display import SOFTENING_SIGMA, stretch

    cache = _CACHE if cache is None else cache
    softening_sigma = SOFTENING_SIGMA if softening_sigma is None else float(softening_sigma)
    key = (path, sha256, size, cmap, scale, softening_sigma)
    found = cache.get(key)
    if found is not None:
        return found
    with (slots or _SLOTS).held() as free:
        if not free:
            raise RenderBusy
        image = read_for_display(path, size=size)
        png = array_png(stretch(image, scale=scale, softening_sigma=softening_sigma), size=size, cmap=cmap)
    cache.put(key, png)
    return png


def array_png(values: np.ndarray, *, size: int, cmap: str = "inferno") -> bytes:
    """PNG of display values in [0, 1] (rows from south to north, as FITS stores them), ``size`` pixels across.

    The values are resampled to ``size`` x ``size`` before the colour map,
    so the RGBA array is never larger than the picture.
    """
    from matplotlib import colormaps
    from PIL import Image

    values = np.asarray(values, dtype=np.float32)[::-1]
    if values.shape != (size, size):
        values = np.asarray(Image.fromarray(np.ascontiguousarray(values), mode="F")
                            .resize((size, size), Image.Resampling.LANCZOS))
    rgba = colormaps[cmap](np.clip(values, 0.0, 1.0), bytes=True)
    return _png(rgba)


def hit_map_png(counts: np.ndarray, *, cell: int = 24, cmap: str = "viridis") -> bytes:
    """PNG of a SOM hit map: ``counts[y, x]`` cutouts per node, one square per node."""
    from matplotlib import colormaps

    counts = np.asarray(counts, dtype=float)
    scaled = np.log1p(counts) / max(np.log1p(counts.max()), 1e-12) if counts.size else counts
    rgba = (colormaps[cmap](scaled) * 255).astype(np.uint8)
    rgba = np.repeat(np.repeat(rgba, cell, axis=0), cell, axis=1)
    return _png(rgba)


# ---------------------------------------------------------------------- reading with a pixel budget
def block_factor(ny: int, nx: int, size: int, budget: int = PIXEL_BUDGET) -> int:
    """Pixels averaged along each axis: 1 up to ``budget`` pixels, else enough for the picture and the budget."""
    if ny * nx <= budget:
        return 1
    for_size = max(1, min(ny, nx) // max(size, 1))
    for_budget = math.ceil(math.sqrt(ny * nx / budget))
    return max(for_size, for_budget)


def read_for_display(path: str, *, size: int, budget: int = PIXEL_BUDGET) -> np.ndarray:
    """The cutout's image at ``path`` for a picture ``size`` pixels across: whole up to ``budget`` pixels,
    else block-averaged while it is read (2-D, rows from south to north, NaN where blank).

    Files the band reader does not take (URLs, cubes, unusual layouts) and
    small images go through :func:`survey_classifier.io.fits.read_cutout`,
    with its limits and its errors.
    """
    binned = read_binned(path, size=size, budget=budget)
    return _whole(path) if binned is None else binned[0]


def read_binned(path: str, *, size: int | None = None, budget: int = PIXEL_BUDGET):
    """``(image, step, header)``: the image at ``path`` averaged in ``step`` x ``step`` blocks while it is read,
    when it is larger than ``budget`` pixels (and ``size`` pixels across allow); None when it fits (read it
    whole) or the band reader does not take the file.

    ``size`` None: as fine as the budget allows (the SOM's picture prepares the image, and needs its detail).
    """
    from survey_classifier.io import remote
    from survey_classifier.io._kinds import not_a_file

    local = remote.local_path(path)
    found = _image_hdu(local) if local is not None and not_a_file(local) is None else None
    if found is None:
        return None
    header, kind, offset = found
    ny, nx = int(header["NAXIS2"]), int(header["NAXIS1"])
    step = block_factor(ny, nx, min(ny, nx) if size is None else size, budget)
    if step == 1:
        return None
    image = _tiled_blocks(local, header, step) if kind == "tiled" else _streamed_blocks(local, header, offset, step)
    return image, step, header


def _whole(path: str) -> np.ndarray:
    from survey_classifier.io.fits import read_cutout

    with warnings.catch_warnings():  # quirks were reported when the cutout was classified
        warnings.simplefilter("ignore")
        return read_cutout(path).data


def _open_stream(local: str):
    with open(local, "rb") as probe:
        magic = probe.read(3)
    if magic[:2] == b"\x1f\x8b":
        return gzip.open(local, "rb")
    if magic == b"BZh":
        return bz2.open(local, "rb")
    return open(local, "rb")


def _data_bytes(header) -> int:
    naxis = int(header.get("NAXIS", 0))
    if naxis == 0:
        return 0
    count = 1
    for axis in range(1, naxis + 1):
        count *= int(header.get(f"NAXIS{axis}", 0))
    count = abs(int(header["BITPIX"])) // 8 * int(header.get("GCOUNT", 1)) * (int(header.get("PCOUNT", 0)) + count)
    return -(-count // _FITS_BLOCK) * _FITS_BLOCK


def _image_hdu(local: str):
    """``(header, kind, offset)`` of the first HDU holding an image: ``kind`` "plain" (its data at ``offset`` of
    the uncompressed stream) or "tiled"; None when the band
    reader cannot take it (not FITS, a cube, one axis, nothing but tables), for the whole reader to say why."""
    from astropy.io import fits

    try:
        with _open_stream(local) as stream, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for index in range(64):
                header = fits.Header.fromfile(stream)
                extension = str(header.get("XTENSION", "")).strip() if index else ""
                naxis = int(header.get("NAXIS", 0))
                if extension == "BINTABLE" and header.get("ZIMAGE"):
                    shape = [int(header.get(f"ZNAXIS{a}", 0)) for a in range(1, int(header.get("ZNAXIS", 0)) + 1)]
                    return (_image_header(header, shape), "tiled", 0) if _flat(shape) else None
                if extension in ("", "IMAGE") and naxis and _data_bytes(header):
                    shape = [int(header[f"NAXIS{a}"]) for a in range(1, naxis + 1)]
                    if not _flat(shape) or int(header["BITPIX"]) not in _DTYPES:
                        return None
                    return header, "plain", stream.tell()
                stream.seek(_data_bytes(header), 1)
    except (OSError, EOFError, ValueError, KeyError, TypeError):
        return None
    return None


def _flat(shape: list[int]) -> bool:
    """A 2-D image, perhaps with degenerate axes after the second (FREQ, STOKES of length 1)."""
    return len(shape) >= 2 and shape[0] > 0 and shape[1] > 0 and all(n == 1 for n in shape[2:])


def _image_header(header, shape: list[int]):
    shown = header.copy()
    shown["NAXIS1"], shown["NAXIS2"] = shape[0], shape[1]
    return shown


def _scaled(raw: np.ndarray, header) -> np.ndarray:
    """Physical values of raw FITS pixels (BLANK as NaN, then BSCALE and BZERO), as float32."""
    values = raw.astype(np.float32)
    if raw.dtype.kind in "iu" and "BLANK" in header:
        values[raw == int(header["BLANK"])] = np.nan
    scale, zero = float(header.get("BSCALE", 1.0)), float(header.get("BZERO", 0.0))
    if scale != 1.0:
        values *= np.float32(scale)
    if zero != 0.0:
        values += np.float32(zero)
    return values


def _block_mean(band: np.ndarray, step: int, nx_out: int) -> np.ndarray:
    rows = band.shape[0]
    blocks = band[:, :nx_out * step].reshape(rows, nx_out, step)
    with warnings.catch_warnings():  # a block of blank pixels stays blank
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(blocks, axis=(0, 2))


def _streamed_blocks(local: str, header, offset: int, step: int) -> np.ndarray:
    """Block means of a plain (or gzip/bzip2) FITS image, read ``step`` rows at a time."""
    from survey_classifier.errors import CutoutReadError

    ny, nx = int(header["NAXIS2"]), int(header["NAXIS1"])
    dtype = np.dtype(_DTYPES[int(header["BITPIX"])])
    ny_out, nx_out = ny // step, nx // step
    out = np.empty((ny_out, nx_out), dtype=np.float32)
    with _open_stream(local) as stream:
        stream.seek(offset)  # in a compressed stream: decompressed and dropped on the way, block by block
        want = step * nx * dtype.itemsize
        for row in range(ny_out):
            raw = stream.read(want)
            if len(raw) < want:
                msg = f"the image data end at row {row * step} of {ny}: the file is truncated"
                raise CutoutReadError(local, msg)
            band = _scaled(np.frombuffer(raw, dtype=dtype).reshape(step, nx), header)
            out[row] = _block_mean(band, step, nx_out)
    return out


def _tiled_blocks(local: str, header, step: int) -> np.ndarray:
    """Block means of a tile-compressed image, decompressing ``step`` rows of tiles at a time."""
    from astropy.io import fits

    ny, nx = int(header["NAXIS2"]), int(header["NAXIS1"])
    ny_out, nx_out = ny // step, nx // step
    out = np.empty((ny_out, nx_out), dtype=np.float32)
    with fits.open(local, memmap=False, lazy_load_hdus=True) as hdus, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hdu = next(h for h in hdus if isinstance(h, fits.CompImageHDU))
        extra = (0,) * (len(hdu.shape) - 2)
        for row in range(ny_out):
            band = np.asarray(hdu.section[(*extra, slice(row * step, (row + 1) * step), slice(None))],
                              dtype=np.float32)
            out[row] = _block_mean(band.reshape(step, nx), step, nx_out)
    return out
