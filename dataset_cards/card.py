"""``m3leo-shard card``: README.md (Hub dataset card) and croissant.json for one built region.

The YAML front matter declares one ``datasets`` config per modality (WebDataset tars, splits
train/validation/test from ``<modality>/{train,val,test}-*.tar``) with its features, so
``load_dataset(repo, "<modality>")`` infers nothing. The body is rendered from
``templates/card.md.j2`` with facts read from the region (``dataset_cards.summary``). Output depends
on the region's files and the declared licence only: same input, same bytes.

Every value that comes from the region's files (band names, attributes, units, field and region names)
is rendered through ``md_text`` / ``code``: on one line, and entity-escaped unless plainly safe, so
``<script>``, ``|``, backticks or a ``---`` line cannot break the Markdown tables or the YAML front
matter (which ``yaml.safe_dump`` writes). The licence is never defaulted: without ``license`` the card
says "licence: not set" and ``publish`` refuses the region.
"""

from __future__ import annotations

import re
from pathlib import Path

import jinja2
import yaml
from markupsafe import Markup

from dataset_cards.about import CITATION, PAPER, SUPPORTED_DATASETS, check_license, source_products
from dataset_cards.croissant import croissant
from dataset_cards.features import HF_SPLITS, column, dataset_info_yaml
from dataset_cards.quicklooks import write_quicklooks
from dataset_cards.summary import ModalitySummary, RegionSummary, summarize
from shard_tools.tarwriter import atomic_write_bytes

TEMPLATES = Path(__file__).parent / "templates"
BLANK_RUNS = re.compile(r"\n{3,}")
TAGS = ["earth-observation", "remote-sensing", "satellite-imagery", "geospatial", "sentinel-1", "sentinel-2",
        "sar", "insar", "multimodal", "webdataset"]
SIZE_CATEGORIES = ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
                   (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M"))
PLAIN = re.compile(r"[\w .,:;/+=()%°–-]*")  # rendered as is; anything else is entity-escaped
ESCAPED = {c: f"&#{ord(c)};" for c in "&<>|`*_[]\\#~!{}\"'$^@"}
LINE_BREAKS = re.compile(r"\s*[\r\n\v\f\x85\u2028\u2029]\s*")


def write_card(region_dir: str | Path, repo_id: str | None = None, license: str | None = None) -> list[Path]:
    """Write ``README.md``, ``croissant.json`` and the ``quicklooks/`` PNGs into ``region_dir``; return
    the paths of the card and the Croissant file. ``license``: the dataset licence (a Hub licence id such
    as ``cc-by-4.0``), stated by whoever publishes; ``None`` writes "licence: not set"."""
    root = Path(region_dir)
    summary = summarize(root)
    license = check_license(license) if license is not None else None
    repo = repo_id or f"M3LEO/{summary.region}"
    quicklooks = write_quicklooks(root, [m.modality for m in summary.modalities])
    readme, jsonld = root / "README.md", root / "croissant.json"
    atomic_write_bytes(readme, render_card(summary, repo, license, quicklooks).encode())
    atomic_write_bytes(jsonld, croissant(summary, repo, license))
    return [readme, jsonld]


def render_card(summary: RegionSummary, repo_id: str, license: str | None = None,
                quicklooks: dict[str, str] | None = None) -> str:
    front = yaml.safe_dump(front_matter(summary, license), sort_keys=False, allow_unicode=True, width=1000)
    families = list(dict.fromkeys(m.modality.family for m in summary.modalities))  # licences.yaml names families
    body = _environment().get_template("card.md.j2").render(
        s=summary, repo=repo_id, hf_splits=HF_SPLITS, citation=Markup(CITATION), paper=PAPER,
        license=license, products=source_products(families), quicklooks=quicklooks or {},
        supported_datasets=Markup(f"`datasets{SUPPORTED_DATASETS}`"), example=_example_modality(summary),
        column=column)
    body = BLANK_RUNS.sub("\n\n", body).strip()
    return f"---\n{front}---\n\n{body}\n"


def front_matter(summary: RegionSummary, license: str | None = None) -> dict:
    return {
        "pretty_name": f"M3LEO {' '.join(str(summary.region).split())} (aligned WebDataset shards)",
        **({"license": license} if license else {}),
        "task_categories": _tasks(summary),
        "tags": TAGS,
        "size_categories": [_size_category(summary.total_chips)],
        "viewer": False,
        "configs": [_config(m, name) for m in summary.modalities for name in config_names(m)],
        "dataset_info": [{**dataset_info_yaml(m), "config_name": name}
                         for m in summary.modalities for name in config_names(m)],
    }


def config_names(summary: ModalitySummary) -> list[str]:
    """A modality's configs: its own name (the shard folder) and its aliases (``s1grd`` for ``s1grd-2020``)."""
    return [summary.name, *summary.modality.aliases]


def _config(summary: ModalitySummary, name: str) -> dict:
    return {"config_name": name,
            "data_files": [{"split": HF_SPLITS[split], "path": f"{summary.name}/{split}-*.tar"}
                           for split in summary.chips]}


def _tasks(summary: RegionSummary) -> list[str]:
    kinds = {m.modality.label_kind for m in summary.modalities}
    tasks = ["image-feature-extraction"]
    if "segmentation" in kinds:
        tasks += ["image-segmentation", "image-classification"]
    if "regression" in kinds:
        tasks.append("image-to-image")
    return sorted(tasks)


def _size_category(chips: int) -> str:
    return next((label for limit, label in SIZE_CATEGORIES if chips < limit), "n>100M")


def _example_modality(summary: RegionSummary) -> ModalitySummary:
    """The modality the loading examples use: s1grd when present, else the first with data."""
    with_data = [m for m in summary.modalities if m.fields] or summary.modalities
    return next((m for m in with_data if "s1grd" in config_names(m)), with_data[0])


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), undefined=jinja2.StrictUndefined,
                             trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True, autoescape=False)
    env.filters.update(mb=_mb, num=_num, shape=_shape, code=code, ident=_ident, dates=_dates, zip=zip)
    env.finalize = lambda value: value if isinstance(value, Markup) else md_text(value)
    return env


