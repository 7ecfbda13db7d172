"""Copies of the read cases' chips in the peers' own formats (untimed, once per run).

``python -m benchmarks.peers '<json>'`` with ``{"out", "roots", "modalities", "split", "chunk_mb"}``
writes ``<out>/litdata`` (``litdata.optimize``) and ``<out>/mds`` (``streaming.MDSWriter``) from the
same raw chips the shards hold (stored dtypes, before any transform), chunks about the size of our
shards, and prints ``{"litdata": dir, "mds": dir}`` or, per peer, why it could not be written.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np

from benchmarks.reads import import_streaming, limit_plan, read_raw


def record(chip: tuple[str, dict]) -> dict:
    """One chip as a flat record: ``chip_id``, ``fields`` (JSON of every modality's fields) and
    ``<modality>__<field>`` arrays (copied out of the read buffer)."""
    chip_id, rows = chip
    out: dict = {"chip_id": chip_id}
    fields = {}
    for modality, (path, row) in rows.items():
        arrays, fields[modality] = read_raw(path, row)
        out.update({f"{modality}__{name}": np.array(array) for name, array in arrays.items()})
    out["fields"] = json.dumps(fields)
    return out


def write_litdata(plan: list, out: Path, chunk_mb: float) -> None:
    from litdata import optimize

    optimize(fn=record, inputs=plan, output_dir=str(out), chunk_bytes=f"{int(chunk_mb)}MB", num_workers=1,
             mode="overwrite")


def write_mds(plan: list, out: Path, chunk_mb: float) -> None:
    import datasets  # noqa: F401 - before any torchvision stand-in (it probes torchvision's spec)

    streaming = import_streaming()
    first = record(plan[0])
    columns = {key: "str" if isinstance(value, str) else "ndarray" for key, value in first.items()}
    with streaming.MDSWriter(out=str(out), columns=columns, size_limit=int(chunk_mb * 2**20)) as writer:
        for chip in plan:
            writer.write(record(chip))


def main(argv: list[str]) -> int:
    spec = json.loads(argv[1])
    out = Path(spec["out"])
    plan = limit_plan(spec["roots"], spec["modalities"], spec["split"])
    written: dict[str, str] = {}
    for name, write in (("litdata", write_litdata), ("mds", write_mds)):
        target = out / name
        shutil.rmtree(target, ignore_errors=True)
        try:
            write(plan, target, spec["chunk_mb"])
            written[name] = str(target)
        except Exception as exc:  # noqa: BLE001 - a missing or failing peer is reported, not fatal
            written[name] = f"error: {type(exc).__name__}: {exc}"
    print(json.dumps(written))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
