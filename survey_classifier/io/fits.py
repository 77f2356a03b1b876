"""Read one FITS cutout into a :class:`~survey_classifier.cutout.Cutout`.

:func:`read_cutout` accepts ``.fits`` (also ``.fit``/``.fts``), gzip- or
bzip2-compressed ``.fits.gz``/``.fits.bz2`` and tile-compressed ``.fits.fz``
files and returns the first HDU
that holds an image, as float32 in its physical unit with NaN where pixels are
blank, together with the centre position, pixel scale and beam taken from the
header.

Why it does not simply call ``astropy.io.fits.open`` and ``astropy.wcs.WCS``
------------------------------------------------------------------------------
Survey cutouts are small (a 150x150 FIRST cutout is 90 kB) but carry long
headers: a SkyView FIRST cutout has 6 header blocks, some 200 COMMENT and
HISTORY cards and 25 others. Measured on the mirabest files (CPU per file):
``fits.getdata`` 1.7 ms (astropy parses the header into Card objects and
opens the file through its general HDU machinery); ``WCS(fits.getheader(f))``
8 ms, of which wcslib's own parser over every card (``Wcsprm(header)``) is
0.5 ms and the rest is astropy's Python around it: the header is turned back
into text, verifying each card, and searched keyword by keyword for SIP and
distortion tables; even a header cut down to the 18 WCS cards costs 1.6 ms
that way. So here the file is read once (its bytes also give the sha256),
the few keywords needed are decoded directly from the 80-character cards
(searching only the non-commentary ones), the data are viewed with
:func:`numpy.frombuffer`, and wcslib (:class:`astropy.wcs.Wcsprm`, 0.1 ms)
is handed only the non-commentary cards; the result is wrapped in an
:class:`astropy.wcs.WCS` equal to the one astropy builds. Headers with SIP or
lookup-table distortions go through ``astropy.wcs.WCS`` itself. In all about
0.5 ms per file, some 20 times faster than astropy used plainly (see
``bench/bench_read.py``). Tile-compressed images are decompressed by
:mod:`astropy.io.fits`, whose image header is then read the same way.

Tolerated quirks (each reported once with a :class:`FITSQuirkWarning` naming
the file): non-printable characters such as TAB in header cards, a celestial
frame given without RADESYS/EQUINOX, header fixes made by wcslib (units
spelled non-standardly, obsolete keywords), data not padded to a full 2880-byte
block, unparseable values of keywords that are only informative. A header
without a celestial WCS gives a cutout with ``ra_deg``/``dec_deg`` None and a
:class:`NoWCSWarning`. Each warning is also appended to ``cutout.warnings``.
"""

from __future__ import annotations

import bz2
import io
import math
import os
import re
import warnings
import zlib
from dataclasses import dataclass

import numpy as np

from survey_classifier.checksum import sha256_bytes
from survey_classifier.cutout import Cutout, CutoutSource
from survey_classifier.errors import (
    CutoutLimitError,
    CutoutReadError,
    FITSQuirkWarning,
    NoWCSWarning,
)
from survey_classifier.io import remote
from survey_classifier.io._kinds import not_a_file

__all__ = ["ReadLimits", "read_cutout", "parse_memory", "WORKING_COPIES", "MAX_MEMORY_ENV"]

_BLOCK = 2880
_CARD = 80
_END_CARD = b"END" + b" " * 77
_LOOSE_END_CARD = re.compile(rb"END[\x00-\x20]{77}")
_MiB = 1024 * 1024

#: BITPIX -> big-endian numpy dtype of the stored pixels.
_BITPIX_DTYPES = {8: "u1", 16: ">i2", 32: ">i4", 64: ">i8", -32: ">f4", -64: ">f8"}

