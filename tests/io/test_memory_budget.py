"""--max-memory: a cutout's memory need is estimated from its header and refused before anything is decoded."""

from __future__ import annotations

import gzip
import zlib

import pytest
from click.testing import CliRunner

from survey_classifier.cli import main
from survey_classifier.errors import CutoutLimitError
from survey_classifier.io.fits import WORKING_COPIES, ReadLimits, parse_memory, read_cutout

MiB = 1024 * 1024


def header(side: int, bitpix: int = -32) -> bytes:
    cards = ["SIMPLE  =                    T", f"BITPIX  = {bitpix:20d}", "NAXIS   =                    2",
             f"NAXIS1  = {side:20d}", f"NAXIS2  = {side:20d}", "END"]
    return "".join(card.ljust(80) for card in cards).ljust(2880).encode("ascii")


def truncated_gzip(path, side: int) -> str:
    """A gzip file of the header and the first MiB of a side x side image, cut off: decoding it would fail."""
    compressor = zlib.compressobj(wbits=31)
    head = compressor.compress(header(side) + bytes(MiB)) + compressor.flush(zlib.Z_FULL_FLUSH)
    path.write_bytes(head)
    return str(path)


def test_parse_memory():
    assert parse_memory("1.5G") == 1536 * MiB
    assert parse_memory("800MiB") == parse_memory("800M") == parse_memory("800 mb") == 800 * MiB
    assert parse_memory("4096") == 4096
    for bad in ("", "-1G", "lots", "0"):
        with pytest.raises(ValueError, match="not a positive size"):
            parse_memory(bad)


def test_refused_from_the_header_alone(tmp_path):
    path = truncated_gzip(tmp_path / "huge.fits.gz", 8192)
    with pytest.raises(CutoutLimitError) as caught:
        read_cutout(path, limits=ReadLimits(max_memory=parse_memory("1G")))
    need = 8192 * 8192 * 4 * (1 + WORKING_COPIES) + (tmp_path / "huge.fits.gz").stat().st_size
    assert caught.value.hdu == 0
    assert caught.value.reason.startswith(
        f"needs about {need / MiB:.0f} MiB of memory to decode and process (8192 x 8192 pixels of BITPIX -32, "
        "256 MiB once decompressed, 8 working copies), over the budget of 1024 MiB (--max-memory)"
    )
    # without a budget the same file is decoded, and its truncation is what is reported
    with pytest.raises(Exception, match="truncated file: the gzip stream ends early"):
        read_cutout(path)


def test_within_the_budget_reads(tmp_path, mirabest_files):
    cutout = read_cutout(mirabest_files[0], limits=ReadLimits(max_memory=parse_memory("2M")))
    assert cutout.data.shape == (150, 150)
    with pytest.raises(CutoutLimitError, match=r"needs about 0.8 MiB .* over the budget of 0.5 MiB"):
        read_cutout(mirabest_files[0], limits=ReadLimits(max_memory=parse_memory("0.5M")))
    compressed = tmp_path / "mirabest.fits.gz"
    compressed.write_bytes(gzip.compress(mirabest_files[0].read_bytes()))
    assert read_cutout(str(compressed), limits=ReadLimits(max_memory=parse_memory("1M"))).data.shape == (150, 150)
    with pytest.raises(CutoutLimitError, match=r"\(150 x 150 pixels of BITPIX -32, 0.1 MiB once decompressed"):
        read_cutout(str(compressed), limits=ReadLimits(max_memory=parse_memory("0.5M")))


def test_classify_max_memory_option(tmp_path, sqlite_url, mirabest_files):
    huge = truncated_gzip(tmp_path / "huge.fits.gz", 8192)
    result = CliRunner().invoke(
        main, ["classify", huge, str(mirabest_files[0]), "--db", sqlite_url, "--stages", "measure",
               "--max-memory", "1G", "--quiet"], catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    assert "over the budget of 1024 MiB (--max-memory)" in result.output
    bad = CliRunner().invoke(main, ["classify", huge, "--db", sqlite_url, "--max-memory", "lots"])
    assert bad.exit_code == 2 and "not a positive size such as 800M" in bad.output
