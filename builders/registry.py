"""The catalogue of modality families the builders know: the built-in declarations plus any added at run time.

Built-in families come from ``modalities.yaml``; ``load_declarations(FILE)`` (``m3leo-shard build --modalities
FILE``) and ``register(Modality | Family)`` add more, with no code. ``modality_for_folder`` turns a dataset
folder into its ``Modality``; ``get_modality`` takes a config name (``s1grd-2019``) or an alias (``s1grd``).
"""

from __future__ import annotations

from pathlib import Path

from builders.declarations import (BUILTIN, MONTHS, SEASONS, Family, Modality, check_modality, fixed_family,
                                   read_declarations, season_windows)

__all__ = ["FAMILIES", "GUNW_FAMILIES", "MONTHS", "SEASONS", "Family", "Modality", "families", "get_modality", "largest_nominal_mb",
           "load_declarations", "modality_for_folder", "register", "season_windows", "unregister"]

FAMILIES: list[Family] = read_declarations(BUILTIN)


def families() -> list[Family]:
    return list(FAMILIES)


def modality_for_folder(folder: str) -> Modality | None:
    """The modality stored in dataset folder ``folder`` (any of its spellings), or None."""
    for family in FAMILIES:
        found = family.match_folder(folder)
        if found is not None:
            return found
    return None


def get_modality(name: str) -> Modality:
    """The modality of config name ``name`` (``s1grd-2019``, ``gssic``) or of an alias (``s1grd``)."""
    for family in FAMILIES:
        found = family.match_name(name)
        if found is not None and found.name == name:
            return found
    for family in FAMILIES:
        found = family.match_name(name)
        if found is not None:
            return found
    raise KeyError(f"unknown modality {name!r}; known families: {', '.join(f.name for f in FAMILIES)}")


def register(declared: Modality | Family) -> Family:
    """Add a family (or a single ``Modality``) to the catalogue; names and folders must not clash."""
    family = declared if isinstance(declared, Family) else fixed_family(declared)
    probes = [declared] if isinstance(declared, Modality) else []
    for probe in probes:
        check_modality(probe)
        for name in (probe.name, *probe.aliases):
            try:
                get_modality(name)
            except KeyError:
                continue
            raise ValueError(f"modality {name!r} is already registered")
        clash = sorted(f for f in probe.folders if modality_for_folder(f) is not None)
        if clash:
            raise ValueError(f"modality {probe.name!r}: folder(s) {clash} already registered")
    if any(existing.key == family.key for existing in FAMILIES):
        raise ValueError(f"family {family.key!r} is already registered")
    FAMILIES.append(family)
    return family


def unregister(key: str) -> None:
    """Remove the family ``key`` (the modality name for a registered ``Modality``)."""
    FAMILIES[:] = [family for family in FAMILIES if family.key != key]


def load_declarations(path: str | Path) -> list[str]:
    """Register every family of a declarations file; returns their keys. Clashes are ``ValueError``s."""
    added = []
    for family in read_declarations(path):
        register(family)
        added.append(family.key)
    return added


def largest_nominal_mb() -> float:
    """The largest nominal decoded chip size of any declared family (its variants included)."""
    sizes = [float(f.template.get("nominal_mb", 1.0)) for f in FAMILIES]
    sizes += [float(v["set"]["nominal_mb"]) for f in FAMILIES for v in f.variants if "nominal_mb" in v.get("set", {})]
    return max(sizes)


GUNW_FAMILIES = tuple(f.key for f in FAMILIES if f.template.get("variable_axis") == "datepair")  # interferograms
ESAWC_CODES = get_modality("esaworldcover").class_codes
ESAWC_NAMES = get_modality("esaworldcover").class_names
