"""Link loops, dangling links, FIFOs and devices among the inputs: each recorded as what it is, the rest processed."""

from __future__ import annotations

import os
import re
import shutil

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from survey_classifier.cli import main
from survey_classifier.db import make_engine
from survey_classifier.db.models import CutoutRow, ErrorRow, MeasurementRow
from survey_classifier.errors import CutoutReadError
from survey_classifier.io import expand_inputs, read_cutout

#: What the reader says of each kind of entry made by :func:`folder`.
EXPECTED = {
    "dangling.fits": "dangling symbolic link to missing.fits",
    "device.fits": "character device, not a file",
    "loop.fits": "symbolic link loop",
    "pipe.fits": "named pipe (FIFO), not a file",
}


@pytest.fixture
def folder(tmp_path, mirabest_files):
    """Two real cutouts, a link to itself, a link to nothing, a FIFO and a link to /dev/null."""
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    for path in mirabest_files[:2]:
        shutil.copy(path, inputs)
    (inputs / "loop.fits").symlink_to("loop.fits")
    (inputs / "dangling.fits").symlink_to("missing.fits")
    os.mkfifo(inputs / "pipe.fits")
    (inputs / "device.fits").symlink_to(os.devnull)
    (inputs / "folder.fits").mkdir()  # a folder with a FITS name is not an input
    return inputs


def test_a_folder_lists_every_entry_with_a_fits_name_but_folders(folder, mirabest_files):
    names = [os.path.basename(s.path) for s in expand_inputs(folder)]
    assert names == sorted([p.name for p in mirabest_files[:2]] + list(EXPECTED))


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_the_reader_says_what_it_is(folder, name):
    with pytest.raises(CutoutReadError, match=re.escape(EXPECTED[name])):
        read_cutout(str(folder / name))


def test_named_directly_a_fifo_or_a_device_is_what_it_is(folder):
    for path, reason in ((folder / "pipe.fits", "named pipe (FIFO), not a file"),
                         (os.devnull, "character device, not a file")):
        (source,) = expand_inputs(path)
        with pytest.raises(CutoutReadError, match=re.escape(reason)) as caught:
            read_cutout(source)
        assert "empty" not in str(caught.value)


def test_classify_records_each_and_processes_the_rest(folder, tmp_path, mirabest_files):
    url = f"sqlite:///{tmp_path / 'results.db'}"
    done = CliRunner().invoke(main, ["classify", str(folder), "--db", url, "--stages", "measure", "--quiet"])
    assert "Traceback" not in done.output
    engine = make_engine(url)
    with engine.connect() as connection:
        errors = {os.path.basename(path): message for path, message in connection.execute(
            select(CutoutRow.path, ErrorRow.message).join(ErrorRow, ErrorRow.cutout_id == CutoutRow.id))}
        measured = {os.path.basename(p) for p in connection.execute(
            select(CutoutRow.path).join(MeasurementRow, MeasurementRow.cutout_id == CutoutRow.id)).scalars()}
    engine.dispose()
    assert set(errors) == set(EXPECTED)
    assert all(EXPECTED[name] in message for name, message in errors.items()), errors
    assert measured == {p.name for p in mirabest_files[:2]}
