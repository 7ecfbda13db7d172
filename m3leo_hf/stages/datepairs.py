"""GUNW date-pair selection: fixed-size windows of temporal baselines (and date bounds) along ``datepair``."""

from __future__ import annotations

from dataclasses import dataclass, field as dataclass_field
from datetime import datetime
from typing import Any, Mapping, Sequence

import numpy as np

from m3leo_hf.stages.chip import Chip

GUNW_BASELINES = {"short": (0, 60), "medium": (72, 132), "long": (140, 216)}  # days; the M3LEO GUNW inputs
PAIR_RULES = ("far", "close", "mean")
PAIR_ORDERS = ("baseline", "file")
DATE_BOUNDS = ("first_start_date", "last_start_date", "first_end_date", "last_end_date")


@dataclass(frozen=True)
class DatePairs:
    """Fixed-size selection along a ``datepair`` axis (GUNW).

    ``fields``: the (datepair, H, W) fields to keep. ``windows``: ``{name: (min_days, max_days)}``, inclusive
    temporal-baseline ranges, in output order (default: short 0-60, medium 72-132, long 140-216).
    ``rule`` for a window matching several pairs: ``"far"``/``"close"`` one pair, ``"mean"`` the NaN-aware
    mean of all. ``order``: how far/close pick: ``"baseline"`` (ours) the longest/shortest baseline;
    ``"file"`` (upstream ``load_gunw_extended``) the first/last matching pair in file order, whatever its
    baseline. ``first_start_date`` ... ``last_end_date``: inclusive ``YYYYMMDD`` bounds on the pairs' earlier
    (start) and later (end) dates. A pair label is ``later_earlier``; its baseline is later - earlier.
    """

    fields: tuple[str, ...] = ("unwrappedphase",)
    windows: Mapping[str, tuple[float, float]] = dataclass_field(default_factory=lambda: dict(GUNW_BASELINES))
    rule: str = "far"
    order: str = "baseline"
    bounds: Mapping[str, str] = dataclass_field(default_factory=dict)

    @classmethod
    def parse(cls, spec: "DatePairs | Mapping[str, Any] | bool | None") -> "DatePairs | None":
        """``None``/``False``: no selection; ``True``: the defaults; a mapping with keys among ``fields``
        (name or list), ``windows``, ``rule``, ``order`` and the date bounds; or a ``DatePairs``."""
        if spec is None or spec is False:
            return None
        if spec is True:
            return cls()
        if isinstance(spec, DatePairs):
            return spec
        unknown = set(spec) - {"fields", "windows", "rule", "order", *DATE_BOUNDS}
        if unknown:
            raise ValueError(f"datepairs: unknown key(s) {sorted(unknown)}; use fields, windows, rule, order, "
                             f"{', '.join(DATE_BOUNDS)}")
        fields = spec.get("fields", cls.fields)
        fields = (fields,) if isinstance(fields, str) else tuple(fields)
        windows = {str(name): (float(low), float(high))
                   for name, (low, high) in dict(spec.get("windows", GUNW_BASELINES)).items()}
        rule, order = spec.get("rule", cls.rule), spec.get("order", cls.order)
        bounds = {key: str(spec[key]) for key in DATE_BOUNDS if spec.get(key) is not None}
        if not fields or not windows:
            raise ValueError("datepairs: give at least one field and one window")
        if rule not in PAIR_RULES:
            raise ValueError(f"datepairs: rule must be one of {PAIR_RULES}, not {rule!r}")
        if order not in PAIR_ORDERS:
            raise ValueError(f"datepairs: order must be one of {PAIR_ORDERS}, not {order!r}")
        bad = {name: w for name, w in windows.items() if not w[0] <= w[1]}
        if bad:
            raise ValueError(f"datepairs: windows need min_days <= max_days: {bad}")
        for key, value in bounds.items():
            _date(value, f"datepairs: {key}")
        return cls(fields, windows, rule, order, bounds)

    def eligible(self, labels: Sequence[str] | None, count: int) -> np.ndarray:
        """Pairs passing the date bounds (all of them without bounds or labels)."""
        if not self.bounds or labels is None:
            return np.ones(count, dtype=bool)
        keep = np.ones(count, dtype=bool)
        for i, label in enumerate(labels):
            end, start = str(label).split("_")
            for key, value in self.bounds.items():
                date = start if "start" in key else end
                keep[i] &= date >= value if key.startswith("first") else date <= value
        return keep

    def choose(self, baselines: np.ndarray, eligible: np.ndarray | None = None) -> list[np.ndarray]:
        """Per window, the indices of the pairs it uses (empty: no pair in the window)."""
        ok = np.ones(len(baselines), dtype=bool) if eligible is None else eligible
        chosen = []
        for low, high in self.windows.values():
            match = np.flatnonzero((baselines >= low) & (baselines <= high) & ok)
            if len(match) and self.rule != "mean":
                if self.order == "file":
                    match = match[:1] if self.rule == "far" else match[-1:]
                else:
                    days = baselines[match]
                    ties = np.flatnonzero(days == (days.max() if self.rule == "far" else days.min()))
                    match = match[[ties[0] if self.rule == "far" else ties[-1]]]
            chosen.append(match)
        return chosen