#: Bytes allowed in a header card (FITS standard: ASCII 0x20-0x7E).
_PRINTABLE = bytes(range(0x20, 0x7F))
#: Maps every non-printable byte to a space.
_SANITISE = bytes(b if 0x20 <= b < 0x7F else 0x20 for b in range(256))
_COMMENTARY = (b"COMMENT ", b"HISTORY ", b"        ")
_NONPRINTABLE_NAMES = {9: "TAB", 10: "LF", 13: "CR", 0: "NUL"}
#: A beam recorded by AIPS in HISTORY (when BMAJ/BMIN keywords are absent).
_AIPS_BEAM = re.compile(rb"BMAJ\s*=\s*([-+0-9.EeDd]+)\s+BMIN\s*=\s*([-+0-9.EeDd]+)")
#: Distortion keywords that wcslib alone does not apply (SIP, Paper IV
#: lookup tables, detector-to-image corrections): astropy's WCS handles them.
_DISTORTION_KEYWORDS = (b"A_ORDER ", b"B_ORDER ", b"CPDIS", b"D2IMDIS", b"DP1 ", b"DP2 ", b"DQ1 ", b"DQ2 ")
#: wcslib fixes that only derive one date keyword from another.
_SILENT_FIXES = ("datfix",)
#: Float32 copies of an image that reading it and running the stages hold at once. Measured peak
#: memory over the image's float32 size, on an 8192 x 8192 image: 7.3 with the measure stage
#: alone, about 9 with the default stages (2.3 GB for a 256 MiB image).
WORKING_COPIES = 8
#: Environment variable: the memory budget of one cutout, in bytes or as 800M, 1.5G (``--max-memory``).
MAX_MEMORY_ENV = "SURVEY_CLASSIFIER_MAX_MEMORY"
#: Decompressed bytes looked at for the headers when estimating a compressed file's memory need.
_HEADER_PEEK = 64 * _BLOCK
_MEMORY_UNITS = {"": 1, "B": 1, "K": 1024, "M": _MiB, "G": 1024 * _MiB, "T": 1024 * 1024 * _MiB}


@dataclass(frozen=True)
class ReadLimits:
    """Upper limits that protect a run from oversized inputs.

    Parameters
    ----------
    max_bytes : int
        Largest file accepted, checked with :func:`os.stat` before reading;
        also the largest size a ``.gz`` file may decompress to.
    max_pixels : int
        Largest image accepted (product of the NAXISn), checked from the
        header before the data are read.
    max_memory : int or None
        Most bytes of memory one cutout may need, estimated from its header
        before anything is decoded: the file's bytes, its decompressed
        bytes for a ``.gz``/``.bz2`` file, and ``WORKING_COPIES`` float32
        copies of the image. None: no estimate is made.
    """

    max_bytes: int = 512 * _MiB
    max_pixels: int = 64 * 1024 * 1024
    max_memory: int | None = None

    @classmethod
    def from_environment(cls) -> ReadLimits:
        """The default limits, with the memory budget of ``$SURVEY_CLASSIFIER_MAX_MEMORY`` if set."""
        budget = os.environ.get(MAX_MEMORY_ENV)
        return cls(max_memory=parse_memory(budget)) if budget else cls()

    def __post_init__(self):
        for name in ("max_bytes", "max_pixels", "max_memory"):
            value = getattr(self, name)
            if name == "max_memory" and value is None:
                continue
            if not isinstance(value, int) or value <= 0:
                msg = f"ReadLimits.{name} must be a positive integer, got {value!r}"
                raise ValueError(msg)


def parse_memory(text: str) -> int:
    """Bytes from ``"1.5G"``, ``"800M"``, ``"800MiB"``, ``"2GB"`` or a plain number of bytes (powers of 1024).

    >>> parse_memory("1.5G"), parse_memory("800MiB"), parse_memory("4096")
    (1610612736, 838860800, 4096)
    """
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kKmMgGtT]?)(i?[bB])?\s*", str(text))
    if match is None or float(match.group(1)) <= 0:
        msg = f"memory {text!r} is not a positive size such as 800M or 1.5G"
        raise ValueError(msg)
    return int(float(match.group(1)) * _MEMORY_UNITS[match.group(2).upper()])


def read_cutout(source, *, limits=None) -> Cutout:
    """Read the first image HDU of a FITS file.

    Parameters
    ----------
    source : CutoutSource or str or os.PathLike
        The file to read (a path or a URL); a bare path is wrapped in a
        :class:`CutoutSource`. A ``mosaic:`` path is cut from its mosaic
        tiles (:func:`survey_classifier.io.mosaics.read_mosaic_cutout`).
    limits : ReadLimits, optional
        Size limits; the defaults of :class:`ReadLimits` when None.

    Returns
    -------
    Cutout
        ``data`` is 2-D float32 in the file's physical unit (BSCALE, BZERO
        applied, BLANK and NaN pixels as NaN) with degenerate axes removed;
        ``ra_deg``/``dec_deg`` are the world coordinates of the image centre
        in the frame the header gives (ICRS or FK5 J2000 for survey
        cutouts); ``pixel_scale_arcsec`` is the geometric mean of the two
        celestial pixel scales; ``wcs`` the celestial
        :class:`~astropy.wcs.WCS`; beam from BMAJ/BMIN in arcsec.

    Raises
    ------
    CutoutReadError
        The file is missing, empty, not FITS, truncated, holds no image,
        holds a 1-D spectrum or a cube with several planes, or is all blank.
    CutoutLimitError
        The file or the image exceeds ``limits``.

    Examples
    --------
    >>> from survey_classifier.io.fits import read_cutout  # doctest: +SKIP
    >>> cutout = read_cutout("100_010.451-009.284_0.0529_0080.60.fits")  # doctest: +SKIP
    >>> cutout.data.shape, round(cutout.pixel_scale_arcsec, 2)  # doctest: +SKIP
    ((150, 150), 1.8)
    """
    if not isinstance(source, CutoutSource):
        source = CutoutSource(path=os.fspath(source))
    limits = ReadLimits() if limits is None else limits
    if source.path.startswith("mosaic:"):  # a cutout cut from survey mosaic tiles (io/mosaics.py)
        from survey_classifier.io.mosaics import read_mosaic_cutout

        return read_mosaic_cutout(source, limits=limits)
    reader = _Reader(source, limits)
    try:
        return reader.read()
    except (CutoutReadError, CutoutLimitError):
        raise
    except MemoryError:
        raise CutoutLimitError(source.path, "not enough memory to read the image") from None
    except Exception as exc:  # a malformed file must not stop a catalogue-scale run
        reason = f"malformed FITS file ({type(exc).__name__}: {_one_line(exc)})"
        raise CutoutReadError(source.path, reason) from exc


