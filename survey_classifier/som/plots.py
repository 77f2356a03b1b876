"""PNG pictures of a SOM: prototypes, hit counts, labels, U-matrix, members of a neuron.

Cartesian maps are drawn as a grid of images; hexagonal maps place each
node on its hexagon (the prototype clipped to the hexagon). With hit
counts and :class:`~survey_classifier.som.labels.NeuronLabels`, every
neuron is annotated with its number of sources and its majority class,
whose colour is drawn the stronger the purer the neuron.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib as mpl
import numpy as np
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.patches import RegularPolygon

__all__ = [
    "plot_prototypes", "plot_hits", "plot_best_matches", "plot_labels", "plot_umatrix",
    "plot_members", "save_pictures", "save_tiles", "u_matrix", "class_colour", "CLASS_COLOURS",
]  # fmt: skip

#: Colours of the MiraBest classes; other classes take the tab10 colours in turn.
CLASS_COLOURS = {"FRI": "tab:blue", "FRII": "tab:red", "hybrid": "tab:green"}


def _subplots(nrows=1, ncols=1, *, figsize, squeeze=True):
    # A bare Figure: no pyplot state, no GUI backend, safe in workers.
    fig = Figure(figsize=figsize)
    return fig, fig.subplots(nrows, ncols, squeeze=squeeze)


def _hex_axes(grid, figsize):
    fig, ax = _subplots(figsize=figsize)
    ax.set_aspect("equal")
    ax.axis("off")
    x, y = grid.positions[:, 0], grid.positions[:, 1]
    ax.set_xlim(x.min() - 0.7, x.max() + 0.7)
    ax.set_ylim(y.max() + 0.7, y.min() - 0.7)
    return fig, ax


def _hexagon(x, y):
    return RegularPolygon((x, y), numVertices=6, radius=1 / np.sqrt(3), orientation=0.0)


def plot_prototypes(som, path, *, hits=None, labels=None, cmap="inferno", cell=0.9) -> Path:
    """Draw every neuron in its place on the map; returns the PNG path.

    ``hits`` (sources per node) and ``labels`` (a
    :class:`~survey_classifier.som.labels.NeuronLabels`) annotate each
    neuron with its count and majority class and purity; ``cell`` is the
    side of one neuron in inches (1.3 reads well for 10 x 10 maps).
    """
    prototypes = som.prototypes_
    grid = som.grid_
    notes = _notes(grid.n_nodes, hits, labels)
    if grid.layout == "hexagonal":
        fig, ax = _hex_axes(grid, (cell * grid.shape[1], cell * grid.shape[0] * 0.87))
        fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=0.99)
        half = 1 / np.sqrt(3)  # the image covers the whole hexagon
        for node, ((x, y), image) in enumerate(zip(grid.positions, prototypes, strict=True)):
            shown = ax.imshow(image, cmap=cmap, origin="lower",
                              extent=(x - half, x + half, y + half, y - half))  # fmt: skip
            patch = _hexagon(x, y)
            patch.set_transform(ax.transData)
            shown.set_clip_path(patch)
            edge = _hexagon(x, y)
            edge.set_fill(False)
            colour, strength = notes[node][2:]
            edge.set_edgecolor(colour if colour else "0.6")
            edge.set_linewidth(0.5 + 2.5 * strength)
            ax.add_patch(edge)
            _annotate(ax, x, y - 0.36, y + 0.36, notes[node], fontsize=5)
    else:
        ny, nx = grid.shape
        fig, axes = _subplots(ny, nx, figsize=(nx * cell, ny * cell), squeeze=False)
        for node, image in enumerate(prototypes):
            col, row = grid.index_xy[node]
            ax = axes[row, col]
            ax.imshow(image, cmap=cmap, origin="lower")
            colour, strength = notes[node][2:]
            for spine in ax.spines.values():
                spine.set_edgecolor(colour if colour else "0.6")
                spine.set_linewidth(0.5 + 2.5 * strength)
            size = image.shape[0]
            _annotate(ax, size / 2, size * 0.93, size * 0.04, notes[node], fontsize=6, top="top")
        for ax in axes.ravel():
            ax.set_xticks([])
            ax.set_yticks([])
        fig.subplots_adjust(wspace=0.04, hspace=0.04, left=0.01, right=0.99, bottom=0.01, top=0.99)
    return _save(fig, path)


def _notes(n_nodes, hits, labels):
    """Per node: (hit text, class text, class colour or None, purity in [0, 1])."""
    notes = []
    purity = labels.purity if labels is not None else None
    for node in range(n_nodes):
        count = "" if hits is None else f"{int(hits[node])}"
        if labels is None or not labels.hits[node]:
            notes.append((count, "", None, 0.0))
            continue
        name = labels.classes[int(np.argmax(labels.counts[node]))]
        colour = class_colour(name, labels.classes)
        notes.append((count, f"{name} {100 * purity[node]:.0f}%", colour, float(purity[node])))
    return notes


def class_colour(name, classes) -> str:
    """The colour of class ``name`` (one of ``classes``), ``#rrggbb``: in the map's pictures and on the results page."""
    from matplotlib.colors import to_hex

    if name in CLASS_COLOURS:
        return to_hex(CLASS_COLOURS[name])
    return to_hex(mpl.colormaps["tab10"](list(classes).index(name) % 10))


