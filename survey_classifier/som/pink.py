"""Read and write PINK's binary files (file format version 2).

PINK (Polsterer et al. 2016) exchanges four kinds of file, each optionally
starting with text lines beginning with ``#`` (the last being
``# END OF HEADER``), then little-endian 32-bit integers and the data::

    data:     2 0 <data type> <n entries> <layout> <n dims> <dims...> <data>
    SOM:      2 1 <data type> <som layout> <neuron layout> <data>
    mapping:  2 2 <data type> <n entries> <som layout> <data>
    rotation: 2 3 <n entries> <som layout> <data>

A layout is ``<code> <n dims> <dims...>`` with code 0 cartesian and
1 hexagonal; data type 0 is float32 (the only one PINK writes). A rotation
file holds, per entry and neuron, a flip flag (1 byte) and the angle in
radians (float32). The angle follows this package's convention (see
:mod:`survey_classifier.som._polar`); check the sign convention when
combining with maps trained by PINK itself.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from survey_classifier.errors import ModelError
from survey_classifier.som._grid import MapGrid

__all__ = [
    "PINK_VERSION",
    "write_data",
    "read_data",
    "write_som",
    "read_som",
    "write_mapping",
    "read_mapping",
    "write_rotations",
    "read_rotations",
    "som_from_pink",
]

PINK_VERSION = 2
_TYPES = {0: "data", 1: "SOM", 2: "mapping", 3: "best rotation/flip"}
_LAYOUT_CODES = {"cartesian": 0, "hexagonal": 1}
_END = b"# END OF HEADER\n"


def _header_text(comment):
    lines = [f"# {line}" for line in (comment or "written by survey-classifier").splitlines()]
    return ("\n".join(lines) + "\n").encode() + _END


def _layout_ints(grid: MapGrid):
    ny, nx = grid.shape
    return [_LAYOUT_CODES[grid.layout], 2, nx, ny]


class _Reader:
    def __init__(self, path, expected_type):
        self.path = Path(path)
        try:
            self.raw = self.path.read_bytes()
        except OSError as exc:
            msg = f"{self.path}: cannot read PINK file: {exc}"
            raise ModelError(msg) from exc
        self.offset = 0
        while self.raw[self.offset : self.offset + 1] == b"#":
            end = self.raw.find(b"\n", self.offset)
            if end < 0:
                self._fail("header comment line never ends")
            self.offset = end + 1
        version = self.int()
        if version != PINK_VERSION:
            self._fail(
                f"PINK file format version {version} is not supported (only version "
                f"{PINK_VERSION}); convert it with PINK 2, or it is not a PINK file"
            )
        file_type = self.int()
        if file_type != expected_type:
            found = _TYPES.get(file_type, f"unknown type {file_type}")
            self._fail(f"expected a PINK {_TYPES[expected_type]} file, found a {found} file")

    def _fail(self, reason):
        msg = f"{self.path}: {reason}"
        raise ModelError(msg)

    def int(self) -> int:
        if self.offset + 4 > len(self.raw):
            self._fail("file ends inside its header")
        (value,) = struct.unpack_from("<i", self.raw, self.offset)
        self.offset += 4
        return value

    def float_type(self):
        data_type = self.int()
        if data_type != 0:
            self._fail(f"data type {data_type} is not supported (only 0 = float32)")

    def layout(self):
        code = self.int()
        n_dims = self.int()
        if code not in (0, 1) or not 1 <= n_dims <= 3:
            self._fail(f"invalid layout (code {code}, {n_dims} dimensions)")
        dims = [self.int() for _ in range(n_dims)]
        return ("cartesian", "hexagonal")[code], dims

    def floats(self, count):
        nbytes = 4 * count
        if len(self.raw) - self.offset != nbytes:
            self._fail(
                f"holds {len(self.raw) - self.offset} bytes of data where its header "
                f"announces {nbytes}"
            )
        return np.frombuffer(self.raw, dtype="<f4", count=count, offset=self.offset)


def _grid_of(layout, dims, reader) -> MapGrid:
    if len(dims) == 1:
        dims = [dims[0], 1]
    if len(dims) != 2:
        reader._fail(f"only 2-D maps are supported, this one has dimensions {dims}")
    nx, ny = dims
    try:
        return MapGrid((ny, nx), layout)
    except ValueError as exc:
        reader._fail(str(exc))


def write_data(path, images, *, comment=None) -> Path:
    """Write (n, ny, nx) images as a PINK data file."""
    images = np.asarray(images, dtype="<f4")
    n, ny, nx = images.shape
    path = Path(path)
    with open(path, "wb") as handle:
        handle.write(_header_text(comment))
        handle.write(struct.pack("<8i", PINK_VERSION, 0, 0, n, 0, 2, ny, nx))
        handle.write(images.tobytes())
    return path


def read_data(path) -> np.ndarray:
    """Read a PINK data file as an (n, ny, nx) float32 array."""
    reader = _Reader(path, 0)
    reader.float_type()
    n = reader.int()
    layout, dims = reader.layout()
    if layout != "cartesian" or len(dims) != 2:
        reader._fail(f"only 2-D cartesian images are supported, found {layout} {dims}")
    ny, nx = dims
    return reader.floats(n * ny * nx).reshape(n, ny, nx).copy()


def write_som(path, som, *, comment=None) -> Path:
    """Write a fitted :class:`RotationInvariantSOM` as a PINK SOM file.

    Neurons are written in their cartesian form (zero outside the region).
    """
    neurons = np.asarray(som.prototypes_, dtype="<f4")
    size = neurons.shape[-1]
    path = Path(path)
    with open(path, "wb") as handle:
        handle.write(_header_text(comment))
        ints = [PINK_VERSION, 1, 0, *_layout_ints(som.grid_), 0, 2, size, size]
        handle.write(struct.pack(f"<{len(ints)}i", *ints))
        handle.write(neurons.tobytes())
    return path


def read_som(path):
    """Read a PINK SOM file.

    Returns
    -------
    neurons : ndarray, (n_nodes, ny, nx) float32
    grid : MapGrid
    """
    reader = _Reader(path, 1)
    reader.float_type()
    som_layout, som_dims = reader.layout()
    grid = _grid_of(som_layout, som_dims, reader)
    neuron_layout, neuron_dims = reader.layout()
    if neuron_layout != "cartesian" or len(neuron_dims) != 2:
        reader._fail(f"neurons must be 2-D cartesian images, found {neuron_layout} {neuron_dims}")
    ny, nx = neuron_dims
    neurons = reader.floats(grid.n_nodes * ny * nx).reshape(grid.n_nodes, ny, nx).copy()
    return neurons, grid


def write_mapping(path, node_distances, grid: MapGrid, *, comment=None) -> Path:
    """Write (n, n_nodes) distances as a PINK mapping file."""
    values = np.asarray(node_distances, dtype="<f4")
    path = Path(path)
    with open(path, "wb") as handle:
        handle.write(_header_text(comment))
        ints = [PINK_VERSION, 2, 0, values.shape[0], *_layout_ints(grid)]
        handle.write(struct.pack(f"<{len(ints)}i", *ints))
        handle.write(values.tobytes())
    return path


def read_mapping(path):
    """Read a PINK mapping file: ((n, n_nodes) float32 distances, MapGrid)."""
    reader = _Reader(path, 2)
    reader.float_type()
    n = reader.int()
    layout, dims = reader.layout()
    grid = _grid_of(layout, dims, reader)
    return reader.floats(n * grid.n_nodes).reshape(n, grid.n_nodes).copy(), grid


_ROTATION = np.dtype([("flip", "u1"), ("angle", "<f4")])


def write_rotations(path, flips, angles_rad, grid: MapGrid, *, comment=None) -> Path:
    """Write per entry and node the best flip and angle (radians)."""
    flips = np.asarray(flips, dtype=bool)
    records = np.empty(flips.shape, dtype=_ROTATION)
    records["flip"] = flips
    records["angle"] = np.asarray(angles_rad, dtype=np.float32)
    path = Path(path)
    with open(path, "wb") as handle:
        handle.write(_header_text(comment))
        ints = [PINK_VERSION, 3, flips.shape[0], *_layout_ints(grid)]
        handle.write(struct.pack(f"<{len(ints)}i", *ints))
        handle.write(records.tobytes())
    return path


def read_rotations(path):
    """Read a PINK best rotation/flip file: (flips, angles_rad, MapGrid)."""
    reader = _Reader(path, 3)
    n = reader.int()
    layout, dims = reader.layout()
    grid = _grid_of(layout, dims, reader)
    nbytes = n * grid.n_nodes * _ROTATION.itemsize
    if len(reader.raw) - reader.offset != nbytes:
        reader._fail(
            f"holds {len(reader.raw) - reader.offset} bytes of data where its header "
            f"announces {nbytes}"
        )
    records = np.frombuffer(reader.raw, dtype=_ROTATION, offset=reader.offset)
    records = records.reshape(n, grid.n_nodes)
    return records["flip"].astype(bool), records["angle"].astype(np.float32), grid


def som_from_pink(path, *, image_size, region_diameter=None, n_rotations=360, flip=True,
                  preprocess_config=None, n_freq="auto"):
    """Build a :class:`RotationInvariantSOM` from a PINK SOM file, ready to map.

    The mapping settings are not stored by PINK; give those the map was
    trained with (a PINK map used with another region gives wrong results).
    """
    from survey_classifier.som.som import RotationInvariantSOM

    neurons, grid = read_som(path)
    if neurons.shape[1] != neurons.shape[2]:
        msg = f"{path}: neurons are {neurons.shape[1]}x{neurons.shape[2]}, only square ones are supported"
        raise ModelError(msg)
    som = RotationInvariantSOM(
        grid_shape=grid.shape,
        layout=grid.layout,
        neuron_size=neurons.shape[1],
        region_diameter=region_diameter,
        n_rotations=n_rotations,
        flip=flip,
        n_freq=n_freq,
        preprocess_config=preprocess_config,
    )
    try:
        som._build()
    except ValueError as exc:
        msg = f"{path}: {exc}"
        raise ModelError(msg) from exc
    som.set_neurons(som.polar_.to_fourier(neurons, "cubic"), cartesian=neurons)
    som.image_size_ = int(image_size)
    som.step_ = som.total_steps_ = 0
    som.history_ = []
    som.source_ = str(path)
    return som
