"""Modality declarations: families of dataset folders (``s1grd-{year}``, ``gunw_{start}_{end}``, ...) as data.

A ``Family`` matches dataset folder names and makes one ``Modality`` per matched folder (``s1grd-2019``),
with its dates computed from the folder's parameters. The built-in families live in ``modalities.yaml``;
``load_declarations`` adds more from a file. This module is light (no raster/HDF5 libraries), so the read
side can rebuild a ``Modality`` from the ``metadata/<modality>.modality.json`` that travels with the shards.
"""

from __future__ import annotations

import calendar
import dataclasses
import itertools
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import yaml

BUILTIN = Path(__file__).with_name("modalities.yaml")
SEASONS = ("winter", "spring", "summer", "fall")
MONTHS = tuple(f"{m:02d}" for m in range(1, 13))
PARAMETERS = {"year": r"\d{4}", "orbit": r"asc|des", "start": r"\d{4}-\d{2}-\d{2}", "end": r"\d{4}-\d{2}-\d{2}",
              "month": r"\d{4}-\d{2}"}
NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
DATE_RULES = ("seasons", "months", "year", "window", "month")


@dataclass(frozen=True)
class Modality:
    """How one M3LEO dataset folder is laid out and what its values mean.

    ``name`` is the config and shard-folder name; ``field`` the array name of single-array (GeoTIFF) chips;
    ``dtype`` the file's dtype and ``store_as`` the lossless reinterpretation the shards store.
    """

    name: str
    folder: str
    container: str
    description: str
    family: str = ""
    field: str = ""
    folders_seen: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()
    dtype: str | None = None
    store_as: str | None = None
    band_names: tuple[str, ...] = ()
    nodata: float | int | None = None
    units: str | None = None
    dates: dict = dataclasses.field(default_factory=dict)
    label_kind: str | None = None
    class_codes: tuple[int, ...] = ()
    class_names: tuple[str, ...] = ()
    variable_axis: str | None = None
    nominal_mb: float = 1.0
    params: dict = dataclasses.field(default_factory=dict)
    notes: str = ""

    def __post_init__(self) -> None:
        if not self.field:
            object.__setattr__(self, "field", self.family or self.name)
        if not self.family:
            object.__setattr__(self, "family", self.name)

    @property
    def folders(self) -> tuple[str, ...]:
        """Every spelling of this modality's dataset folder."""
        return tuple(dict.fromkeys((self.folder, *self.folders_seen)))

    @property
    def stored_dtype(self) -> str | None:
        return self.store_as or self.dtype

    @property
    def extension(self) -> str:
        """File extension of the container's chips (``.tif``, ``.nc``), from its declared reader."""
        from builders.read import reader_for

        return reader_for(self.container).extension

    def to_json(self) -> dict:
        """JSON-able declaration (NaN nodata as the string ``"nan"``)."""
        value = dataclasses.asdict(self)
        for key in ("folders_seen", "aliases", "band_names", "class_codes", "class_names"):
            value[key] = list(value[key])
        if isinstance(self.nodata, float) and math.isnan(self.nodata):
            value["nodata"] = "nan"
        return value

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> "Modality":
        """The declaration a ``to_json`` wrote; unknown keys and wrong types are ``ValueError``s."""
        if not isinstance(value, Mapping):
            raise ValueError("a modality declaration must be a mapping")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(value) - known)
        if unknown:
            raise ValueError(f"unknown declaration key(s) {unknown}")
        kwargs = dict(value)
        for key in ("folders_seen", "aliases", "band_names", "class_codes", "class_names"):
            if key in kwargs:
                kwargs[key] = tuple(kwargs[key])
        if kwargs.get("nodata") == "nan":
            kwargs["nodata"] = math.nan
        try:
            modality = cls(**kwargs)
        except TypeError as exc:
            raise ValueError(f"declaration is missing a key: {exc}") from None
        check_modality(modality)
        return modality


