"""Select chips before reading them: a region's ``metadata/chips.parquet`` (GeoParquet, one row per chip with
availability, nodata fractions and summaries) and the ``chips=`` / ``where=`` / ``bbox=`` selection rule that
``stream``, ``load``, ``M3LEODataset`` and ``get_chip`` share.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterable, Mapping, Sequence, Union

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from m3leo_hf.reader import join, read_bytes

if TYPE_CHECKING:  # pyarrow.compute is imported where an expression is evaluated: streaming does not pay for it
    import pyarrow.compute as pc

Where = Union["pc.Expression", Callable[[pa.Table], object]]
BBox = tuple[float, float, float, float]
SPLIT_NAMES = {"train": "train", "val": "val", "validation": "val", "test": "test"}


def chips(root: str, split: str | None = None, *, retries: int = 3, storage_options: Mapping | None = None
          ) -> pa.Table:
    """The per-chip table of region ``root`` (local folder, ``https://…/resolve/<rev>`` or ``hf://datasets/…``),
    all splits or one (``train``, ``val``/``validation``, ``test``). Columns: see docs/design.md §4; the schema
    keeps the GeoParquet ``geo`` metadata (``geopandas.read_parquet`` gives a GeoDataFrame in EPSG:4326)."""
    import pyarrow.compute as pc
    try:
        data = read_bytes(join(root, "metadata/chips.parquet"), retries=retries, storage_options=storage_options)
    except OSError as exc:
        raise FileNotFoundError(f"{root}: cannot read metadata/chips.parquet: {exc}") from exc
    try:
        table = pq.read_table(pa.BufferReader(data))
    except (pa.ArrowException, OSError) as exc:
        raise ValueError(f"{root}: metadata/chips.parquet is not a readable Parquet file: {exc}") from exc
    if split is None:
        return table
    if split not in SPLIT_NAMES:
        raise ValueError(f"split must be one of {sorted(SPLIT_NAMES)}, not {split!r}")
    return table.filter(pc.equal(table["split"], SPLIT_NAMES[split]))


@dataclass(frozen=True)
class Selection:
    """Which chips to read: explicit ids, a row filter on ``chips.parquet`` and/or a lon/lat box; all given
    conditions must hold. ``where`` is a pyarrow expression (``pc.field("esaworldcover-2020_frac_10") > 0.5``) or a
    callable taking the table and returning a boolean mask or the kept rows; ``bbox = (west, south, east,
    north)`` in degrees keeps chips whose bounds intersect it."""

    chips: frozenset[str] | None = None
    where: Where | None = None
    bbox: BBox | None = None

    @classmethod
    def of(cls, chips: Iterable[str] | None = None, where: Where | None = None, bbox: Sequence[float] | None = None
           ) -> Selection | None:
        """The selection these options describe, or None when none is given (read everything)."""
        if chips is None and where is None and bbox is None:
            return None
        import pyarrow.compute as pc
        if isinstance(chips, str):
            chips = [chips]
        if bbox is not None:
            if len(bbox) != 4 or not all(np.isfinite(float(v)) for v in bbox):
                raise ValueError(f"bbox must be (west, south, east, north) in degrees, not {bbox!r}")
            west, south, east, north = (float(v) for v in bbox)
            if west > east or south > north:
                raise ValueError(f"bbox {tuple(bbox)}: west must be <= east and south <= north")
            bbox = (west, south, east, north)
        if where is not None and not isinstance(where, pc.Expression) and not callable(where):
            raise TypeError(f"where must be a pyarrow.compute expression or a callable, not {type(where).__name__}")
        return cls(None if chips is None else frozenset(chips), where, bbox)

    def mask(self, table: pa.Table, root: str = "") -> np.ndarray:
        """Boolean mask of the rows of ``table`` (a ``chips()`` table) this selection keeps."""
        import pyarrow.compute as pc
        keep = np.ones(len(table), dtype=bool)
        if self.chips is not None:
            keep &= pc.is_in(table["chip_id"], value_set=pa.array(sorted(self.chips), pa.string())).to_numpy(
                zero_copy_only=False)
        if self.bbox is not None:
            west, south, east, north = self.bbox
            inside = ((pc.field("east") >= west) & (pc.field("west") <= east)
                      & (pc.field("north") >= south) & (pc.field("south") <= north))
            keep &= _bools(pc.fill_null(_evaluate(table, inside, root), False))
        if self.where is not None:
            mask = _bools(self._where(table, root))
            if len(mask) != len(table):
                raise ValueError(f"{root}: where= gave {len(mask)} values for {len(table)} chips")
            keep &= mask
        return keep

    def _where(self, table: pa.Table, root: str):
        import pyarrow.compute as pc
        if isinstance(self.where, pc.Expression):
            return pc.fill_null(_evaluate(table, self.where, root), False)
        try:
            result = self.where(table)
        except Exception as exc:
            raise ValueError(f"{root}: the where= callable failed on metadata/chips.parquet: {exc}") from exc
        if isinstance(result, pa.Table):
            return pc.is_in(table["chip_id"], value_set=result["chip_id"])
        if isinstance(result, (pa.Array, pa.ChunkedArray)):
            return pc.fill_null(result, False)
        return result

    def chip_ids(self, table: pa.Table, root: str = "") -> set[str]:
        return set(table.filter(pa.array(self.mask(table, root)))["chip_id"].to_pylist())


def _evaluate(table: pa.Table, expression: pc.Expression, root: str):
    """``expression`` evaluated on every row of ``table`` (a boolean array), unknown columns named."""
    try:
        import pyarrow.dataset as ds

        return ds.dataset(table).to_table(columns={"keep": expression})["keep"]
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
        reason = str(exc).splitlines()[0]
        raise ValueError(f"{root}: cannot evaluate {expression} on metadata/chips.parquet: {reason} (columns: "
                         f"{', '.join(table.column_names)})") from None


def _bools(values) -> np.ndarray:
    if isinstance(values, (pa.Array, pa.ChunkedArray)):
        values = values.to_numpy(zero_copy_only=False)
    array = np.asarray(values)
    if array.dtype != bool or array.ndim != 1:
        raise TypeError(f"a where= callable must return a boolean mask or a table, got {array.dtype} values")
    return array


def selected(roots: Sequence[str], split: str, selection: Selection, *, retries: int = 3,
             storage_options: Mapping | None = None) -> set[str]:
    """Chip ids of ``split`` over ``roots`` that ``selection`` keeps; explicit ids found in no root are an error."""
    import pyarrow.compute as pc
    found: set[str] = set()
    known: set[str] = set()
    for root in roots:
        table = chips(root, retries=retries, storage_options=storage_options)
        known.update(table["chip_id"].to_pylist())
        in_split = table.filter(pc.equal(table["split"], SPLIT_NAMES.get(split, split)))
        found |= selection.chip_ids(in_split, root)
    unknown = sorted((selection.chips or frozenset()) - known)
    if unknown:
        raise KeyError(f"chip id(s) {unknown[:5]}{' …' if len(unknown) > 5 else ''} not in {list(roots)}")
    return found