class _Reader:
    """State of one read: the source, its bytes, and the warnings so far."""

    def __init__(self, source, limits):
        self.source = source
        self.path = source.path
        self.limits = limits
        self.warnings = []

    # ----------------------------------------------------------------- helpers
    def fail(self, reason, *, hdu=None, error=CutoutReadError):
        return error(self.path, reason, hdu=hdu)

    def warn(self, message, category=FITSQuirkWarning, *, hdu=None):
        where = self.path if hdu is None else f"{self.path} [HDU {hdu}]"
        text = f"{where}: {message}"
        self.warnings.append(text)
        warnings.warn(category(text), stacklevel=4)

    # -------------------------------------------------------------------- read
    def read(self) -> Cutout:
        raw = self._read_bytes()
        self._check_memory(raw)
        sha256 = sha256_bytes(raw)
        buffer = self._decompress(raw)
        if not buffer.startswith(b"SIMPLE  ="):
            reason = "not a FITS file (it does not begin with the card 'SIMPLE  =')"
            if buffer[:8].strip(b" ") == b"SIMPLE":
                reason = "not a FITS file (malformed SIMPLE card)"
            raise self.fail(reason)
        hdu, header, data = self._first_image(buffer)
        image, axes = self._squeeze(data, header, hdu)
        if not np.isfinite(image).any():
            raise self.fail("all pixels are blank (NaN or BLANK); nothing to measure", hdu=hdu)
        cutout = Cutout(
            source=self.source,
            hdu=hdu,
            data=image,
            sha256=sha256,
            bunit=_as_str(header.get("BUNIT")),
        )
        self._set_beam(cutout, header, hdu)
        self._set_wcs(cutout, header, hdu, axes)
        cutout.warnings = self.warnings
        return cutout

    def _read_bytes(self) -> bytes:
        local = remote.local_path(self.path)
        if local is None:
            return self._read_object()
        reason = not_a_file(local)
        if reason is not None:
            raise self.fail(reason)
        try:
            size = os.stat(local).st_size
        except OSError as exc:
            raise self.fail(f"cannot stat the file ({exc.strerror or exc})") from None
        if size == 0:
            raise self.fail("file is empty (0 bytes)")
        if size > self.limits.max_bytes:
            reason = (
                f"file is {size / _MiB:.1f} MiB, over the limit of "
                f"{self.limits.max_bytes / _MiB:.1f} MiB (ReadLimits.max_bytes)"
            )
            raise self.fail(reason, error=CutoutLimitError)
        try:
            with open(local, "rb") as stream:
                return stream.read()
        except OSError as exc:
            raise self.fail(f"cannot read the file ({exc.strerror or exc})") from None

    def _read_object(self) -> bytes:
        """The bytes of a cutout named by a URL (an object store, https)."""
        try:
            raw = remote.read_bytes(self.path, max_bytes=self.limits.max_bytes)
        except FileNotFoundError:
            raise self.fail("file not found (no such object)") from None
        except ValueError as exc:
            reason = f"file is {exc}, over the limit of {self.limits.max_bytes} bytes (ReadLimits.max_bytes)"
            raise self.fail(reason, error=CutoutLimitError) from None
        except remote.RemoteInputError as exc:
            raise self.fail(f"cannot read the object ({exc})") from None
        if not raw:
            raise self.fail("file is empty (0 bytes)")
        return raw

    def _decompress(self, raw: bytes) -> bytes:
        """The FITS bytes of a gzip or bzip2 file (capped at max_bytes), else ``raw``."""
        if raw.startswith(b"\x1f\x8b"):
            kind, new_decompressor = "gzip", lambda: zlib.decompressobj(wbits=31)
        elif raw.startswith(b"BZh"):
            kind, new_decompressor = "bzip2", bz2.BZ2Decompressor
        else:
            return raw
        limit = self.limits.max_bytes
        parts = []
        total = 0
        decompressor = new_decompressor()
        try:
            chunk = _inflate(decompressor, raw, limit + 1)
            while True:
                parts.append(chunk)
                total += len(chunk)
                if total > limit:
                    reason = (
                        f"{kind} data decompress to more than {limit / _MiB:.1f} MiB "
                        "(ReadLimits.max_bytes)"
                    )
                    raise self.fail(reason, error=CutoutLimitError)
                if not decompressor.eof:
                    more = _inflate(decompressor, b"", limit + 1 - total)
                    if not more:
                        break
                    chunk = more
                    continue
                rest = decompressor.unused_data
                if not rest.startswith(raw[:2]):
                    break
                decompressor = new_decompressor()  # a further member follows
                chunk = _inflate(decompressor, rest, limit + 1 - total)
        except (zlib.error, OSError, EOFError) as exc:
            raise self.fail(f"corrupt {kind} data ({exc})") from None
        if not decompressor.eof:
            raise self.fail(f"truncated file: the {kind} stream ends early")
        return b"".join(parts)

    # ----------------------------------------------------------------- memory
    def _check_memory(self, raw: bytes) -> None:
        """Refuse, before decoding anything, an image whose estimated memory need exceeds the budget."""
        budget = self.limits.max_memory
        if budget is None:
            return
        compressed = raw.startswith((b"\x1f\x8b", b"BZh"))
        geometry = _image_geometry(_peek_decompressed(raw) if compressed else raw[:_HEADER_PEEK])
        if geometry is None:
            return  # no image header near the start: reading says what is wrong
        hdu, naxes, bitpix = geometry
        n_pixels = math.prod(naxes)
        decoded = n_pixels * abs(bitpix) // 8
        need = len(raw) + (decoded if compressed else 0) + n_pixels * 4 * WORKING_COPIES
        if need <= budget:
            return
        shape = " x ".join(str(n) for n in naxes)
        inflated = f", {_mebibytes(decoded)} once decompressed" if compressed else ""
        reason = (
            f"needs about {_mebibytes(need)} of memory to decode and process ({shape} pixels of BITPIX "
            f"{bitpix}{inflated}, {WORKING_COPIES} working copies), over the budget of {_mebibytes(budget)} "
            "(--max-memory); refused before decoding"
        )
        raise self.fail(reason, hdu=hdu, error=CutoutLimitError)

    # ------------------------------------------------------------------- HDUs
    def _first_image(self, buffer: bytes):
        """Walk the HDUs; return (index, header, data) of the first image."""
        offset = 0
        index = 0
        seen = []
        while offset < len(buffer):
            if index > 0 and not buffer.startswith(b"XTENSION", offset):
                break  # trailing bytes after the last HDU are ignored
            header, data_offset = self._parse_header(buffer, offset, index)
            naxes = header.naxes(self, index)
            kind = header.get("XTENSION", "PRIMARY") if index else "PRIMARY"
            kind = _as_str(kind).strip().upper() if kind is not None else "?"
            n_pixels = math.prod(naxes) if naxes else 0
            if kind == "BINTABLE" and header.get("ZIMAGE") is True:
                return self._compressed_image(buffer, index, header)
            if kind in ("PRIMARY", "IMAGE") and n_pixels > 0 and header.get("GROUPS") is not True:
                data = self._image_data(buffer, header, data_offset, naxes, index)
                return index, header, data
            seen.append(f"{index} {kind} NAXIS={len(naxes)}")
            bitpix = header.get("BITPIX")
            if not isinstance(bitpix, int):
                raise self.fail("BITPIX missing or not an integer", hdu=index)
            pcount = header.get("PCOUNT", 0) or 0
            gcount = header.get("GCOUNT", 1) or 1
            if kind == "PRIMARY" and header.get("GROUPS") is True and naxes:
                n_pixels = math.prod(naxes[1:])
            data_bytes = abs(bitpix) // 8 * gcount * (pcount + n_pixels)
            if data_offset + data_bytes > len(buffer):
                reason = f"truncated file: the data of HDU {index} ({kind}) run past the end of the file"
                raise self.fail(reason, hdu=index)
            offset = data_offset + _padded(data_bytes)
            index += 1
        raise self.fail("no HDU holds an image (HDUs: " + "; ".join(seen) + ")")

    def _parse_header(self, buffer: bytes, offset: int, index: int):
        start = offset
        position = buffer.find(_END_CARD, start)
        while position >= 0 and (position - start) % _CARD:
            position = buffer.find(_END_CARD, position + 1)
        if position < 0:
            # tolerate an END card padded with other bytes than spaces
            match = _LOOSE_END_CARD.search(buffer, start)
            while match and (match.start() - start) % _CARD:
                match = _LOOSE_END_CARD.search(buffer, match.start() + 1)
            if match is None:
                if index == 0 and len(buffer) >= _BLOCK:
                    reason = "truncated or corrupt file: the primary header has no END card"
                else:
                    reason = f"truncated file: the header of HDU {index} has no END card"
                raise self.fail(reason, hdu=index)
            position = match.start()
        text = buffer[start:position]
        header = _Header(text)
        if text.translate(None, _PRINTABLE):
            self.warn(header.describe_nonprintable(), hdu=index)
            header = _Header(text.translate(_SANITISE))
        data_offset = start + _padded(position + _CARD - start)
        return header, data_offset

    def _image_data(self, buffer, header, data_offset, naxes, index):
        bitpix = header.get("BITPIX")
        dtype = _BITPIX_DTYPES.get(bitpix)
        if dtype is None:
            raise self.fail(f"unsupported BITPIX = {bitpix!r}", hdu=index)
        n_pixels = math.prod(naxes)
        self._check_pixels(n_pixels, naxes, index)
        n_bytes = n_pixels * abs(bitpix) // 8
        available = len(buffer) - data_offset
        if available < n_bytes:
            reason = (
                f"truncated file: the image needs {n_bytes} data bytes after the header, "
                f"only {max(available, 0)} are present"
            )
            raise self.fail(reason, hdu=index)
        if available < _padded(n_bytes):
            self.warn("the data are not padded to a whole 2880-byte block", hdu=index)
        stored = np.frombuffer(buffer, dtype=dtype, count=n_pixels, offset=data_offset)
        stored = stored.reshape(naxes[::-1])
        return self._scale(stored, header, index)

    def _check_pixels(self, n_pixels, naxes, index):
        if n_pixels > self.limits.max_pixels:
            shape = " x ".join(str(n) for n in naxes)
            reason = (
                f"image is {shape} = {n_pixels} pixels, over the limit of "
                f"{self.limits.max_pixels} (ReadLimits.max_pixels)"
            )
            raise self.fail(reason, hdu=index, error=CutoutLimitError)

    def _scale(self, stored, header, index):
        """Physical values as float32: BSCALE, BZERO applied, BLANK -> NaN."""
        bscale = header.number("BSCALE", 1.0, self, index)
        bzero = header.number("BZERO", 0.0, self, index)
        if stored.dtype.kind == "f":
            if header.get("BLANK") is not None:
                self.warn("BLANK applies only to integer images; ignored for BITPIX < 0", hdu=index)
            if bscale == 1.0 and bzero == 0.0:
                return stored.astype(np.float32)
            return (stored * bscale + bzero).astype(np.float32)
        blank = header.get("BLANK")
        if blank is not None and not isinstance(blank, int):
            self.warn(f"BLANK = {blank!r} is not an integer; ignored", hdu=index)
            blank = None
        image = stored.astype(np.float64)  # float32 arithmetic loses digits near zero
        if bscale != 1.0:
            image *= bscale
        if bzero != 0.0:
            image += bzero
        image = image.astype(np.float32, copy=False)
        if blank is not None:
            image[stored == blank] = np.nan
        return image

    def _compressed_image(self, buffer, index, table_header):
        from astropy.io import fits

        naxes = []
        for axis in range(1, (table_header.get("ZNAXIS") or 0) + 1):
            naxes.append(table_header.get(f"ZNAXIS{axis}") or 0)
        if not naxes or math.prod(naxes) == 0:
            raise self.fail("the tile-compressed HDU holds an empty image", hdu=index)
        self._check_pixels(math.prod(naxes), naxes, index)
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                with fits.open(
                    io.BytesIO(buffer), memmap=False, do_not_scale_image_data=True
                ) as hdulist:
                    hdu = hdulist[index]
                    stored = np.asarray(hdu.data)
                    text = hdu.header.tostring(sep="", endcard=False, padding=False)
        except (OSError, ValueError, TypeError, IndexError, KeyError) as exc:
            raise self.fail(f"cannot decompress the tile-compressed image ({exc})", hdu=index) from None
        for warning in caught:
            self.warn(f"astropy: {_one_line(warning.message)}", hdu=index)
        header = _Header(text.encode("ascii", "replace"))
        if header.naxes(self, index) != naxes:
            raise self.fail("the tile-compressed image header disagrees with ZNAXISn", hdu=index)
        return index, header, self._scale(stored, header, index)

    # ------------------------------------------------------------------ shape
    def _squeeze(self, data, header, index):
        """Drop axes of length 1; return the 2-D image and its FITS axis numbers."""
        naxes = data.shape[::-1]  # FITS order: NAXIS1 first
        kept = [axis + 1 for axis, length in enumerate(naxes) if length > 1]
        if len(naxes) == 1 or len(kept) < 2:
            shape = ", ".join(f"NAXIS{axis + 1}={length}" for axis, length in enumerate(naxes))
            raise self.fail(f"1-D data ({shape}); expected a 2-D image", hdu=index)
        if len(kept) > 2:
            extra = kept[2:]
            described = ", ".join(
                f"axis {axis} ({_ctype_label(header, axis)}) of length {naxes[axis - 1]}"
                for axis in extra
            )
            reason = (
                f"{len(naxes)}-D cube with more than one plane: {described}; "
                "extract a single 2-D plane first"
            )
            raise self.fail(reason, hdu=index)
        image = data.reshape(naxes[kept[1] - 1], naxes[kept[0] - 1])
        if not image.flags.writeable or image.dtype != np.float32:
            image = np.array(image, dtype=np.float32)
        return np.ascontiguousarray(image), kept

    # ------------------------------------------------------------- beam, WCS
    def _set_beam(self, cutout, header, index):
        bmaj = header.number("BMAJ", None, self, index)
        bmin = header.number("BMIN", None, self, index)
        if bmaj is None or bmin is None:
            match = _AIPS_BEAM.search(header.text) if b"BMAJ" in header.text else None
            if match is None:
                return
            try:
                bmaj, bmin = (float(v.replace(b"D", b"E").replace(b"d", b"e")) for v in match.groups())
            except ValueError:
                return
        if bmaj > 0 and bmin > 0 and math.isfinite(bmaj) and math.isfinite(bmin):
            cutout.beam_major_arcsec = bmaj * 3600.0
            cutout.beam_minor_arcsec = bmin * 3600.0
        else:
            self.warn(f"beam BMAJ={bmaj!r}, BMIN={bmin!r} is not positive; ignored", hdu=index)

    def _set_wcs(self, cutout, header, index, axes):
        from astropy.wcs import WCS, Wcsprm

        cards = header.wcs_cards()
        distorted = _has_distortion(cards)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                if distorted:
                    wcs = self._distorted_wcs(cards)
                    wcsprm = wcs.wcs
                    fixes = {}
                else:
                    wcs = None
                    wcsprm = Wcsprm(cards, key=" ", relax=True)
                    fixes = wcsprm.fix(translate_units="")
                wcsprm.set()
            except Exception as exc:  # wcslib raises a zoo of exception types
                reason = f"invalid WCS ({_one_line(exc)}); position unknown"
                self.warn(reason, NoWCSWarning, hdu=index)
                return
        for warning in caught:
            self.warn(f"wcslib: {_one_line(warning.message)}", hdu=index)
        for fix, message in fixes.items():
            if message != "No change" and fix not in _SILENT_FIXES:
                self.warn(f"wcslib {fix}: {_one_line(message)}", hdu=index)
        if wcsprm.lng < 0 or wcsprm.lat < 0:
            ctypes = ", ".join(f"CTYPE{a}={str(c)!r}" for a, c in enumerate(wcsprm.ctype, 1))
            self.warn(f"no celestial WCS ({ctypes}); position unknown", NoWCSWarning, hdu=index)
            return
        celestial_axes = sorted((wcsprm.lng + 1, wcsprm.lat + 1))
        if celestial_axes != axes:
            reason = (
                f"the celestial WCS axes {celestial_axes} are not the image axes {axes}; "
                "position unknown"
            )
            self.warn(reason, NoWCSWarning, hdu=index)
            return
        self._check_frame(header, wcsprm, index)
        # centre of the image; degenerate axes at their single pixel
        naxes = header.naxes(self, index)
        pixel = np.zeros((1, wcsprm.naxis))
        for axis in axes:
            pixel[0, axis - 1] = (naxes[axis - 1] - 1) / 2.0
        try:
            if distorted:
                world = wcs.all_pix2world(pixel, 0)[0]
            else:
                world = wcsprm.p2s(pixel, 0)["world"][0]
        except Exception as exc:
            self.warn(f"WCS cannot place the image centre ({_one_line(exc)})", NoWCSWarning, hdu=index)
            return
        ra_deg = float(world[wcsprm.lng]) % 360.0
        dec_deg = float(world[wcsprm.lat])
        if not (math.isfinite(ra_deg) and math.isfinite(dec_deg)):
            self.warn("WCS gives no finite position at the image centre", NoWCSWarning, hdu=index)
            return
        if wcs is None:
            wcs = WCS(naxis=wcsprm.naxis)
            wcs.wcs = wcsprm
        # WCS.celestial deep-copies; a plain 2-D (lon, lat) WCS is already celestial
        celestial = wcs if (wcsprm.naxis, wcsprm.lng, wcsprm.lat) == (2, 0, 1) else wcs.celestial
        celestial.pixel_shape = (naxes[celestial_axes[0] - 1], naxes[celestial_axes[1] - 1])
        from astropy.wcs.utils import proj_plane_pixel_scales

        scales = proj_plane_pixel_scales(celestial)
        cutout.ra_deg = ra_deg
        cutout.dec_deg = dec_deg
        cutout.pixel_scale_arcsec = float(math.sqrt(abs(scales[0] * scales[1]))) * 3600.0
        cutout.wcs = celestial

    @staticmethod
    def _distorted_wcs(cards):
        """Full astropy WCS, for headers with SIP or lookup-table distortions."""
        from astropy.io import fits
        from astropy.wcs import WCS

        return WCS(fits.Header.fromstring(cards.decode("ascii")), relax=True)

    def _check_frame(self, header, wcsprm, index):
        if not str(wcsprm.ctype[wcsprm.lng]).upper().startswith("RA"):
            return  # galactic, ecliptic...: no equinox involved
        has_frame = header.get("RADESYS") is not None or header.get("RADECSYS") is not None
        has_equinox = header.get("EQUINOX") is not None or header.get("EPOCH") is not None
        if not has_frame and not has_equinox:
            self.warn("neither RADESYS nor EQUINOX given; assuming ICRS", hdu=index)
        elif not has_equinox and str(wcsprm.radesys).upper() in ("FK5", "FK4"):
            equinox = "J2000" if str(wcsprm.radesys).upper() == "FK5" else "B1950"
            self.warn(f"RADESYS = {wcsprm.radesys} without EQUINOX; assuming {equinox}", hdu=index)


