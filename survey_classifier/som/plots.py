"""PNG pictures of a SOM: prototypes, hit counts, best-matching cutouts.

Cartesian maps are drawn as a grid of images; hexagonal maps place each
node on its hexagon (the prototype clipped to the hexagon).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib as mpl
import numpy as np
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.patches import RegularPolygon

__all__ = ["plot_prototypes", "plot_hits", "plot_best_matches", "save_pictures"]


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


def plot_prototypes(som, path, *, cmap="inferno") -> Path:
    """Draw every neuron in its place on the map; returns the PNG path."""
    prototypes = som.prototypes_
    grid = som.grid_
    if grid.layout == "hexagonal":
        fig, ax = _hex_axes(grid, (8, 7))
        half = 0.5
        for (x, y), image in zip(grid.positions, prototypes, strict=True):
            shown = ax.imshow(image, cmap=cmap, origin="lower",
                              extent=(x - half, x + half, y + half, y - half))  # fmt: skip
            patch = _hexagon(x, y)
            patch.set_transform(ax.transData)
            shown.set_clip_path(patch)
            edge = _hexagon(x, y)
            edge.set_fill(False)
            edge.set_edgecolor("0.6")
            edge.set_linewidth(0.5)
            ax.add_patch(edge)
    else:
        ny, nx = grid.shape
        fig, axes = _subplots(ny, nx, figsize=(nx * 0.9, ny * 0.9), squeeze=False)
        for node, image in enumerate(prototypes):
            col, row = grid.index_xy[node]
            axes[row, col].imshow(image, cmap=cmap, origin="lower")
        for ax in axes.ravel():
            ax.set_xticks([])
            ax.set_yticks([])
        fig.subplots_adjust(wspace=0.03, hspace=0.03, left=0.01, right=0.99, bottom=0.01, top=0.99)
    return _save(fig, path)


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


def save_pictures(som, images, directory, *, mapping=None, per_node=4) -> dict[str, Path]:
    """Write ``prototypes.png``, ``hits.png`` and ``best_matches.png``; return their paths."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    mapping = som.map(images) if mapping is None else mapping
    return {
        "prototypes": plot_prototypes(som, directory / "prototypes.png"),
        "hits": plot_hits(som, mapping["node"], directory / "hits.png"),
        "best_matches": plot_best_matches(
            som, images, mapping, directory / "best_matches.png", per_node=per_node
        ),
    }


def _save(fig, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path
