"""Composable per-chip stages: each a small callable ``Chip -> Chip``; a recipe is a list of them.

Order of a typical recipe: select bands -> derive channels -> view_as / float -> normalise -> resize -> labels.
``STAGES`` names every stage so a recipe can be declared as data (``{"stage": "resize", "size": 448}``).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from m3leo_hf.stages.bands import SelectBands, SelectCoords, band_indices
from m3leo_hf.stages.checks import FlagConstant
from m3leo_hf.stages.chip import Chip, Pipeline, Stage, fill_value
from m3leo_hf.stages.datepairs import GUNW_BASELINES, DatePairs, SelectEventPairs, SelectPairs, pair_baselines
from m3leo_hf.stages.derive import Difference, MonthGroups, Scale, SummarizeSeasons
from m3leo_hf.stages.labels import IGNORE_INDEX, ClassLabels, class_labels
from m3leo_hf.stages.normalize import Normalize, PercentileStretch, pool_stats
from m3leo_hf.stages.resize import CropPad, Resize, Size, center_crop_pad
from m3leo_hf.stages.stack import Stack
from m3leo_hf.stages.values import FillNaN, ReplaceValues, ToFloat, ViewAs

STAGES: dict[str, type] = {
    "view_as": ViewAs, "to_float": ToFloat, "fill_nan": FillNaN, "select_bands": SelectBands,
    "select_coords": SelectCoords, "difference": Difference, "summarize_seasons": SummarizeSeasons,
    "month_groups": MonthGroups, "scale": Scale, "normalize": Normalize, "percentile_stretch": PercentileStretch,
    "resize": Resize, "crop_pad": CropPad, "class_labels": ClassLabels, "select_pairs": SelectPairs,
    "select_event_pairs": SelectEventPairs,
    "stack": Stack, "replace_values": ReplaceValues, "flag_constant": FlagConstant,
}


def build_stage(spec: Mapping[str, Any] | Stage) -> Stage:
    """A stage from its declaration ``{"stage": name, **options}`` (a callable is returned as is)."""
    if callable(spec):
        return spec
    options = dict(spec)
    name = options.pop("stage", None)
    if name not in STAGES:
        raise ValueError(f"unknown stage {name!r}; known: {', '.join(sorted(STAGES))}")
    if name == "select_pairs":
        options = {"spec": DatePairs.parse(options.get("spec", options) or True)}
    return STAGES[name](**options)


def build_pipeline(specs: Sequence[Mapping[str, Any] | Stage]) -> Pipeline:
    return Pipeline([build_stage(spec) for spec in specs])


__all__ = ["Chip", "ClassLabels", "CropPad", "DatePairs", "Difference", "FillNaN", "FlagConstant", "GUNW_BASELINES", "IGNORE_INDEX",
           "MonthGroups", "Normalize", "PercentileStretch", "Pipeline", "ReplaceValues", "Resize", "STAGES", "Scale", "SelectBands",
           "SelectCoords", "SelectEventPairs", "SelectPairs", "Size", "Stack", "Stage", "SummarizeSeasons", "ToFloat", "ViewAs", "band_indices",
           "build_pipeline", "build_stage", "center_crop_pad", "class_labels", "fill_value", "pair_baselines",
           "pool_stats"]