class _Header:
    """The cards of one header, decoded lazily keyword by keyword.

    Only the first occurrence of a keyword counts. Values are decoded on
    demand (string, logical, integer, float); ``None`` for an absent keyword
    or one without a value.
    """

    def __init__(self, text: bytes):
        self.text = text
        self._cache = {}
        self._keyword_cards = None

    @property
    def keyword_cards(self) -> bytes:
        """The cards other than COMMENT, HISTORY and blank ones, concatenated.

        A SkyView header has some 200 commentary cards and 25 others;
        searching only the latter makes looking up a keyword cheap.
        """
        if self._keyword_cards is None:
            text = self.text
            self._keyword_cards = b"".join(
                [
                    text[start : start + _CARD]
                    for start in range(0, len(text), _CARD)
                    if text[start : start + 8] not in _COMMENTARY
                ]
            )
        return self._keyword_cards

    def _find(self, keyword: bytes):
        """The first card named ``keyword``, or None."""
        cards = self.keyword_cards
        card_name = keyword.ljust(8)
        position = cards.find(card_name)
        while position >= 0 and position % _CARD:
            position = cards.find(card_name, position + 1)
        return None if position < 0 else cards[position : position + _CARD]

    def get(self, keyword: str, default=None):
        if keyword in self._cache:
            value = self._cache[keyword]
        else:
            card = self._find(keyword.encode("ascii"))
            value = None if card is None else _card_value(card)
            self._cache[keyword] = value
        return default if value is None else value

    def number(self, keyword, default, reader, index):
        value = self.get(keyword)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            reader.warn(f"{keyword} = {value!r} is not a number; ignored", hdu=index)
            return default
        return float(value)

    def naxes(self, reader, index):
        naxis = self.get("NAXIS")
        if not isinstance(naxis, int) or isinstance(naxis, bool) or not 0 <= naxis <= 999:
            raise reader.fail(f"NAXIS missing or invalid ({naxis!r})", hdu=index)
        lengths = []
        for axis in range(1, naxis + 1):
            length = self.get(f"NAXIS{axis}")
            if not isinstance(length, int) or isinstance(length, bool) or length < 0:
                raise reader.fail(f"NAXIS{axis} missing or invalid ({length!r})", hdu=index)
            lengths.append(length)
        return lengths

    def wcs_cards(self) -> bytes:
        """The non-commentary cards (with END), for wcslib."""
        return self.keyword_cards + _END_CARD

    def describe_nonprintable(self) -> str:
        found = {}
        text = self.text
        for start in range(0, len(text), _CARD):
            card = text[start : start + _CARD]
            bad = card.translate(None, _PRINTABLE)
            if bad:
                keyword = card[:8].decode("ascii", "replace").strip() or "(blank)"
                names = found.setdefault(keyword, set())
                names.update(_NONPRINTABLE_NAMES.get(b, f"0x{b:02X}") for b in bad)
        listed = "; ".join(f"{sorted(names)} in {keyword} cards" for keyword, names in found.items())
        return f"non-printable characters in the header ({listed}); read as spaces"


