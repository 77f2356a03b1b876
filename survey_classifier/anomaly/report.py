"""Top anomalies, their gallery (PNG and HTML) and the evaluation on labelled data."""

from __future__ import annotations

import html
import warnings
from pathlib import Path

import numpy as np
from astropy.table import Table

from survey_classifier.errors import SurveyClassifierError

__all__ = ["make_gallery", "gallery_figure", "rare_mask", "image_statistics", "evaluate_scores"]


def _stretched(path: str) -> np.ndarray | None:
    from survey_classifier.display import stretch
    from survey_classifier.io.fits import read_cutout

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            data = read_cutout(path).data
    except Exception:
        return None
    return stretch(data)


def gallery_figure(table: Table, title: str = "Top anomalies"):
    """The grid of ``gallery.png`` (a matplotlib Figure) and which rows had a readable image.

    Constrained layout keeps the title clear of the tiles' captions.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(table)
    columns = min(5, max(n, 1))
    rows = max(1, int(np.ceil(n / columns)))
    figure, axes = plt.subplots(
        rows, columns, figsize=(3.0 * columns, 3.3 * rows + 0.4), squeeze=False, layout="constrained"
    )
    images = []
    for rank, (axis, row) in enumerate(zip(axes.flat, table), start=1):
        image = _stretched(str(row["path"]))
        label = _text(row, "cnn_label")
        node = f"({_text(row, 'som_node_x')},{_text(row, 'som_node_y')})"
        caption = f"#{rank} {_shortened(_name(row), 36)}\nscore {float(row['anomaly_score']):.3f}  {label}  node {node}"
        if image is not None:
            axis.imshow(image, origin="lower", cmap="inferno")
        axis.set_title(caption, fontsize=8)
        axis.set_axis_off()
        images.append(image)
    for axis in list(axes.flat)[n:]:
        axis.set_axis_off()
    figure.suptitle(title)
    return figure, images


def make_gallery(table: Table, directory, *, title: str = "Top anomalies") -> tuple[Path, Path]:
    """Write ``gallery.png`` (a grid) and ``index.html`` (a table with each cutout).

    ``table`` is the output of :func:`survey_classifier.query.top_anomalies`,
    most anomalous first. The page names each source (its catalogue id,
    else its file's name), gives RA and Dec, and links the FITS file.
    """
    import matplotlib.pyplot as plt

    directory = Path(directory)
    (directory / "cutouts").mkdir(parents=True, exist_ok=True)
    figure, images = gallery_figure(table, title)
    png = directory / "gallery.png"
    figure.savefig(png, dpi=90)
    plt.close(figure)
    for rank, image in enumerate(images, start=1):
        if image is not None:
            plt.imsave(directory / "cutouts" / f"{rank:04d}.png", image, origin="lower", cmap="inferno")
    shown = {"anomaly_score", "anomaly_rank", "anomaly_stage_version", "anomaly_model_ref", "anomaly_run_id",
             "anomaly_model_sha256", "anomaly_percentile"}
    component_columns = [c for c in table.colnames if c.startswith("anomaly_") and not c.endswith("_pct")
                         and c not in shown]
    headings = ["rank", "cutout", "name", "RA (deg)", "Dec (deg)", "score", "percentile", "label", "SOM node",
                *(c.removeprefix("anomaly_") for c in component_columns)]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in headings)
    body = []
    for rank, (row, image) in enumerate(zip(table, images), start=1):
        path = Path(str(row["path"]))
        picture = f'<img src="cutouts/{rank:04d}.png" width="128" alt="">' if image is not None else "unreadable"
        name = f'<a href="{html.escape(path.resolve().as_uri())}" title="{html.escape(str(path))}">' \
               f"{html.escape(_name(row))}</a>"
        cells = [
            str(rank),
            picture,
            name,
            _text(row, "ra_deg", ".5f"),
            _text(row, "dec_deg", ".5f"),
            f"{float(row['anomaly_score']):.3f}",
            _text(row, "anomaly_percentile", ".1f"),
            html.escape(_text(row, "cnn_label")),
            f"({_text(row, 'som_node_x')}, {_text(row, 'som_node_y')})",
            *[html.escape(_text(row, c)) for c in component_columns],
        ]
        body.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        "<style>body{font-family:sans-serif}td,th{border:1px solid #ccc;padding:4px;font-size:13px}"
        "table{border-collapse:collapse}</style></head>"
        f"<body><h1>{html.escape(title)}</h1><p><img src='gallery.png' width='100%' alt=''></p>"
        f"<table><tr>{head}</tr>{''.join(body)}</table></body></html>"
    )
    index = directory / "index.html"
    index.write_text(page)
    return png, index


def _shortened(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _name(row) -> str:
    """The source's catalogue id, else its file's name without the suffix."""
    name = _text(row, "catalogue_id")
    return name if name != "-" else Path(str(row["path"])).name.removesuffix(".gz").rsplit(".", 1)[0]


def _text(row, column, fmt: str = ".3g") -> str:
    if column not in row.colnames:
        return "-"
    value = row[column]
    if np.ma.is_masked(value):
        return "-"
    if isinstance(value, (float, np.floating)):
        return format(value, fmt)
    return str(value)


def rare_mask(table: Table, rules: list[str]) -> np.ndarray:
    """Rows matching any rule ``COLUMN=VALUE`` or ``COLUMN!=VALUE``."""
    mask = np.zeros(len(table), dtype=bool)
    for rule in rules:
        negate = "!=" in rule
        column, _, value = rule.partition("!=" if negate else "=")
        if column not in table.colnames:
            msg = f"rare-source rule {rule!r}: no column {column!r}; columns: {table.colnames}"
            raise SurveyClassifierError(msg)
        values = np.array([str(v) for v in np.ma.filled(table[column].astype(str), "")])
        mask |= (values != value) if negate else (values == value)
    return mask


def image_statistics(paths) -> np.ndarray:
    """Simple per-image statistics (the Astronomaly-style baseline features).

    From the shared preprocessing (64x64, background removed, clipped at 3
    sigma, scaled to [0, 1]): mean, standard deviation, skewness, kurtosis,
    fraction of pixels above zero, the image's second moments (size and
    ellipticity) and the offset of its brightness centroid.
    """
    from scipy import stats

    from survey_classifier.io.fits import read_cutout
    from survey_classifier.preprocess import PreprocessConfig, preprocess

    config = PreprocessConfig(size=64)
    yy, xx = np.mgrid[:64, :64] - 31.5
    features = []
    for path in paths:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            image = preprocess(read_cutout(path).data, config).astype(np.float64)
        flat = image.ravel()
        total = max(image.sum(), 1e-12)
        cx, cy = (image * xx).sum() / total, (image * yy).sum() / total
        mxx = (image * (xx - cx) ** 2).sum() / total
        myy = (image * (yy - cy) ** 2).sum() / total
        mxy = (image * (xx - cx) * (yy - cy)).sum() / total
        spread = np.sqrt(max((mxx - myy) ** 2 + 4 * mxy**2, 0))
        major, minor = (mxx + myy + spread) / 2, max((mxx + myy - spread) / 2, 1e-12)
        features.append(
            [flat.mean(), flat.std(), stats.skew(flat), stats.kurtosis(flat), (flat > 0).mean(),
             np.sqrt(major), 1 - np.sqrt(minor / max(major, 1e-12)), np.hypot(cx, cy)]
        )
    return np.nan_to_num(np.asarray(features))


def evaluate_scores(scores: dict[str, np.ndarray], rare: np.ndarray, *, ks=(20, 50)) -> Table:
    """AUROC and precision at k of each score (higher = more anomalous) for ``rare``.

    Missing scores (NaN) are ranked last; ``coverage`` says how many were scored.
    """
    from sklearn.metrics import roc_auc_score

    if rare.all() or not rare.any():
        msg = f"the evaluation needs both rare and common sources; got {int(rare.sum())} rare of {len(rare)}"
        raise SurveyClassifierError(msg)
    rows = []
    for name, values in scores.items():
        values = np.asarray(values, dtype=float)
        filled = np.where(np.isfinite(values), values, -np.inf)
        order = np.argsort(-filled, kind="stable")
        ranked_finite = np.where(np.isfinite(filled), filled, np.nanmin(values[np.isfinite(values)]) - 1)
        row = {
            "score": name,
            "auroc": float(roc_auc_score(rare, ranked_finite)),
            "coverage": float(np.isfinite(values).mean()),
        }
        for k in ks:
            row[f"precision_at_{k}"] = float(rare[order[:k]].mean())
        row["rare_in_top_20"] = int(rare[order[:20]].sum())
        rows.append(row)
    table = Table(rows=rows)
    table.meta["n_rare"] = int(rare.sum())
    table.meta["n_total"] = len(rare)
    return table
