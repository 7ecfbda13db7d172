"""The upstream M3LEO framework's input recipes (``spaceml-org/M3LEO`` ``src/fdlsar``), declared as stage lists.

Each function takes the upstream component's options and returns the stages (data: ``{"stage": ...}``
dicts, see ``m3leo_hf.stages``) that yield the array upstream's dataset yields for one chip. A
``{"stage": "normalize", "stats": "upstream", ...}`` entry is resolved by the stream with the
``metadata/<modality>.stats-upstream.json`` statistics of each chip's own region (upstream normalises
per AOI, counting zeros and nodata as data). Where upstream and our default recipe differ, see the
README section "Coming from the M3LEO framework".
"""

from __future__ import annotations

from typing import Sequence

from builders.declarations import Modality
from builders.registry import GUNW_FAMILIES
from m3leo_hf.modalities import declaration

SEASONS = ("winter", "spring", "summer", "fall")
MONTHS = tuple(f"{m:02d}" for m in range(1, 13))
RGB = ("red", "green", "blue")
EPS = 1e-5  # upstream MeanStdNormalizer: (x - mean) / (std + 1e-5)
GSSIC_DIMS = {"amplitude": ("season", "polarimetry"), "coherence": ("season", "deltadays"),
              "decaymodel": ("season", "param"), "geometry": ("feature",)}
LABEL_SIZE = (45, 55)  # the configs' BiomassTransform / GhsBuiltSTransform size
SAR_SIZE = 448  # GSSICTransform / GUNWTransform
Spec = dict


def _normalize(**options) -> Spec:
    return {"stage": "normalize", "stats": "upstream", "by_region": True, "eps": EPS, **options}


def _seq(value) -> list:
    return [value] if isinstance(value, (str, int)) else list(value)


def s1grd(pols: Sequence[str] = ("vv", "vh"), directions: Sequence[str] = ("asc",),
          seasons: Sequence[str] = SEASONS, summarize_seasons: bool = False,
          percentiles: Sequence[float] | None = None, normalize: bool = True,
          skip_constant_channels: bool = False) -> list[Spec]:
    """``load_s1grd`` (M3LEO:io/io.py:118-186): bands pol -> direction -> season as requested, int16 as
    float32, zeros kept as data; ``vv-vh`` (after ``vv`` and ``vh``) prepends stored vv - vh per season and
    direction, season-major; ``summarize_seasons``: season means, bands in alphabetical order;
    ``percentiles``: per-chip stretch; then the per-channel z-score (M3LEO:utils.py:350-483);
    ``skip_constant_channels``: flag (``constant_channels``) what upstream would redraw."""
    pols, directions, seasons = _seq(pols), _seq(directions), _seq(seasons)
    plain = [p for p in pols if p != "vv-vh"]
    if "vv-vh" in pols and not {"vv", "vh"} <= set(pols[:pols.index("vv-vh")]):
        raise ValueError(f"s1grd pols {pols}: upstream needs 'vv-vh' after both 'vv' and 'vh'")
    stages: list[Spec] = [{"stage": "view_as"},
                          {"stage": "select_bands", "bands": [f"{s}_{p}{d}" for p in plain for d in directions
                                                              for s in seasons]},
                          {"stage": "to_float", "mask_nodata": False}]
    if "vv-vh" in pols:
        stages.append({"stage": "difference", "first": True,
                       "pairs": [(f"{s}_vvvh{d}", f"{s}_vv{d}", f"{s}_vh{d}") for s in seasons for d in directions]})
    if summarize_seasons:
        stages.append({"stage": "summarize_seasons", "skipna": False})
    if percentiles is not None:
        stages.append({"stage": "percentile_stretch", "low": percentiles[0], "high": percentiles[1]})
    if normalize:
        stages.append(_normalize())
    return stages + _flag(skip_constant_channels, ["s1grd"]) + [_stack(["s1grd"], "s1grd", skip_constant_channels)]


def _flag(on: bool, fields: list[str]) -> list[Spec]:
    return [{"stage": "flag_constant", "fields": fields}] if on else []


def _stack(fields: list[str], name: str, flagged: bool) -> Spec:
    return {"stage": "stack", "fields": fields, "name": name, "keep": ["constant_channels"] if flagged else []}