def _annotate(ax, x, y_top, y_bottom, note, *, fontsize, top="center"):
    count, text, colour, _ = note
    box = {"boxstyle": "round,pad=0.15", "facecolor": "black", "alpha": 0.55, "linewidth": 0}
    if count:
        ax.text(x, y_top, count, ha="center", va=top, fontsize=fontsize, color="white", bbox=box)
    if text:
        ax.text(x, y_bottom, text, ha="center", va="bottom" if top == "top" else "center",
                fontsize=fontsize, color="white", bbox={**box, "facecolor": colour, "alpha": 0.8})  # fmt: skip


def plot_hits(som, nodes, path, *, cmap="viridis") -> Path:
    """Heat map of how many images each node is the best match of."""
    grid = som.grid_
    counts = np.bincount(np.asarray(nodes, dtype=int), minlength=grid.n_nodes)
    if grid.layout == "hexagonal":
        fig, ax = _hex_axes(grid, (7, 6))
        norm = Normalize(0, max(counts.max(), 1))
        colours = mpl.colormaps[cmap](norm(counts))
        for (x, y), colour, count in zip(grid.positions, colours, counts, strict=True):
            patch = _hexagon(x, y)
            patch.set_facecolor(colour)
            ax.add_patch(patch)
            ax.text(x, y, str(count), ha="center", va="center", fontsize=6)
        mappable = mpl.cm.ScalarMappable(norm=norm, cmap=cmap)
    else:
        ny, nx = grid.shape
        table = np.zeros((ny, nx), dtype=int)
        table[grid.index_xy[:, 1], grid.index_xy[:, 0]] = counts
        fig, ax = _subplots(figsize=(nx * 0.6 + 1.5, ny * 0.6))
        mappable = ax.imshow(table, cmap=cmap)
        for row in range(ny):
            for col in range(nx):
                ax.text(col, row, str(table[row, col]), ha="center", va="center", fontsize=7)
        ax.set_xlabel("node x")
        ax.set_ylabel("node y")
    fig.colorbar(mappable, ax=ax, label="best-matching images")
    ax.set_title(f"hits ({counts.sum()} images)")
    return _save(fig, path)


def plot_best_matches(som, images, mapping, path, *, per_node=4, cmap="inferno") -> Path:
    """Per node, its closest images rotated (and flipped) into the neuron's frame.

    One row per node: the prototype, then up to ``per_node`` images in
    order of distance.
    """
    grid = som.grid_
    nodes = np.asarray(mapping["node"])
    distance = np.asarray(mapping["distance"])
    fig, axes = _subplots(
        grid.n_nodes, per_node + 1, figsize=((per_node + 1) * 0.9, grid.n_nodes * 0.9),
        squeeze=False,
    )  # fmt: skip
    prototypes = som.prototypes_
    for node in range(grid.n_nodes):
        axes[node, 0].imshow(prototypes[node], cmap=cmap, origin="lower")
        col, row = grid.index_xy[node]
        axes[node, 0].set_ylabel(f"({col},{row})", fontsize=6)
        members = np.nonzero(nodes == node)[0]
        members = members[np.argsort(distance[members])][:per_node]
        for slot, index in enumerate(members, start=1):
            turned = som.rotate_into_frame(
                images[index], mapping["angle_deg"][index], mapping["flip"][index]
            )
            axes[node, slot].imshow(turned, cmap=cmap, origin="lower")
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.subplots_adjust(wspace=0.03, hspace=0.05, left=0.08, right=0.99, bottom=0.01, top=0.99)
    return _save(fig, path)


