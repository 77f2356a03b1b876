"""Labelled catalogues for CNN training: reading, checking, splitting.

A labelled catalogue is any table astropy can read (CSV, ECSV, VOTable,
FITS) with a column naming the image file and a column holding the label.
Images are FITS cutouts (Jy/beam) or PNG images (8-bit); both go through
the shared :func:`survey_classifier.preprocess.preprocess`, with the same
:class:`~survey_classifier.preprocess.PreprocessConfig` the model will
store, so training and inference see identical pixels.

Every problem a catalogue can have before training (labels unknown to the
task, unreadable images, classes with too few examples) is collected and
reported at once in one :class:`~survey_classifier.errors.CatalogueError`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from survey_classifier.errors import CatalogueError, CutoutError
from survey_classifier.preprocess import PreprocessConfig, preprocess

__all__ = [
    "PNG_SUFFIXES",
    "LabelledSet",
    "read_catalogue",
    "read_image",
    "load_images",
    "turn_on_sky",
    "load_turned_images",
    "source_groups",
    "split_indices",
]

PNG_SUFFIXES = (".png", ".jpg", ".jpeg")
_SPLIT_NAMES = ("train", "valid", "test")


@dataclass
class LabelledSet:
    """Image paths, labels and optional positions from a labelled catalogue.

    Attributes
    ----------
    paths : list of Path
        Resolved image files, one per row.
    labels : ndarray of str
        The label of each row.
    classes : list of str
        The classes of the task, in the order the model outputs them.
    ra_deg, dec_deg : ndarray or None
        Positions when the catalogue has them (used for source-disjoint
        splits).
    split : ndarray of str or None
        A predefined split ("train", "valid", "test") when asked for.
    catalogue : str
        The catalogue file, for messages and model cards.
    """

    paths: list[Path]
    labels: np.ndarray
    classes: list[str]
    ra_deg: np.ndarray | None = None
    dec_deg: np.ndarray | None = None
    split: np.ndarray | None = None
    catalogue: str = ""
    selection: dict = field(default_factory=dict)

    @property
    def targets(self) -> np.ndarray:
        """Integer class index of each row."""
        lookup = {name: index for index, name in enumerate(self.classes)}
        return np.array([lookup[label] for label in self.labels], dtype=np.int64)

    def subset(self, index) -> LabelledSet:
        index = np.asarray(index)
        pick = lambda values: None if values is None else values[index]
        return LabelledSet(
            paths=[self.paths[i] for i in index],
            labels=self.labels[index],
            classes=list(self.classes),
            ra_deg=pick(self.ra_deg),
            dec_deg=pick(self.dec_deg),
            split=pick(self.split),
            catalogue=self.catalogue,
            selection=dict(self.selection),
        )

    def __len__(self) -> int:
        return len(self.paths)


def read_catalogue(
    path,
    *,
    file_column: str = "file",
    label_column: str = "label",
    image_dir=None,
    classes=None,
    where: dict[str, str] | None = None,
    split_column: str | None = None,
    min_per_class: int = 10,
    check_images: bool = True,
) -> LabelledSet:
    """Read and check a labelled catalogue.

    Parameters
    ----------
    path : str or Path
        The table (any format :meth:`astropy.table.Table.read` reads).
    file_column, label_column : str
        Columns holding the image file (relative to ``image_dir``) and label.
    image_dir : str or Path, optional
        Where relative file names are found. Defaults to the catalogue's
        directory, then its ``fits/`` or ``png/`` subdirectory.
    classes : sequence of str, optional
        The classes of the task, in output order. Defaults to the sorted
        distinct labels. A row whose label is not one of them is an error.
    where : dict, optional
        ``{column: value}`` or ``{column: [values]}`` row selection applied
        before anything else (e.g. ``{"confidence": "confident",
        "fr_class": ["FRI", "FRII"]}``).
    split_column : str, optional
        Column holding a predefined split (train/valid/test).
    min_per_class : int
        Fewest examples a class may have.
    check_images : bool
        Open every image to find unreadable ones now rather than mid-training.

    Raises
    ------
    CatalogueError
        Listing every problem found: missing columns, unknown labels,
        missing or unreadable images, classes with too few examples.
    """
    from survey_classifier.io.inputs import read_table

    path = Path(path)
    table = read_table(path)
    where = dict(where or {})
    wanted = [file_column, label_column, *where, *([split_column] if split_column else [])]
    missing = [name for name in wanted if name not in table.colnames]
    if missing:
        msg = f"{path}: the catalogue has no column(s) {missing}; it has {table.colnames}"
        raise CatalogueError(msg)
    keep = np.ones(len(table), dtype=bool)
    for column, value in where.items():
        allowed = [str(v) for v in value] if isinstance(value, (list, tuple, set)) else [str(value)]
        keep &= np.isin(np.array([str(v).strip() for v in table[column]]), allowed)
    table = table[keep]
    problems: list[str] = []
    if len(table) == 0:
        msg = f"{path}: no rows left after selecting {where}"
        raise CatalogueError(msg)
    labels = np.array([str(v).strip() for v in table[label_column]], dtype=object).astype(str)
    classes = sorted({str(v) for v in labels}) if classes is None else [str(c) for c in classes]
    unknown = sorted({str(v) for v in labels} - set(classes))
    if unknown:
        counts = {name: int((labels == name).sum()) for name in unknown}
        problems.append(
            f"labels not among the task's classes {classes}: {counts} "
            f"(select rows with --where or name the classes with --classes)"
        )
    known = np.isin(labels, classes)
    for name in classes:
        count = int((labels == name).sum())
        if count < min_per_class:
            problems.append(f"class {name!r} has {count} examples, fewer than {min_per_class}")
    image_dir = Path(image_dir) if image_dir is not None else None
    paths = [_resolve(str(name).strip(), path.parent, image_dir) for name in table[file_column]]
    if check_images:
        bad = []
        for image_path, ok in zip(paths, known):
            if not ok:
                continue
            try:
                read_image(image_path)
            except CutoutError as exc:
                bad.append(str(exc))
        if bad:
            shown = "\n    ".join(bad[:20])
            more = f"\n    ... and {len(bad) - 20} more" if len(bad) > 20 else ""
            problems.append(f"{len(bad)} unreadable image(s):\n    {shown}{more}")
    split = None
    if split_column:
        split = np.array([str(v).strip().lower() for v in table[split_column]])
        odd = sorted(set(split) - set(_SPLIT_NAMES))
        if odd:
            problems.append(f"column {split_column!r} holds {odd}; expected {_SPLIT_NAMES}")
    if problems:
        text = "\n  - ".join(problems)
        msg = f"{path}: the catalogue cannot be used for training:\n  - {text}"
        raise CatalogueError(msg)
    ra = _float_column(table, ("ra_deg", "ra", "RA"))
    dec = _float_column(table, ("dec_deg", "dec", "DEC", "Dec"))
    return LabelledSet(
        paths=paths,
        labels=labels,
        classes=classes,
        ra_deg=ra,
        dec_deg=dec,
        split=split,
        catalogue=str(path),
        selection=where,
    )


def _float_column(table, names) -> np.ndarray | None:
    for name in names:
        if name in table.colnames:
            return np.asarray(table[name], dtype=float)
    return None


def _resolve(name: str, catalogue_dir: Path, image_dir: Path | None) -> Path:
    candidate = Path(name).expanduser()
    if candidate.is_absolute():
        return candidate
    bases = [image_dir] if image_dir is not None else [
        catalogue_dir,
        catalogue_dir / "fits",
        catalogue_dir / "png",
    ]
    for base in bases:
        if (base / candidate).exists():
            return base / candidate
    return bases[0] / candidate


def read_image(path) -> np.ndarray:
    """Pixels of one FITS or PNG image as a 2-D float32 array.

    FITS files go through :func:`survey_classifier.io.fits.read_cutout`
    (the reader the inference pipeline uses); PNG images are read as
    grey levels 0-255.

    Raises
    ------
    CutoutReadError
        Naming the file and what was wrong.
    """
    from survey_classifier.errors import CutoutReadError

    path = Path(path)
    if not path.exists():
        raise CutoutReadError(path, "file not found")
    if path.suffix.lower() in PNG_SUFFIXES:
        return _read_png(path)
    from survey_classifier.io.fits import read_cutout

    return np.asarray(read_cutout(path).data, dtype=np.float32)


def _read_png(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    from survey_classifier.errors import CutoutReadError

    try:
        with Image.open(path) as image:
            grey = image.convert("L")
            return np.asarray(grey, dtype=np.float32)
    except (OSError, UnidentifiedImageError) as exc:
        raise CutoutReadError(path, f"not a readable image: {exc}") from exc


def load_images(paths, config: PreprocessConfig, *, cache_dir=None) -> np.ndarray:
    """Read and preprocess images into an (n, size, size, 1) float32 array.

    Parameters
    ----------
    paths : sequence of Path
    config : PreprocessConfig
    cache_dir : str or Path, optional
        Where to keep a ``.npy`` of the result, keyed by the files and the
        configuration digest (speeds up repeated runs such as the
        transfer-learning table).
    """
    paths = [Path(p) for p in paths]
    cache_file = None
    if cache_dir is not None:
        from survey_classifier.checksum import sha256_bytes

        key = sha256_bytes(("\n".join(str(p.resolve()) for p in paths) + config.digest()).encode())[:20]
        cache_file = Path(cache_dir) / f"images-{key}.npy"
        if cache_file.exists():
            return np.load(cache_file)
    images = np.empty((len(paths), config.size, config.size, 1), dtype=np.float32)
    for index, path in enumerate(paths):
        try:
            images[index, :, :, 0] = preprocess(read_image(path), config)
        except ValueError as exc:
            from survey_classifier.errors import CutoutReadError

            raise CutoutReadError(path, f"cannot be preprocessed: {exc}") from exc
    if cache_file is not None:
        os.makedirs(cache_file.parent, exist_ok=True)
        np.save(cache_file, images)
    return images


def turn_on_sky(pixels, degrees: float) -> np.ndarray:
    """A cutout's pixels turned by ``degrees`` about the cutout's centre (bilinear), as the sky would turn.

    A positive angle turns the array as :func:`numpy.rot90` does
    (anticlockwise with row 0 at the top). A FITS cutout is shown the other
    way up (row 0 at the bottom, north up and east left for the usual
    ``CDELT1 < 0``), so on the sky the turn is clockwise: every feature's
    position angle (east of north) about the centre decreases by
    ``degrees``. Turns by multiples of 90° are exact permutations of the
    pixels; at other angles the flux inside the circle the frame keeps is
    conserved to about 1 % (bilinear resampling).

    The shape is kept: the corners that turn out of the frame are lost, and
    those turned in from outside are 0, as are blank (NaN) pixels.

    Used to ask how much a model's answer changes when its sources turn
    (``bench/rotation_check.py``, the tests of the equivariant backbones).

    Parameters
    ----------
    pixels : ndarray, shape (ny, nx)
        The cutout's pixels, in their physical unit.
    degrees : float
        The turn; 0 returns the pixels (blanks set to 0) as they are.
    """
    from scipy.ndimage import rotate

    pixels = np.nan_to_num(np.asarray(pixels))
    if not degrees:
        return pixels
    return rotate(pixels, degrees, reshape=False, order=1, mode="constant")


def load_turned_images(paths, config: PreprocessConfig, degrees: float) -> np.ndarray:
    """FITS cutouts turned on the sky by ``degrees`` (:func:`turn_on_sky`), then preprocessed.

    The pixels turn before :func:`~survey_classifier.preprocess.preprocess`
    (so its background, clipping and crop act on the turned sky), which is
    given each cutout's pixel scale as the ``cnn`` stage gives it.

    Returns
    -------
    ndarray, shape (n, size, size, 1), float32
    """
    from survey_classifier.io.fits import read_cutout

    images = []
    for path in paths:
        cutout = read_cutout(path)
        pixels = turn_on_sky(cutout.data, degrees)
        images.append(preprocess(pixels, config, pixel_scale_arcsec=cutout.pixel_scale_arcsec))
    return np.stack(images)[..., None].astype(np.float32)


def source_groups(ra_deg, dec_deg, *, radius_arcsec: float = 60.0) -> np.ndarray:
    """Group rows whose positions lie within ``radius_arcsec`` of each other.

    Two catalogue rows of the same radio source (or overlapping cutouts)
    get the same group, so a split by group is source-disjoint. Rows
    without positions form a group each.
    """
    n = len(ra_deg) if ra_deg is not None else 0
    groups = np.arange(n)
    if n == 0 or dec_deg is None:
        return groups
    from astropy import units as u
    from astropy.coordinates import SkyCoord
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    coords = SkyCoord(np.asarray(ra_deg) * u.deg, np.asarray(dec_deg) * u.deg)
    first, second, _, _ = coords.search_around_sky(coords, radius_arcsec * u.arcsec)
    graph = coo_matrix((np.ones(len(first)), (first, second)), shape=(n, n))
    _, groups = connected_components(graph, directed=False)
    return groups


def split_indices(
    targets,
    groups,
    *,
    test_fraction: float = 0.2,
    valid_fraction: float = 0.15,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """A stratified, group-disjoint train/valid/test split.

    Rows of one group always land in the same part. The test part is
    ``test_fraction`` of the rows; ``valid_fraction`` of the rest is held
    for validation (model choices are made there, never on the test part).
    The same ``seed`` and inputs always give the same split.

    Returns
    -------
    dict
        ``{"train": index, "valid": index, "test": index}``, sorted arrays.
    """
    from sklearn.model_selection import StratifiedGroupKFold

    targets = np.asarray(targets)
    groups = np.asarray(groups)
    parts: dict[str, np.ndarray] = {}
    rest = np.arange(len(targets))
    for name, fraction in (("test", test_fraction), ("valid", valid_fraction)):
        if fraction <= 0:
            parts[name] = np.array([], dtype=np.int64)
            continue
        n_splits = max(2, int(round(1.0 / fraction)))
        folds = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
        keep, held = next(folds.split(rest, targets[rest], groups[rest]))
        parts[name] = np.sort(rest[held])
        rest = np.sort(rest[keep])
    parts["train"] = rest
    return parts