def _date(text: str, what: str) -> datetime:
    try:
        return datetime.strptime(text, "%Y%m%d")
    except ValueError:
        raise ValueError(f"{what}: {text!r} is not YYYYMMDD") from None


def pair_baselines(labels: Sequence[str]) -> np.ndarray:
    """Temporal baselines in days (float64) of ``YYYYMMDD_YYYYMMDD`` datepair labels, later date first."""
    days = []
    for label in labels:
        parts = str(label).split("_")
        if len(parts) != 2:
            raise ValueError(f"datepair label {label!r} is not YYYYMMDD_YYYYMMDD")
        later, earlier = (_date(part, f"datepair label {label!r}") for part in parts)
        days.append((later - earlier).days)
    return np.array(days, dtype=np.float64)


def nanmean_pairs(stack: np.ndarray) -> np.ndarray:
    """Mean over the first axis of the finite values (NaN where none)."""
    valid = np.isfinite(stack)
    count = valid.sum(axis=0)
    total = np.where(valid, stack, 0).sum(axis=0, dtype=np.float64)
    return np.divide(total, count, out=np.full(count.shape, np.nan), where=count > 0).astype(np.float32)


@dataclass(frozen=True)
class SelectPairs:
    """Keep only ``spec.fields``, each as ``(n_windows, H, W)`` float32 (a window without a pair: zeros),
    plus ``pairs_available`` ``(n_windows,)`` bool. Pair labels come from the sample's ``dates.datepairs``
    (checked against a ``deltadays`` field when there is one), else from ``deltadays`` alone."""

    spec: DatePairs

    def __call__(self, chip: Chip) -> Chip:
        labels = (chip.dates or {}).get("datepairs")
        baselines = self._baselines(chip, labels)
        chosen = self.spec.choose(baselines, self.spec.eligible(labels, len(baselines)))
        changes, meta = {}, {}
        for name in self.spec.fields:
            if name not in chip.arrays:
                raise KeyError(f"{chip.modality}: no field {name!r} to select date pairs from; fields: {chip.grids()}")
            stack = chip.arrays[name]
            if stack.ndim != 3 or stack.shape[0] != len(baselines):
                raise ValueError(f"{chip.modality}.{name}: shape {stack.shape} does not match "
                                 f"{len(baselines)} date pairs")
            windows = np.zeros((len(chosen),) + stack.shape[1:], dtype=np.float32)
            for i, pairs in enumerate(chosen):
                if len(pairs):
                    windows[i] = stack[pairs[0]] if len(pairs) == 1 else nanmean_pairs(stack[pairs].astype(np.float32))
            changes[name] = windows
            meta[name] = {"dims": ["window", *chip.fields[name]["dims"][-2:]], "band_names": list(self.spec.windows)}
        changes["pairs_available"] = np.array([len(pairs) > 0 for pairs in chosen], dtype=bool)
        meta["pairs_available"] = {"dims": ["window"]}
        keep = set(self.spec.fields) | {"pairs_available"}
        return chip.with_arrays(changes, meta, drop=[n for n in chip.arrays if n not in keep])

    def _baselines(self, chip: Chip, labels: Sequence[str] | None) -> np.ndarray:
        deltadays = chip.arrays.get("deltadays")
        if chip.placeholder:  # no pair matches a NaN baseline: every window is missing
            pairs = chip.arrays[self.spec.fields[0]].shape[0] if self.spec.fields[0] in chip.arrays else 0
            return np.full(pairs, np.nan)
        per_pair = list(chip.fields.get("deltadays", {}).get("dims", ["datepair"])) == ["datepair"]
        if labels is None:
            if deltadays is None or not per_pair:
                raise KeyError(f"{chip.modality}: datepairs= needs the sample's dates.datepairs or a per-pair "
                               f"deltadays field")
            return deltadays.astype(np.float64)
        baselines = pair_baselines(labels)
        if deltadays is None:
            return baselines
        # deltadays is stored as uint8: compare in its dtype (baselines over 255 days wrap the same way); the
        # sartiles layout keeps it as its own sorted dimension (the distinct baselines)
        wrapped = baselines.astype(np.int64).astype(deltadays.dtype)
        if (per_pair and (deltadays.shape != baselines.shape or (wrapped != deltadays).any())) or (
                not per_pair and set(wrapped.tolist()) != set(deltadays.tolist())):
            raise ValueError(f"{chip.modality}: datepairs {list(labels)} give baselines "
                             f"{baselines.astype(int).tolist()} days but deltadays is {deltadays.tolist()}")
        return baselines