def u_matrix(som) -> np.ndarray:
    """Per node, the mean Euclidean distance of its prototype to those of its map neighbours.

    Distances are taken over the circular region of the cartesian
    prototypes, in the units of the quantization error. High values mark
    borders between groups of similar neurons.
    """
    prototypes = som.prototypes_.reshape(som.grid_.n_nodes, -1).astype(np.float64)
    squared = (prototypes**2).sum(axis=1)
    between = np.sqrt(np.clip(squared[:, None] + squared[None, :] - 2 * prototypes @ prototypes.T, 0, None))
    neighbours = np.abs(som.grid_.distances - 1.0) < 1e-6
    return (between * neighbours).sum(axis=1) / np.maximum(neighbours.sum(axis=1), 1)


def plot_umatrix(som, path, *, cmap="bone_r") -> Path:
    """The U-matrix (:func:`u_matrix`): dark where neighbouring neurons differ most."""
    values = u_matrix(som)
    grid = som.grid_
    label = "mean distance to neighbouring neurons"
    if grid.layout == "hexagonal":
        fig, ax = _hex_axes(grid, (7, 6))
        norm = Normalize(values.min(), values.max())
        for (x, y), value in zip(grid.positions, values, strict=True):
            patch = _hexagon(x, y)
            patch.set_facecolor(mpl.colormaps[cmap](norm(value)))
            ax.add_patch(patch)
        fig.colorbar(mpl.cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, label=label)
    else:
        ny, nx = grid.shape
        table = np.zeros((ny, nx))
        table[grid.index_xy[:, 1], grid.index_xy[:, 0]] = values
        fig, ax = _subplots(figsize=(nx * 0.6 + 1.8, ny * 0.6))
        fig.colorbar(ax.imshow(table, cmap=cmap), ax=ax, label=label)
        ax.set_xlabel("node x")
        ax.set_ylabel("node y")
    ax.set_title("U-matrix")
    return _save(fig, path)


def plot_labels(som, labels, path) -> Path:
    """Majority class of each neuron, coloured by class and shaded by purity, with the counts."""
    grid = som.grid_
    purity = np.nan_to_num(labels.purity)
    fig, ax = _subplots(figsize=(grid.shape[1] * 0.75 + 1.0, grid.shape[0] * 0.7 + 0.8))
    ax.set_aspect("equal")
    for node, (x, y) in enumerate(grid.positions):
        if grid.layout == "hexagonal":
            patch = _hexagon(x, y)
        else:
            patch = mpl.patches.Rectangle((x - 0.5, y - 0.5), 1, 1)
        counts = labels.counts[node]
        if counts.sum():
            name = labels.classes[int(np.argmax(counts))]
            patch.set_facecolor(class_colour(name, labels.classes))
            patch.set_alpha(0.15 + 0.85 * max(0.0, (purity[node] - 0.5) / 0.5))
            text = f"{name}\n{100 * purity[node]:.0f}% of {counts.sum()}"
        else:
            patch.set_facecolor("white")
            text = "-"
        patch.set_edgecolor("0.5")
        ax.add_patch(patch)
        ax.text(x, y, text, ha="center", va="center", fontsize=5.5)
    x, y = grid.positions[:, 0], grid.positions[:, 1]
    ax.set_xlim(x.min() - 0.7, x.max() + 0.7)
    ax.set_ylim(y.max() + 0.7, y.min() - 0.7)
    ax.axis("off")
    handles = [mpl.patches.Patch(color=class_colour(name, labels.classes), label=name) for name in labels.classes]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=7, frameon=False)
    total = labels.counts.sum()
    ax.set_title(f"majority class per neuron ({total} sources; {100 * labels.mean_purity:.1f} % in their "
                 "neuron's class)", fontsize=8)  # fmt: skip
    return _save(fig, path, tight=True)