def check_modality(modality: Modality) -> None:
    """Names must be valid keys: lower case letters, digits, '-' and '_' (no dots)."""
    for what, value in (("name", modality.name), ("field", modality.field), *(("alias", a) for a in modality.aliases)):
        if not isinstance(value, str) or not NAME.match(value):
            raise ValueError(f"modality {what} {value!r} must be lower-case letters, digits, '-' or '_' (no dots)")
    if not isinstance(modality.container, str) or not modality.container:
        raise ValueError(f"modality {modality.name!r}: container must be a name")


def config_name(folder: str) -> str:
    """The config name a dataset folder gets by default: lower case, '_' and '.' become '-'."""
    return re.sub(r"-+", "-", re.sub(r"[^a-z0-9-]", "-", folder.lower())).strip("-")


@dataclass(frozen=True)
class Family:
    """A declaration matching dataset folders by pattern; each match is one ``Modality``."""

    key: str
    name: str
    folders: tuple[str, ...]
    template: dict
    dates: Any = None
    aliases: dict = dataclasses.field(default_factory=dict)
    variants: tuple = ()

    def _regex(self, pattern: str) -> re.Pattern:
        parts = re.split(r"\{(\w+)\}", pattern)
        regex = ""
        for index, part in enumerate(parts):
            if index % 2 == 0:
                regex += re.escape(part)
            elif part not in PARAMETERS:
                raise ValueError(f"family {self.key!r}: unknown parameter {{{part}}} in {pattern!r}")
            elif f"(?P<{part}>" in regex:
                regex += f"(?P={part})"
            else:
                regex += f"(?P<{part}>{PARAMETERS[part]})"
        return re.compile(f"^{regex}$")

    def match_folder(self, folder: str) -> Modality | None:
        for pattern in self.folders:
            found = self._regex(pattern).match(folder)
            if found:
                return self.instance(found.groupdict(), folder)
        return None

    def match_name(self, name: str) -> Modality | None:
        found = self._regex(self.name).match(name)
        if found:
            return self.instance(found.groupdict())
        for alias, params in self.aliases.items():
            if alias == name:
                return self.instance({k: str(v) for k, v in params.items()})
        return None

    def instance(self, params: Mapping[str, str], folder: str | None = None) -> Modality:
        params = dict(params)
        canonical = self.folders[0].format(**params)
        values = dict(self.template)
        for variant in self.variants:
            if all(str(params.get(k)) == str(v) for k, v in variant.get("when", {}).items()):
                values.update(variant.get("set", {}))
        aliases = tuple(alias for alias, when in self.aliases.items()
                        if all(str(params.get(k)) == str(v) for k, v in when.items()))
        modality = Modality(
            name=self.name.format(**params), folder=folder or canonical, family=self.key, aliases=aliases,
            folders_seen=tuple(dict.fromkeys([canonical, *(p.format(**params) for p in self.folders[1:])])),
            dates=_dates(self.dates, params), params=params, **values)
        check_modality(modality)
        return modality


def _dates(rule: Any, params: Mapping[str, str]) -> dict:
    """Dates of one instance: a named rule applied to its parameters, or a mapping with ``{param}`` strings."""
    if rule is None:
        return {}
    if isinstance(rule, Mapping):
        return {k: _fill(v, params) for k, v in rule.items()}
    if rule not in DATE_RULES:
        raise ValueError(f"unknown dates rule {rule!r}; known: {', '.join(DATE_RULES)} or a mapping")
    if rule == "window":
        return {"window": [params["start"], params["end"]]}
    if rule == "month":
        year, month = map(int, params["month"].split("-"))
        last = calendar.monthrange(year, month)[1]
        return {"window": [f"{params['month']}-01", f"{params['month']}-{last:02d}"]}
    year = int(params["year"])
    dates: dict = {"year": year}
    if rule == "seasons":
        dates["seasons"] = season_windows(year)
    elif rule == "months":
        dates["months"] = list(MONTHS)
    if "orbit" in params:
        dates["orbit"] = params["orbit"]
    return dates