EVENT_MODES = ("pre", "co", "pos")


@dataclass(frozen=True)
class SelectEventPairs:
    """Pairs around an event (``event_start``..``event_end``, ``YYYYMMDD``), upstream's event mode
    (M3LEO:io/io_blosc.py:534-665): ``pre`` ends before the event starts, ``co`` spans the whole event (the
    shortest such pair), ``pos`` starts after it ends (the one starting nearest its end). ``pre_rule``:
    ``"farthest"`` (upstream: its argmin over negative offsets takes the pair ending longest before the event)
    or ``"nearest"``. ``modes`` orders the output; each chosen field becomes ``(len(modes), H, W)`` float32
    (zeros where no pair qualifies) plus ``pairs_available``."""

    event_start: str
    event_end: str
    fields: tuple[str, ...] = ("unwrappedphase",)
    modes: tuple[str, ...] = EVENT_MODES
    pre_rule: str = "farthest"

    def __post_init__(self):
        for value in (self.event_start, self.event_end):
            _date(value, "event pairs")
        if self.event_end < self.event_start:
            raise ValueError(f"event pairs: event_end {self.event_end} is before event_start {self.event_start}")
        unknown = [m for m in self.modes if m not in EVENT_MODES]
        if unknown or self.pre_rule not in ("farthest", "nearest"):
            raise ValueError(f"event pairs: modes are {EVENT_MODES} (got {unknown}); pre_rule farthest|nearest")

    def choose(self, labels: Sequence[str]) -> list[int | None]:
        """Per mode, the index of the chosen pair (None: no pair qualifies)."""
        ends = [_date(str(label).split("_")[0], "datepair") for label in labels]
        starts = [_date(str(label).split("_")[1], "datepair") for label in labels]
        event_start, event_end = _date(self.event_start, "event"), _date(self.event_end, "event")
        pre = [i for i, end in enumerate(ends) if end < event_start]
        co = [i for i in range(len(labels)) if starts[i] <= event_start and ends[i] >= event_end]
        pos = [i for i, start in enumerate(starts) if start > event_end]
        far = self.pre_rule == "farthest"
        picks = {
            "pre": min(pre, key=lambda i: (ends[i] - event_start).days * (1 if far else -1), default=None),
            "co": min(co, key=lambda i: (ends[i] - starts[i]).days, default=None),
            "pos": min(pos, key=lambda i: (starts[i] - event_end).days, default=None),
        }
        return [picks[mode] for mode in self.modes]

    def __call__(self, chip: Chip) -> Chip:
        labels = (chip.dates or {}).get("datepairs")
        if labels is None:
            raise KeyError(f"{chip.modality}: event pairs need the sample's dates.datepairs")
        chosen = [None] * len(self.modes) if chip.placeholder else self.choose(labels)
        changes, meta = {}, {}
        for name in self.fields:
            if name not in chip.arrays:
                raise KeyError(f"{chip.modality}: no field {name!r}; fields: {chip.grids()}")
            stack = chip.arrays[name]
            out = np.zeros((len(self.modes),) + stack.shape[1:], dtype=np.float32)
            for i, pair in enumerate(chosen):
                if pair is not None:
                    out[i] = stack[pair]
            changes[name] = out
            meta[name] = {"dims": ["window", *chip.fields[name]["dims"][-2:]], "band_names": list(self.modes)}
        changes["pairs_available"] = np.array([pair is not None for pair in chosen], dtype=bool)
        meta["pairs_available"] = {"dims": ["window"]}
        keep = set(self.fields) | {"pairs_available"}
        return chip.with_arrays(changes, meta, drop=[n for n in chip.arrays if n not in keep])