def plot_members(som, images, mapping, node, path, *, classes=None, limit=29, columns=6, cmap="inferno") -> Path:
    """A neuron and its sources, each mirrored and rotated into the neuron's frame.

    The first panel is the prototype; then up to ``limit`` of the images
    mapped to ``node``, closest first, as :meth:`rotate_into_frame` turns
    them, titled with their class (``classes``, optional) and distance.
    """
    members = np.flatnonzero(np.asarray(mapping["node"]) == node)
    members = members[np.argsort(np.asarray(mapping["distance"])[members])][:limit]
    rows = 1 + len(members) // columns
    fig, axes = _subplots(rows, columns, figsize=(columns * 1.25, rows * 1.4), squeeze=False)
    col, row = som.grid_.index_xy[node]
    axes[0, 0].imshow(som.prototypes_[node], cmap=cmap, origin="lower")
    axes[0, 0].set_title(f"neuron ({col},{row})", fontsize=7, fontweight="bold")
    for slot, index in enumerate(members, start=1):
        turned = som.rotate_into_frame(images[index], mapping["angle_deg"][index], mapping["flip"][index])
        ax = axes.flat[slot]
        ax.imshow(turned, cmap=cmap, origin="lower")
        name = "" if classes is None else f"{classes[index]} "
        ax.set_title(f"{name}d={mapping['distance'][index]:.2f}", fontsize=6)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in axes.flat[len(members) + 1 :]:
        ax.axis("off")
    fig.subplots_adjust(wspace=0.05, hspace=0.3, left=0.01, right=0.99, bottom=0.01, top=0.93)
    fig.suptitle(f"{len(members)} closest of the sources mapped to neuron ({col},{row}), turned into its frame",
                 fontsize=7)  # fmt: skip
    return _save(fig, path)


def save_tiles(som, path, *, tile=56, cmap="inferno") -> Path:
    """The prototypes as one mosaic of ``tile``-pixel squares, one per ``(node_x, node_y)``.

    No margins or labels: the web page lays it under its grid of nodes
    (``serve --som-image``). Hexagonal maps leave the unused corners of the
    ``d x d`` box black.
    """
    from PIL import Image

    grid = som.grid_
    prototypes = som.prototypes_
    width, height = (int(n) + 1 for n in grid.index_xy.max(axis=0))
    mosaic = np.zeros((height * tile, width * tile, 4), dtype=np.uint8)
    mosaic[..., 3] = 255
    for node, (x, y) in enumerate(grid.index_xy):
        image = prototypes[node][::-1]  # rows from the top, as the page draws them
        peak = image.max()
        rgba = mpl.colormaps[cmap](image / peak if peak > 0 else image)
        picture = Image.fromarray((rgba * 255).astype(np.uint8), mode="RGBA").resize(
            (tile, tile), Image.Resampling.LANCZOS
        )
        mosaic[y * tile : (y + 1) * tile, x * tile : (x + 1) * tile] = np.asarray(picture)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(mosaic, mode="RGBA").save(path)
    return path


def save_pictures(som, images, directory, *, mapping=None, per_node=4, labels=None) -> dict[str, Path]:
    """Write the pictures of a map and the images mapped to it; return their paths.

    ``prototypes.png`` (with hit counts, and classes when ``labels`` are
    given), ``hits.png``, ``umatrix.png``, ``best_matches.png``,
    ``prototypes_tiles.png`` for the web page, and ``labels.png`` with labels.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    mapping = som.map(images) if mapping is None else mapping
    hits = np.bincount(np.asarray(mapping["node"], dtype=int), minlength=som.grid_.n_nodes)
    written = {
        "prototypes": plot_prototypes(som, directory / "prototypes.png", hits=hits, labels=labels, cell=1.3),
        "hits": plot_hits(som, mapping["node"], directory / "hits.png"),
        "umatrix": plot_umatrix(som, directory / "umatrix.png"),
        "best_matches": plot_best_matches(
            som, images, mapping, directory / "best_matches.png", per_node=per_node
        ),
        "tiles": save_tiles(som, directory / "prototypes_tiles.png"),
    }
    if labels is not None:
        written["labels"] = plot_labels(som, labels, directory / "labels.png")
    return written


def _save(fig, path, *, tight=False) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight" if tight else None)
    return path
