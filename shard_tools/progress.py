"""Progress of long work (build, convert-release, verify, publish), reported to an optional ``Progress``.

Library functions take ``progress: Progress | None`` and stay silent without one; ``m3leo-shard`` passes
``Bars`` (tqdm on stderr: items done / total, bytes, rate and ETA) unless ``--quiet``.
"""

from __future__ import annotations

import sys
from typing import TextIO

from tqdm import tqdm


class Progress:
    """Silent progress: one stage at a time (``start``), advanced by items and bytes, with notes."""

    def start(self, label: str, total: int, total_bytes: int | None = None, unit: str = "items") -> None:
        """Begin a stage of ``total`` items called ``unit`` (and ``total_bytes`` bytes, when known)."""

    def advance(self, items: int = 1, nbytes: int = 0) -> None:
        """``items`` more done, ``nbytes`` of them in bytes."""

    def note(self, text: str) -> None:
        """A line of information between stages."""

    def close(self) -> None:
        """End the current stage."""


SILENT = Progress()


class Bars(Progress):
    """tqdm bars: the bar counts bytes when the stage has a byte total (MB, MB/s, ETA), else items; the
    item count ``done/total`` is shown beside it either way."""

    def __init__(self, file: TextIO | None = None):
        self.file = file or sys.stderr
        self.bar: tqdm | None = None
        self.items = self.total = 0
        self.unit, self._bytes = "items", False

    def start(self, label: str, total: int, total_bytes: int | None = None, unit: str = "items") -> None:
        self.close()
        self.items, self.total, self.unit = 0, total, unit
        in_bytes = bool(total_bytes)
        self.bar = tqdm(total=total_bytes if in_bytes else total, desc=label, unit="B" if in_bytes else f" {unit}",
                        unit_scale=in_bytes, unit_divisor=1000, file=self.file, dynamic_ncols=True,
                        bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} "
                                   "[{elapsed}<{remaining}, {rate_fmt}]{postfix}")
        self._bytes = in_bytes
        self.bar.set_postfix_str(f"0/{total} {unit}" if in_bytes else "", refresh=False)

    def advance(self, items: int = 1, nbytes: int = 0) -> None:
        if self.bar is None:
            return
        self.items += items
        if self._bytes:
            self.bar.set_postfix_str(f"{self.items}/{self.total} {self.unit}", refresh=False)
            self.bar.update(nbytes)
        else:
            self.bar.update(items)

    def note(self, text: str) -> None:
        tqdm.write(text, file=self.file)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
