"""PNG figures drawn with pillow: a region x region heatmap and a 2-D scatter coloured by region."""

from __future__ import annotations

import math
import os
import textwrap
import unicodedata
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

# viridis at 6 stops; values are interpolated linearly between them
VIRIDIS = np.array([[68, 1, 84], [65, 68, 135], [42, 120, 142], [34, 168, 132], [122, 209, 81], [253, 231, 37]],
                   dtype=np.float64)
PALETTE = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
           (227, 119, 194), (127, 127, 127)]
WHITE, BLACK, GREY = (255, 255, 255), (0, 0, 0), (200, 200, 200)


def _font(size: int) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def _header(draw: ImageDraw.ImageDraw, width: int, title: str, subtitle: str) -> int:
    """Title and wrapped subtitle at the top; returns the height they take."""
    draw.text((12, 10), printable(title), fill=BLACK, font=_font(20))
    lines = textwrap.wrap(printable(subtitle), max(20, (width - 24) // 7))
    for k, line in enumerate(lines):
        draw.text((12, 40 + 17 * k), line, fill=(90, 90, 90), font=_font(13))
    return 40 + 17 * len(lines) + 10


def printable(text: str) -> str:
    """``text`` in the glyphs of pillow's default font (ASCII): ``²`` -> ``^2``, accents dropped."""
    decomposed = unicodedata.normalize("NFKD", text.replace("²", "^2"))
    return "".join(c for c in decomposed if c.isascii())


def _title_width(title: str) -> int:
    return int(ImageDraw.Draw(Image.new("RGB", (1, 1))).textlength(printable(title), font=_font(20))) + 24


def colour(fraction: float) -> tuple[int, int, int]:
    """Viridis colour of ``fraction`` in [0, 1]."""
    position = min(max(fraction, 0.0), 1.0) * (len(VIRIDIS) - 1)
    low = int(math.floor(position))
    high = min(low + 1, len(VIRIDIS) - 1)
    mixed = VIRIDIS[low] + (VIRIDIS[high] - VIRIDIS[low]) * (position - low)
    return tuple(int(round(c)) for c in mixed)


def heatmap(path: str | os.PathLike, regions: Sequence[str], values: np.ndarray, title: str, subtitle: str,
            labels: np.ndarray | None = None, cell: int = 110) -> None:
    """A symmetric ``values`` matrix (NaN: no value) with each cell's text from ``labels``."""
    n = len(regions)
    font, small = _font(16), _font(13)
    left, bar = 130, 90
    width = max(left + n * cell + bar + 40, 520, _title_width(title))
    top = 20 + _header(ImageDraw.Draw(Image.new("RGB", (1, 1))), width, title, subtitle)
    image = Image.new("RGB", (width, top + n * cell + 60), WHITE)
    draw = ImageDraw.Draw(image)
    _header(draw, width, title, subtitle)
    finite = values[np.isfinite(values)]
    low, high = (float(finite.min()), float(finite.max())) if len(finite) else (0.0, 1.0)
    span = high - low or 1.0
    for i in range(n):
        for j in range(n):
            box = (left + j * cell, top + i * cell, left + (j + 1) * cell - 2, top + (i + 1) * cell - 2)
            value = values[i, j]
            fill = colour((value - low) / span) if np.isfinite(value) else GREY
            draw.rectangle(box, fill=fill)
            text = labels[i, j] if labels is not None else ("" if not np.isfinite(value) else f"{value:.3g}")
            ink = WHITE if np.isfinite(value) and (value - low) / span <= 0.55 else BLACK
            draw.multiline_text(((box[0] + box[2]) / 2, (box[1] + box[3]) / 2), text, fill=ink, font=small,
                                anchor="mm", align="center")
    for k, region in enumerate(regions):
        draw.text((left - 10, top + k * cell + cell / 2), printable(region), fill=BLACK, font=font, anchor="rm")
        draw.text((left + k * cell + cell / 2, top + n * cell + 8), printable(region), fill=BLACK, font=font,
                  anchor="ma")
    x0 = left + n * cell + 20
    for step in range(n * cell):  # colour bar, high at the top
        draw.line([(x0, top + step), (x0 + 18, top + step)], fill=colour(1 - step / max(n * cell - 1, 1)))
    draw.text((x0 + 24, top), f"{high:.3g}", fill=BLACK, font=small, anchor="lt")
    draw.text((x0 + 24, top + n * cell), f"{low:.3g}", fill=BLACK, font=small, anchor="lb")
    image.save(path)


def scatter(path: str | os.PathLike, points: np.ndarray, groups: Sequence[str], title: str, subtitle: str,
            axes: tuple[str, str] = ("PC 1", "PC 2"), size: int = 640) -> None:
    """2-D ``points`` coloured by ``groups``, with a legend."""
    font = _font(15)
    margin, width = 60, max(size + 2 * 60 + 160, _title_width(title))
    top = 10 + _header(ImageDraw.Draw(Image.new("RGB", (1, 1))), width, title, subtitle)
    image = Image.new("RGB", (width, size + top + margin), WHITE)
    draw = ImageDraw.Draw(image)
    _header(draw, width, title, subtitle)
    box = (margin, top, margin + size, top + size)
    draw.rectangle(box, outline=BLACK)
    names = sorted(set(groups))
    if len(points):
        low, high = points.min(axis=0), points.max(axis=0)
        span = np.where(high > low, high - low, 1.0)
        scaled = (points - low) / span * (size - 20) + 10
        radius = 5 if len(points) < 500 else 3 if len(points) < 5000 else 1
        index = {name: k for k, name in enumerate(names)}
        for i in np.random.default_rng(0).permutation(len(points)):  # interleaved: no region hides another
            x, y = margin + scaled[i, 0], top + size - scaled[i, 1]
            draw.ellipse((x - radius, y - radius, x + radius, y + radius),
                         fill=PALETTE[index[groups[i]] % len(PALETTE)])
    draw.text((margin + size / 2, top + size + 10), axes[0], fill=BLACK, font=font, anchor="ma")
    draw.text((margin - 8, top + size / 2), axes[1], fill=BLACK, font=font, anchor="rm")
    for k, name in enumerate(names):
        y = top + 10 + 26 * k
        draw.ellipse((margin + size + 20, y, margin + size + 34, y + 14), fill=PALETTE[k % len(PALETTE)])
        count = sum(1 for g in groups if g == name)
        draw.text((margin + size + 42, y + 7), printable(f"{name} ({count})"), fill=BLACK, font=font, anchor="lm")
    image.save(path)