def _one_line(value) -> str:
    return LINE_BREAKS.sub(" ", str(value))


def md_text(value) -> Markup:
    """``value`` as inline Markdown text: on one line (so it can never start a ``---``, ``#`` or table
    line), and entity-escaped unless it is plainly safe (letters, digits, spaces, ``.,:;/+=()%-``)."""
    text = _one_line(value)
    return Markup(text if PLAIN.fullmatch(text) else "".join(ESCAPED.get(c, c) for c in text))


def code(value) -> Markup:
    """``value`` as inline code: a backtick span when plainly safe, else ``<code>`` with escaped text."""
    if value in (None, "", []):
        return Markup("–")
    text = _one_line(value)
    return Markup(f"`{text}`" if PLAIN.fullmatch(text) else f"<code>{md_text(text)}</code>")


def _ident(value) -> Markup:
    """A Python identifier for a field name (used as a variable in the loading example)."""
    name = re.sub(r"\W", "_", _one_line(value)) or "field"
    return Markup(f"_{name}" if name[0].isdigit() else name)


def _mb(size: int) -> str:
    return f"{size / 1e6:,.1f} MB" if size >= 1e5 else f"{size / 1e3:,.1f} kB"


def _num(value) -> str:
    if value is None:
        return "–"
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def _shape(field) -> str:
    """``(16, 447–449, 447–449)``: each axis, as a range when it varies between chips."""
    axes = [str(lo) if lo == hi else f"{lo}–{hi}" for lo, hi in zip(field.min_shape, field.max_shape)]
    return f"({', '.join(axes)})" if axes else "()"


def _dates(dates: dict) -> Markup:
    """``year 2020; seasons winter 2019-12-01..2020-02-28, ...`` from a registry ``dates`` entry."""
    parts = []
    for key, value in dates.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k} {'..'.join(map(str, v)) if isinstance(v, list) else v}" for k, v in value.items())
        elif isinstance(value, list):
            value = ", ".join(map(str, value))
        parts.append(f"{key.replace('_', ' ')} {value}")
    return md_text("; ".join(parts) or "not dated")