def _card_value(card: bytes):
    """Decode the value of one 80-character card; None when it has none."""
    if card[8:10] != b"= ":
        return None
    field = card[10:].decode("ascii", "replace").strip()
    if not field:
        return None
    if field.startswith("'"):
        chars = []
        position = 1
        while position < len(field):
            char = field[position]
            if char == "'":
                if field[position + 1 : position + 2] == "'":
                    chars.append("'")
                    position += 2
                    continue
                break
            chars.append(char)
            position += 1
        return "".join(chars).rstrip()
    field = field.split("/", 1)[0].strip()
    if field == "T":
        return True
    if field == "F":
        return False
    try:
        return int(field)
    except ValueError:
        pass
    try:
        return float(field.replace("D", "E").replace("d", "e"))
    except ValueError:
        return field  # kept as text; a caller expecting a number reports it


def _inflate(decompressor, data: bytes, max_length: int) -> bytes:
    """Up to ``max_length`` decompressed bytes (zlib and bz2 spell it differently)."""
    if isinstance(decompressor, bz2.BZ2Decompressor):
        if decompressor.needs_input and not data:
            return b""
        return decompressor.decompress(data, max_length=max_length)
    return decompressor.decompress(data or decompressor.unconsumed_tail, max_length)


def _mebibytes(n_bytes: int) -> str:
    return f"{n_bytes / _MiB:.{0 if n_bytes >= 10 * _MiB else 1}f} MiB"


