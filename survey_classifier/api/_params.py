"""Parameter types shared by the service's routers (one definition, one OpenAPI schema)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import Path as PathParam
from fastapi import Query

__all__ = ["MAX_ID", "NAME_PATTERN", "CutoutId", "RowId", "ImageSize", "ColourMap"]

#: Largest id (the id columns are 32-bit integers).
MAX_ID = 2**31 - 1
#: A stage, model or variant name.
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:+-]{0,127}$"

CutoutId = Annotated[int, PathParam(ge=1, le=MAX_ID, examples=[1], description="A cutout id (`cutout_id`).")]
RowId = Annotated[int, PathParam(ge=1, le=MAX_ID)]
ImageSize = Annotated[int, Query(ge=16, le=1024, description="Pixels across.")]
ColourMap = Annotated[Literal["inferno", "viridis", "gray", "magma", "cividis"], Query()]