def _fill(value: Any, params: Mapping[str, str]) -> Any:
    if isinstance(value, str):
        return value.format(**params)
    if isinstance(value, list):
        return [_fill(v, params) for v in value]
    return value


def season_windows(year: int) -> dict:
    """geetiles' S1 seasons of ``year``: winter starts in December of the year before."""
    february = 29 if calendar.isleap(year) else 28
    return {
        "winter": [f"{year - 1}-12-01", f"{year}-02-{february}"],
        "spring": [f"{year}-03-01", f"{year}-05-31"],
        "summer": [f"{year}-06-01", f"{year}-08-31"],
        "fall": [f"{year}-09-01", f"{year}-11-30"],
    }


TEMPLATE_KEYS = {"container", "description", "field", "dtype", "store_as", "nodata", "units", "label_kind",
                 "class_codes", "class_names", "variable_axis", "nominal_mb", "notes"}
FAMILY_KEYS = TEMPLATE_KEYS | {"name", "folders", "aliases", "bands", "band_grid", "dates", "variants"}


def family_from_mapping(key: str, spec: Mapping[str, Any], source: str = "") -> Family:
    """A ``Family`` from one entry of a declarations file; errors name the file and the entry."""
    where = f"{source}: family {key!r}" if source else f"family {key!r}"
    if not isinstance(spec, Mapping):
        raise ValueError(f"{where}: must be a mapping")
    unknown = sorted(set(spec) - FAMILY_KEYS)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; known: {sorted(FAMILY_KEYS)}")
    for required in ("container", "description"):
        if required not in spec:
            raise ValueError(f"{where}: needs {required!r}")
    template = {k: spec[k] for k in TEMPLATE_KEYS if k in spec}
    for key_ in ("class_codes", "class_names"):
        if key_ in template:
            template[key_] = tuple(template[key_])
    if "bands" in spec and "band_grid" in spec:
        raise ValueError(f"{where}: give bands or band_grid, not both")
    if "bands" in spec:
        template["band_names"] = tuple(str(b) for b in spec["bands"])
    elif "band_grid" in spec:
        template["band_names"] = tuple("_".join(map(str, combo)) for combo in itertools.product(*spec["band_grid"]))
    folders = spec.get("folders") or [spec.get("name", key)]
    family = Family(key=key, name=spec.get("name", config_name(folders[0])), folders=tuple(folders),
                    template=template, dates=spec.get("dates"), aliases=dict(spec.get("aliases") or {}),
                    variants=tuple(spec.get("variants") or ()))
    for pattern in (family.name, *family.folders):
        family._regex(pattern)  # unknown parameters are errors now, not at the first match
    return family


def read_declarations(path: str | Path) -> list[Family]:
    """Families declared in a YAML file (``version: 1`` and ``families: {key: {...}}``)."""
    try:
        document = yaml.load(Path(path).read_text(encoding="utf-8"), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ValueError(f"{path}: cannot read declarations: {exc}") from None
    if not isinstance(document, Mapping) or not isinstance(document.get("families"), Mapping):
        raise ValueError(f"{path}: a declarations file needs a 'families' mapping")
    if document.get("version", 1) != 1:
        raise ValueError(f"{path}: declarations version {document.get('version')!r}; this package reads version 1")
    return [family_from_mapping(str(k), v, str(path)) for k, v in document["families"].items()]


def fixed_family(modality: Modality) -> Family:
    """A one-folder family holding an already built ``Modality`` (for ``register(Modality(...))``)."""
    values = dataclasses.asdict(modality)
    template = {k: values[k] for k in TEMPLATE_KEYS | {"band_names"} if k in values}
    for key in ("band_names", "class_codes", "class_names"):
        template[key] = tuple(template[key])
    return Family(key=modality.family, name=modality.name, folders=modality.folders, template=template,
                  dates=dict(modality.dates), aliases={a: {} for a in modality.aliases})