def _peek_decompressed(raw: bytes) -> bytes:
    """The first decompressed bytes of a gzip or bzip2 file, enough for its headers (fed in small pieces,
    so that what comes before a corrupt or truncated part is still seen)."""
    decompressor = zlib.decompressobj(wbits=31) if raw.startswith(b"\x1f\x8b") else bz2.BZ2Decompressor()
    parts: list[bytes] = []
    size = 0
    step = 4096
    for start in range(0, len(raw), step):
        try:
            part = _inflate(decompressor, raw[start : start + step], _HEADER_PEEK - size)
        except (zlib.error, OSError, EOFError):
            break
        parts.append(part)
        size += len(part)
        if size >= _HEADER_PEEK or getattr(decompressor, "eof", False):
            break
    return b"".join(parts)


def _image_geometry(buffer: bytes) -> tuple[int, list[int], int] | None:
    """(HDU, NAXISn, BITPIX) of the image in the primary HDU or, after a data-less primary, the first
    extension (tile-compressed: its ZNAXISn, ZBITPIX); None when the headers do not say."""
    offset = 0
    for index in (0, 1):
        end = buffer.find(_END_CARD, offset)
        while end >= 0 and (end - offset) % _CARD:
            end = buffer.find(_END_CARD, end + 1)
        if end < 0:
            return None
        header = _Header(buffer[offset:end].translate(_SANITISE))
        prefix = "Z" if header.get("ZIMAGE") is True else ""
        naxis, bitpix = header.get(f"{prefix}NAXIS"), header.get(f"{prefix}BITPIX")
        if not isinstance(naxis, int) or not isinstance(bitpix, int) or bitpix not in _BITPIX_DTYPES:
            return None
        naxes = [header.get(f"{prefix}NAXIS{axis}") for axis in range(1, naxis + 1)]
        if not all(isinstance(n, int) and n >= 0 for n in naxes):
            return None
        if naxes and math.prod(naxes) > 0:
            return index, naxes, bitpix
        offset += _padded(end + _CARD - offset)
    return None


def _has_distortion(cards: bytes) -> bool:
    if b"-SIP'" in cards:
        return True
    return any(
        cards[start : start + 8].startswith(_DISTORTION_KEYWORDS) for start in range(0, len(cards), _CARD)
    )


def _padded(n_bytes: int) -> int:
    return -(-n_bytes // _BLOCK) * _BLOCK


def _as_str(value):
    return None if value is None else str(value).strip() or None


def _ctype_label(header, axis):
    ctype = header.get(f"CTYPE{axis}")
    return f"CTYPE{axis}={str(ctype).strip()!r}" if ctype is not None else f"no CTYPE{axis}"


def _one_line(value) -> str:
    return " ".join(str(value).split())
