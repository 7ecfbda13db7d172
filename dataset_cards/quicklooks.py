"""Quicklook PNGs of a built region, embedded in its dataset card.

* ``quicklooks/<modality>.png``: a grid of the first ``CHIPS`` chips with data (train split first, then
  val, test), rendered by ``m3leo_hf.plot.render``; the same chips in every modality where they have data;
* ``quicklooks/footprints.png``: every chip's footprint (``metadata/chips.parquet`` bbox columns
  ``west, south, east, north``) coloured by split, on lon/lat axes.

Members are read by byte range through the ``metadata/<modality>.parquet`` offsets (no tar scan).
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from PIL import Image, ImageDraw

from builders.declarations import Modality
from m3leo_hf.plot import grid, render, resize
from shard_tools.inventory import SPLITS
from shard_tools.tarwriter import atomic_write_bytes

FOLDER = "quicklooks"
CHIPS = 4
SPLIT_COLOURS = {"train": "#1f77b4", "val": "#ff7f0e", "test": "#2ca02c"}
MAP_WIDTH, MARGIN = 640, 40


def write_quicklooks(region_dir: str | Path, modalities: list[Modality]) -> dict[str, str]:
    """Render the PNGs into ``<region>/quicklooks/``; return ``{name: path relative to the region}``
    (``footprints`` and each modality with at least one available chip); other PNGs there are removed."""
    root = Path(region_dir)
    written = {"footprints": _save(root, "footprints", footprint_map(root))}
    names = [m.name for m in modalities]
    chosen = _chosen_chips(root, names)
    for modality in modalities:
        tiles = [(resize(render(modality, fields, bands)), chip_id) for chip_id, fields, bands in
                 _read_chips(root, modality.name, chosen)]
        if tiles:
            written[modality.name] = _save(root, modality.name, grid(tiles, columns=len(tiles)))
    for stale in set((root / FOLDER).glob("*.png")) - {root / path for path in written.values()}:
        stale.unlink()  # a modality the region no longer has
    return written


def footprint_map(region_dir: Path) -> Image.Image:
    """Chip footprints coloured by split, with a lon/lat frame and a legend."""
    chips = pq.read_table(region_dir / "metadata" / "chips.parquet",
                          columns=["split", "west", "south", "east", "north"]).to_pylist()
    boxes = [c for c in chips if None not in (c["west"], c["south"], c["east"], c["north"])]
    if not boxes:
        raise ValueError(f"{region_dir}/metadata/chips.parquet: no chip has a bounding box")
    west, east = min(c["west"] for c in boxes), max(c["east"] for c in boxes)
    south, north = min(c["south"] for c in boxes), max(c["north"] for c in boxes)
    span = max(east - west, north - south, 1e-6)
    scale = (MAP_WIDTH - 2 * MARGIN) / span
    height = int((north - south) * scale) + 2 * MARGIN + 20
    image = Image.new("RGB", (MAP_WIDTH, height), "white")
    draw = ImageDraw.Draw(image)
    frame = (MARGIN, MARGIN, MARGIN + (east - west) * scale, MARGIN + (north - south) * scale)
    draw.rectangle(frame, outline="#888888")
    for chip in sorted(boxes, key=lambda c: SPLITS.index(c["split"]) if c["split"] in SPLITS else 9):
        x0, y0 = MARGIN + (chip["west"] - west) * scale, MARGIN + (north - chip["north"]) * scale
        x1 = max(x0 + 3, MARGIN + (chip["east"] - west) * scale)
        y1 = max(y0 + 3, MARGIN + (north - chip["south"]) * scale)
        outline = "white" if min(x1 - x0, y1 - y0) > 6 else None  # chip borders, where chips are big enough
        draw.rectangle((x0, y0, x1, y1), fill=SPLIT_COLOURS.get(chip["split"], "#000000"), outline=outline)
    draw.text((MARGIN, MARGIN - 14), f"lat {north:.3f}, lon {west:.3f}", fill="black")
    draw.text((frame[2] - 150, frame[3] + 3), f"lat {south:.3f}, lon {east:.3f}", fill="black")
    x = MARGIN
    for split, colour in SPLIT_COLOURS.items():
        count = sum(c["split"] == split for c in boxes)
        draw.rectangle((x, height - 16, x + 10, height - 6), fill=colour)
        draw.text((x + 14, height - 18), f"{split} ({count})", fill="black")
        x += 110
    return image


def _save(root: Path, name: str, image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    path = f"{FOLDER}/{name}.png"
    (root / FOLDER).mkdir(exist_ok=True)
    atomic_write_bytes(root / path, buffer.getvalue())
    return path


def _chosen_chips(root: Path, modalities: list[str]) -> list[str]:
    """The first ``CHIPS`` chips (split order, then id) with data in the most modalities."""
    chips = pq.read_table(root / "metadata" / "chips.parquet").to_pylist()
    flags = [f"has_{m}" for m in modalities]
    order = sorted(chips, key=lambda c: (-sum(bool(c.get(f)) for f in flags),
                                         SPLITS.index(c["split"]) if c["split"] in SPLITS else 9, c["chip_id"]))
    return [c["chip_id"] for c in order]


def _read_chips(root: Path, modality: str, chosen: list[str]):
    """``(chip_id, {field: array}, band names)`` of up to ``CHIPS`` available chips, in ``chosen`` order."""
    rows = {r["chip_id"]: r for r in pq.read_table(
        root / "metadata" / f"{modality}.parquet", columns=["chip_id", "shard", "members", "available"]).to_pylist()}
    found = 0
    for chip_id in chosen:
        row = rows.get(chip_id)
        if row is None or not row["available"]:
            continue
        with open(root / row["shard"], "rb") as handle:
            members = {}
            for member in row["members"]:
                handle.seek(member["offset"])
                members[member["name"]] = handle.read(member["size"])
        meta = json.loads(members.pop("json"))
        fields = {name[: -len(".npy")]: np.load(io.BytesIO(data), allow_pickle=False) for name, data in members.items()}
        described = meta.get("fields", {}).get(modality, {})
        yield chip_id, fields, described.get("band_names") or None
        found += 1
        if found == CHIPS:
            return