def s2rgbm(months: Sequence[str | Sequence[str]] = MONTHS, normalize: bool = True) -> list[Spec]:
    """``s2rgbm_blosc`` (M3LEO:io/io_blosc.py:906-943; M3LEO:datamodules/components/s2rgbm_blosc.py:72):
    R, G, B of each month in the requested order (or of each month group, its mean), / 255, NaN -> 0 before
    the z-score, NaN -> 0 after (S2rgbmTransform)."""
    groups = [_seq(m) for m in months]
    if all(len(g) == 1 for g in groups):
        pick = {"stage": "select_bands", "bands": [f"{g[0]}_{c}" for g in groups for c in RGB]}
    else:
        pick = {"stage": "month_groups", "groups": groups, "skipna": False}
    stages = [pick, {"stage": "to_float", "mask_nodata": False}, {"stage": "scale", "factor": 1 / 255}]
    if normalize:
        stages.append(_normalize(scale=1 / 255))
    return stages + [{"stage": "fill_nan", "value": 0.0}, {"stage": "stack", "fields": ["s2rgbm"]}]


def gssic(variable: str | Sequence[str] = "coherence", season: Sequence[str] | None = None,
          polarimetry: Sequence[str] | None = None, deltadays: Sequence[int] | None = None,
          param: Sequence[str] | None = None, feature: Sequence[str] | None = None, normalize: bool = True,
          size: int | tuple[int, int] | None = SAR_SIZE, skip_constant_channels: bool = False) -> list[Spec]:
    """``load_gssic`` (M3LEO:io/io.py:330-364; M3LEO:datamodules/components/gssic.py:68-116): each variable
    selected by coordinate in the requested order (a dimension not given: all of it, as the blosc loader's
    default), flattened and stacked in list order; z-score; GSSICTransform: NaN -> 0, resize to 448
    (bilinear, antialias) (M3LEO:datamodules/transforms.py:496-530)."""
    variables = _seq(variable)
    given = {"season": season, "polarimetry": polarimetry, "deltadays": deltadays, "param": param, "feature": feature}
    unknown = [v for v in variables if v not in GSSIC_DIMS]
    if unknown:
        raise ValueError(f"gssic variable(s) {unknown}: upstream knows {sorted(GSSIC_DIMS)}")
    select = {v: {d: _seq(given[d]) for d in GSSIC_DIMS[v] if given[d] is not None} for v in variables}
    stages: list[Spec] = [{"stage": "select_coords", "select": select}, {"stage": "to_float", "mask_nodata": False}]
    if normalize:
        stages.append(_normalize(fields=variables))
    stages += _flag(skip_constant_channels, variables) + [_stack(variables, "gssic", skip_constant_channels)]
    return stages + _sar_transform(size)


def _sar_transform(size) -> list[Spec]:
    if size is None:
        return [{"stage": "fill_nan", "value": 0.0}]
    return [{"stage": "fill_nan", "value": 0.0}, {"stage": "resize", "size": size, "fill_nan": 0.0}]


def gunw(variable: str | Sequence[str] = "unwrappedphase", windows: Sequence[Sequence[float]] = ((0, 60),),
         rule: str = "far", normalize: bool = True, size: int | tuple[int, int] | None = SAR_SIZE,
         **date_bounds: str) -> list[Spec]:
    """``load_gunw_extended`` (M3LEO:io/io_blosc.py:375-531): the scalar per-variable z-score first
    (GunwMeanStdNormalizer, M3LEO:utils.py:486-584), then per ``(min_days, max_days)`` window the first
    (``far``) or last (``close``) matching pair in file order, or their mean; ``first/last_start/end_date``
    bounds (``YYYYMMDD``); output variable-major; GUNWTransform: NaN -> 0, resize to 448. A window without a
    pair is zeros here (upstream raises and redraws another chip)."""
    variables = _seq(variable)
    stages: list[Spec] = [{"stage": "to_float"}]
    if normalize:
        stages.append(_normalize(fields=variables))
    spec = {"fields": variables, "windows": {f"w{i}": tuple(w) for i, w in enumerate(windows)}, "rule": rule,
            "order": "file", **date_bounds}
    stages += [{"stage": "select_pairs", "spec": spec}, {"stage": "stack", "fields": variables, "name": "gunw"}]
    return stages + _sar_transform(size)


