"""Facts about M3LEO shared by the card and the Croissant file: citation, version, date, the source
products' licences (``licences.yaml``) and the check of a declared dataset licence."""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

import yaml

LICENCES = Path(__file__).with_name("licences.yaml")
# Hub licence ids whose text has a canonical URL (the Croissant ``license``); other ids are written as is.
LICENSE_URLS = {
    "cc-by-4.0": "https://creativecommons.org/licenses/by/4.0/",
    "cc-by-sa-4.0": "https://creativecommons.org/licenses/by-sa/4.0/",
    "cc-by-nc-4.0": "https://creativecommons.org/licenses/by-nc/4.0/",
    "cc0-1.0": "https://creativecommons.org/publicdomain/zero/1.0/",
    "odbl": "https://opendatacommons.org/licenses/odbl/1-0/",
}
CARD_FRONT = re.compile(r"\A---\n(.*?)\n---\n", re.S)
LICENSE_ID = re.compile(r"[a-z0-9][a-z0-9.+-]{0,63}")
# The datasets versions the cards are tested with (CI: make test-datasets-oldest and the newest).
SUPPORTED_DATASETS = ">=5.1,<6"
PAPER = "https://arxiv.org/abs/2406.04230"
CITATION = """@inproceedings{allen2024m3leo,
  title     = {{M3LEO}: A Multi-Modal, Multi-Label Earth Observation Dataset Integrating Interferometric {SAR} and Multispectral Data},
  author    = {Allen, Matt and Dorr, Francisco and Gallego-Mejia, Joseph A. and Mart{\\'\\i}nez-Ferrer, Laura and Jungbluth, Anna and Kalaitzis, Freddie and Ramos-Poll{\\'a}n, Ra{\\'u}l},
  booktitle = {Advances in Neural Information Processing Systems 37 (NeurIPS 2024), Datasets and Benchmarks Track},
  year      = {2024},
  eprint    = {2406.04230},
  archivePrefix = {arXiv}
}"""
VERSION = "1.0.0"  # this WebDataset release of the data
DATE_PUBLISHED = "2024-09-26"  # the paper's publication at NeurIPS 2024 (OpenReview li3iFfkwRL)


def check_license(license: str) -> str:
    """A Hub licence id (lower case, e.g. ``cc-by-4.0``, ``other``), or ``ValueError``."""
    if not isinstance(license, str) or not LICENSE_ID.fullmatch(license):
        raise ValueError(f"licence {license!r}: give a Hub licence id such as cc-by-4.0, cc-by-nc-4.0 or other")
    return license


def license_url(license: str) -> str:
    return LICENSE_URLS.get(license, license)


@lru_cache(maxsize=1)
def _products() -> tuple[dict, ...]:
    return tuple(yaml.safe_load(LICENCES.read_text(encoding="utf-8"))["products"])


def source_products(modalities: list[str]) -> list[dict]:
    """The source products (licence, attribution, sources) of the given modalities, in file order."""
    return [dict(p) for p in _products() if set(p["modalities"]) & set(modalities)]


def declared_license(readme: str | Path) -> str | None:
    """The licence a written card declares in its front matter (``None``: no card, or not set)."""
    path = Path(readme)
    if not path.is_file():
        return None
    match = CARD_FRONT.match(path.read_text(encoding="utf-8", errors="replace"))
    try:
        meta = yaml.safe_load(match.group(1)) if match else None
    except yaml.YAMLError:
        return None
    value = meta.get("license") if isinstance(meta, dict) else None
    return value if isinstance(value, str) and LICENSE_ID.fullmatch(value) else None