def gunw_event(variable: str | Sequence[str] = "unwrappedphase", *, event_start: str, event_end: str,
               modes: Sequence[str] = ("pre", "co", "pos"), normalize: bool = True,
               size: int | tuple[int, int] | None = SAR_SIZE) -> list[Spec]:
    """Upstream's GUNW event mode (M3LEO:io/io_blosc.py:534-665): one pair before (the farthest, as upstream
    picks it), across (the shortest) and after (starting nearest the event end) the event, in ``modes`` order."""
    variables = _seq(variable)
    stages: list[Spec] = [{"stage": "to_float"}]
    if normalize:
        stages.append(_normalize(fields=variables))
    stages += [{"stage": "select_event_pairs", "event_start": event_start, "event_end": event_end,
                "fields": tuple(variables), "modes": tuple(modes)},
               {"stage": "stack", "fields": variables, "name": "gunw"}]
    return stages + _sar_transform(size)


def esaworldcover() -> list[Spec]:
    """``ESAWorldCoverDataset`` (M3LEO:datamodules/components/esawc.py:10-41): codes 10..100 -> 0..10, any other
    value (0 = nodata included) -> 0, squeezed to (H, W); never resized."""
    return [{"stage": "class_labels", "class_codes": list(declaration("esaworldcover").class_codes), "other": 0},
            {"stage": "stack", "fields": ["label"], "name": "esaworldcover", "squeeze": True}]


def _regression(field: str, modality: str, size) -> list[Spec]:
    """BiomassTransform / GhsBuiltSTransform (M3LEO:datamodules/transforms.py:428-475): float32 (declared nodata
    read as NaN), NaN -> 0, resize (bilinear, antialias), ``preserve: mean`` (ScaleMean, 178-187)."""
    return [{"stage": "to_float"}, {"stage": "stack", "fields": [field], "name": modality},
            {"stage": "resize", "size": size, "fill_nan": 0.0, "preserve_mean": True}]


def biomass(size: tuple[int, int] = LABEL_SIZE) -> list[Spec]:
    """biomass ``agb`` (``agb_se`` dropped) (M3LEO:io/io.py:714-736), resized to ``size`` keeping the mean."""
    return _regression("agb", "biomass", size)


def ghsbuilts(size: tuple[int, int] = LABEL_SIZE) -> list[Spec]:
    """ghsbuilts (65535 nodata -> NaN -> 0) (M3LEO:datamodules/components/ghsbuilts.py:14-24), resized to
    ``size`` keeping the mean."""
    return _regression("ghsbuilts", "ghsbuilts", size)


def modis(year: int = 2020, convert_water_to_zero: bool = True) -> list[Spec]:
    """modisveg (M3LEO:io/io.py:689-710): the year's band, water 200 -> 0 (optional), NaN -> 0, 253 kept."""
    stages: list[Spec] = [{"stage": "select_bands", "bands": [f"Percent_Tree_Cover_{year}"]},
                          {"stage": "to_float", "mask_nodata": False}]
    if convert_water_to_zero:
        stages.append({"stage": "replace_values", "mapping": {200.0: 0.0}})
    return stages + [{"stage": "fill_nan", "value": 0.0}, {"stage": "stack", "fields": ["modis"]}]


def srtmdem() -> list[Spec]:
    """srtmdem: the raw DEM (elevation, slope), not normalised (M3LEO:datamodules/components/srtmdem.py:24-30)."""
    return [{"stage": "view_as"}, {"stage": "to_float", "mask_nodata": False}, {"stage": "stack", "fields": ["srtmdem"]}]


DEFAULTS = {"s1grd": s1grd, "s2rgbm": s2rgbm, "gssic": gssic, "gunw": gunw, "esaworldcover": esaworldcover,
            "biomass": biomass, "ghsbuilts": ghsbuilts, "modis": modis, "srtmdem": srtmdem}


def default_recipe(modality: str | Modality) -> list[Spec]:
    """Upstream's recipe of ``modality`` (by family: every year of a product alike) with the options its
    baseline configs use by default."""
    declared = declaration(modality)
    family = "gunw" if declared.family in GUNW_FAMILIES else declared.family
    if family not in DEFAULTS:
        raise KeyError(f"no upstream recipe for {declared.name!r} (family {family!r}); have {sorted(DEFAULTS)}")
    return DEFAULTS[family]()
