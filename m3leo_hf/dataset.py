"""``M3LEOStream``: aligned per-modality WebDataset shards of one or more regions, joined by chip id,
as a torch ``IterableDataset`` with exact, resumable epochs under DDP and DataLoader workers."""

from __future__ import annotations

import functools
import json
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterator, Mapping, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import IterableDataset, get_worker_info

from builders.declarations import Modality
from m3leo_hf.collate import TAIL_PART, BatchRows, to_torch
from m3leo_hf.config import StreamConfig
from m3leo_hf import upstream
from m3leo_hf.index import AlignedShard, load_region
from m3leo_hf.modalities import declaration
from m3leo_hf.limits import FieldLimit, field_limits, stats_problems
from m3leo_hf.planning import Equalize, RankPlan, WorkerShare, plan_rank, plan_worker
from m3leo_hf import prefetch
from m3leo_hf.ranged import read_range, read_runs, runs
from m3leo_hf.readahead import read_ahead
from m3leo_hf.recycle import SLOT_KEY, BatchPool, new_flags
from m3leo_hf.reader import (AlignmentError, ShardError, decode, field_problem, is_url, join, load_json, read_bytes,
                             read_samples)
from m3leo_hf.recipes import RecipeTransform, chip_lonlat, stack_sample, stats_file, train_stats
from m3leo_hf.selection import Selection, selected
from m3leo_hf.tail_arena import TailArena
from m3leo_hf.stages.checks import StoredMismatch
from m3leo_hf.transforms import ModalityTransform, pool_stats

if dist.is_available():
    # torch.distributed.nn.functional binds group.WORLD into default arguments when first imported (DDP imports it).
    # Imported after init_process_group, it keeps the gloo group alive past destroy_process_group, and a gloo thread
    # still releasing a collective's tensor at interpreter exit aborts the process (SIGABRT, "terminate called without
    # an active exception"). Imported here, before any group exists, it binds None.
    import torch.distributed.nn  # noqa: F401

READ_AHEAD = 4  # joined raw samples a worker (or the main process) reads ahead of remote roots


class M3LEOStream(IterableDataset):
    """Samples ``{"chip_id", "region", "<modality>": tensor | {field: tensor}, "<modality>_available",
    "meta"}`` (or batches of them) from the ``split`` shards of the region ``roots``.

    Use with ``DataLoader(stream, batch_size=None)`` or ``StatefulLoader``. See ``stream()`` for the
    options and ``m3leo_hf.planning`` for how samples are shared among ranks and workers.

    Epoch and position: ``set_epoch(e)`` selects epoch ``e`` (a no-op when ``e`` is already the
    current epoch, so a loaded position is kept); an iteration continues from the current position
    and, when it runs to the end, moves to the next epoch. ``state_dict()`` counts the items this
    object yielded in this process, so it is exact without DataLoader workers; with workers use
    ``StatefulLoader``, which counts in the main process (a plain DataLoader with workers iterates
    copies: call ``set_epoch`` every epoch, as with ``DistributedSampler``). The main process's
    position is kept in shared memory too, and every DataLoader worker, persistent ones included,
    starts each iteration from it.

    Create the stream after ``init_process_group`` (or pass ``rank`` and ``world_size``): workers
    started with spawn/forkserver have no process group and use the values seen here.
    """

    def __init__(self, roots: str | os.PathLike | Sequence[str | os.PathLike] | StreamConfig, *,
                 modalities: Sequence[str] | None = None, **options):
        config = roots if isinstance(roots, StreamConfig) else StreamConfig.create(roots, modalities=modalities,
                                                                                    **options)
        self.config = config
        self.roots, self.modalities, self.split = list(config.roots), list(config.modalities), config.split
        self.batch_size, self.seed, self.missing = config.batch_size, config.seed, config.missing
        self.shuffle, self.shuffle_buffer = config.shuffle, config.shuffle_buffer
        self.equalize: Equalize = config.equalize
        self.drop_last = config.drop_last
        self.verify, self.retries, self.storage_options = config.verify_checksums, config.retries, config.storage_options
        self._remote = any(is_url(root) for root in self.roots)
        load = functools.partial(load_region, modalities=self.modalities, split=self.split, retries=self.retries,
                                 storage_options=self.storage_options)
        if self._remote:  # regions' metadata requests at once, not one after another
            with ThreadPoolExecutor(min(len(self.roots), 8), thread_name_prefix="m3leo-regions") as pool:
                self.regions = list(pool.map(load, self.roots))
        else:
            self.regions = [load(root) for root in self.roots]
        self.shards: list[AlignedShard] = [s for region in self.regions for s in region.shards]
        self.selection = Selection.of(config.chips, config.where, config.bbox)
        self.eligible = [self._eligible(s) for s in self.shards]
        if self.selection is not None:
            keep = selected(self.roots, self.split, self.selection, retries=self.retries,
                            storage_options=self.storage_options)
            self.eligible = [np.array([i for i in e.tolist() if s.keys[i] in keep], dtype=np.int64)
                             for s, e in zip(self.shards, self.eligible)]
            if not sum(len(e) for e in self.eligible):
                raise ValueError(f"the selection keeps no {self.split} chip of {self.roots}")
        self.declarations = {m: self._declaration(m) for m in self.modalities}
        paired = [m for m in self.modalities if self.declarations[m].variable_axis == "datepair"]
        if config.datepairs not in (None, False) and not paired:
            raise ValueError(f"datepairs= selects GUNW date pairs, but none of {self.modalities} has them")
        self.transforms = {m: self._transform(m, m in paired) for m in self.modalities}
        self._explicit = None if config.rank is None else (config.rank, config.world_size)
        self._dist = self._explicit or (0, 1)
        self._placeholders: dict[str, dict] = {}
        self._templates: dict[str, dict | None] = {}
        self._field_limits: dict[str, dict[str, FieldLimit]] = {}
        self.epoch, self._consumed = 0, 0
        self.split_tail = False  # StatefulLoader's even split: see planning.split_tail
        self.recycle = False  # StatefulLoader's recycled batches: see m3leo_hf.recycle
        self._recycle_flags = new_flags()
        self.tail_arenas: tuple[TailArena, ...] = ()  # StatefulLoader's zero-copy tail batches: m3leo_hf.tail_arena
        self._pool: BatchPool | None = None
        self._primed: tuple | None = None  # a worker's reads of its next epoch, started when one's reads end
        self._shared_position = torch.zeros(2, dtype=torch.int64).share_memory_()
        self._distribution()

    # -- position ---------------------------------------------------------------------------------
    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self._move(epoch, 0)

    def state_dict(self) -> dict:
        """Position (epoch, items consumed) and what it is valid for: world size, the order options and
        their fingerprint (``StreamConfig.order``)."""
        return {"epoch": self.epoch, "batches": self._consumed, "seed": self.seed,
                "world_size": self._distribution()[1], "batch_size": self.batch_size,
                "order": self.config.order(), "fingerprint": self.config.fingerprint}

    def load_state_dict(self, state: Mapping) -> None:
        """Restore a position; refused, naming the options that differ, when the state was saved by a stream
        with other order options (seed, roots, shuffle_buffer, missing, equalize, drop_last...) or world size."""
        mine = self.state_dict()
        for key in ("seed", "world_size", "batch_size"):
            if key in state and state[key] != mine[key]:
                raise ValueError(f"cannot resume: state has {key}={state[key]!r}, this stream {mine[key]!r}")
        if "fingerprint" in state and state["fingerprint"] != mine["fingerprint"]:
            saved = state.get("order", {})
            changed = {k: (saved.get(k), v) for k, v in mine["order"].items() if saved.get(k) != v}
            detail = "; ".join(f"{k}: saved {a!r}, now {b!r}" for k, (a, b) in changed.items()) or "unknown options"
            raise ValueError(f"cannot resume: the state was saved by a stream with other order options "
                             f"(fingerprint {state['fingerprint']} vs {mine['fingerprint']}): {detail}")
        self._move(int(state["epoch"]), int(state["batches"]))

    def _move(self, epoch: int, consumed: int) -> None:
        """Set the position; in the main process also the shared one that workers start from."""
        self.epoch, self._consumed = epoch, consumed
        if get_worker_info() is None:
            self._shared_position[0], self._shared_position[1] = epoch, consumed

    def __len__(self) -> int:
        """Items (batches, or samples without ``batch_size``) this rank yields per epoch."""
        return self.plan(self.epoch).num_batches

    def plan(self, epoch: int, num_workers: int = 1) -> RankPlan:
        rank, world_size = self._distribution()
        return plan_rank(self.eligible, epoch=epoch, seed=self.seed, shuffle=self.shuffle, rank=rank,
                         world_size=world_size, equalize=self.equalize, batch_size=self.batch_size or 1,
                         drop_last=self.drop_last, num_workers=num_workers,
                         split_tail_batches=self.split_tail and bool(self.batch_size))

    # -- iteration --------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        if info is not None:  # this copy may be a persistent worker's: follow the main process
            self.epoch, self._consumed = self._shared_position.tolist()
        plan = self.plan(self.epoch, workers)
        share = self._share(plan, worker, self._consumed, self.epoch)
        prime = functools.partial(self._prime, self.epoch + 1, worker, workers) if info and self._remote else None
        source = self._primed_source((self.epoch, worker, workers), share.positions) or self._source(
            plan, share.positions, then=prime)
        raws = self._ordered(share.positions, source)
        if self.recycle and (self._pool is None or self._pool.pid != os.getpid()):
            self._pool = BatchPool(self._recycle_flags, worker, shared=info is not None)
        tail_rows = (plan.tail_ranges[share.part][0] - plan.tail_ranges[0][0],
                     plan.tail_ranges[-1][1] - plan.tail_ranges[0][0]) if plan.tail_ranges else (0, 0)
        for item in self._items(raws, functools.partial(self._sample, plan), share, tail_rows):
            self._move(self.epoch, self._consumed + 1)
            yield item
        self._move(self.epoch + 1, 0)

    def _prime(self, epoch: int, worker: int, workers: int) -> None:
        """Start a worker's requests of ``epoch`` (from its start): called once its previous epoch's reads are
        all done, while that epoch's last samples are still transformed (remote roots only)."""
        plan = self.plan(epoch, workers)
        share = self._share(plan, worker, 0, epoch)
        then = functools.partial(self._prime, epoch + 1, worker, workers)
        self._primed = ((epoch, worker, workers), share.positions, self._source(plan, share.positions, then=then))

    def _share(self, plan: RankPlan, worker: int, consumed: int, epoch: int):
        """Worker ``worker``'s part of this rank's ``plan`` of ``epoch``, from item ``consumed`` on."""
        return plan_worker(plan, worker=worker, consumed=consumed, shuffle_buffer=self.shuffle_buffer, seed=self.seed,
                           epoch=epoch, rank=self._distribution()[0])

    def _primed_source(self, key: tuple, positions: np.ndarray) -> Iterator | None:
        """The reads a worker started at the end of the previous epoch, when this iteration is the one they
        are for (same epoch, worker and worker count, from its start); else they are stopped."""
        primed, self._primed = self._primed, None
        if primed is None:
            return None
        if primed[0] == key and self._consumed == 0 and np.array_equal(primed[1], positions):
            return primed[2]
        primed[2].close()
        return None

    def _source(self, plan: RankPlan, positions: np.ndarray, then: Callable[[], None] | None = None
                ) -> Iterator[tuple[int, dict]]:
        """Joined raw samples of ``positions`` in ascending order; from remote roots by a read-ahead thread,
        started now (local reads come from the page cache: a thread would only contend for the GIL); ``then``
        is called once they are all read."""
        reads = self._ascending(plan, np.sort(positions))
        return read_ahead(_then(reads, then) if then else reads, READ_AHEAD if self._remote else 0)

    def _items(self, raws: Iterator[tuple[int, dict]], sample: Callable[..., dict], share: WorkerShare,
               tail_rows: tuple[int, int]) -> Iterator[dict]:
        """Samples (``sample(position, raw, into)`` of each of ``raws``), or batches of the share's samples, its
        last ``share.tail`` as its tail part (at rows ``tail_rows[0]..`` of the ``tail_rows[1]`` the parts make).
        Each sample goes into its batch as it comes (``BatchRows``): made in its row where the transform can."""
        if not self.batch_size:
            yield from (to_torch(sample(position, raw)) for position, raw in raws)
            return
        whole = len(share.positions) - share.tail
        done, rows, finish = 0, None, None
        for position, raw in raws:
            if rows is None:
                rows, finish = (self._batch(min(self.batch_size, whole - done)) if done < whole
                                else self._tail_part(share, tail_rows))
            rows.add(sample(position, raw, rows.destinations()))
            done += 1
            if rows.count == rows.size:
                yield finish(rows.finish())
                rows = None
        if rows is not None and rows.count:
            yield finish(rows.finish())

    def _batch(self, size: int) -> tuple[BatchRows, Callable[[dict], dict]]:
        """Rows of a batch, full ones in a recycled shared-memory buffer set when a slot is free
        (``m3leo_hf.recycle``), and what finishes it."""
        slot = self._pool.take() if self._pool is not None and size == self.batch_size else None
        if slot is None:
            return BatchRows(size), lambda batch: batch
        return (BatchRows(size, functools.partial(self._pool.buffer, slot)),
                lambda batch: {**batch, SLOT_KEY: (self._pool.worker, slot)})

    def _tail_part(self, share: WorkerShare, tail_rows: tuple[int, int]) -> tuple[BatchRows, Callable[[dict], dict]]:
        """Rows of a worker's tail part, at its rows of the epoch's ``TailArena`` when the worker inherited it
        and no joined tail of it is held (``m3leo_hf.tail_arena``), and what marks it ``TAIL_PART``."""
        arena = self.tail_arenas[self.epoch % len(self.tail_arenas)] if self.tail_arenas else None
        if arena is None or get_worker_info() is None or not arena.usable():
            return BatchRows(share.tail), lambda batch: {**batch, TAIL_PART: share.part}
        writer = arena.writer(*tail_rows)
        return BatchRows(share.tail, writer), lambda batch: {**writer.sendable(batch), TAIL_PART: share.part}

    @staticmethod
    def _ordered(positions: np.ndarray, source: Iterator[tuple[int, dict]]) -> Iterator[tuple[int, dict]]:
        """Joined raw samples in ``positions`` order from ``source`` (ascending order): a shuffle buffer."""
        pending: dict[int, dict] = {}
        try:
            for position in positions.tolist():
                while position not in pending:
                    got, raw = next(source)
                    pending[got] = raw
                yield position, pending.pop(position)
            for _ in source:  # nothing left to yield: lets the last shard run finish its checksum verification
                pass
        finally:
            source.close()

    def _ascending(self, plan: RankPlan, positions: np.ndarray) -> Iterator[tuple[int, dict]]:
        """Read ``positions`` (sorted) shard run by shard run, all modalities in lockstep; from remote roots
        (unless whole shards are verified) by chunks requested ahead in parallel (``m3leo_hf.prefetch``)."""
        if self._remote and not self.verify:
            yield from self._prefetched(plan, positions)
            return
        for run in _runs(plan, positions):
            shard = self.shards[plan.shard_ids[run[0]]]
            wanted = plan.sample_ids[run].tolist()
            present = [m for m in self.modalities if m in shard.files]
            streams = [self._reader(shard, m, wanted) for m in present]
            try:
                for position, index in zip(run.tolist(), wanted):
                    parts = [next(stream) for stream in streams]
                    keys = {sample["__key__"] for _, sample in parts}
                    if len(keys) > 1 or {i for i, _ in parts} - {index}:
                        raise AlignmentError(f"{shard.region}/{shard.name}: modalities disagree at sample {index}: "
                                             f"{[(m, i, s['__key__']) for m, (i, s) in zip(present, parts)]}")
                    joined = {m: sample for m, (_, sample) in zip(present, parts)}
                    yield position, {m: joined.get(m) or _absent(shard, index, m) for m in self.modalities}
                for stream in streams:
                    next(stream, None)  # let each reader finish (checksum verification)
            finally:
                for stream in streams:
                    stream.close()

    def _prefetched(self, plan: RankPlan, positions: np.ndarray) -> Iterator[tuple[int, dict]]:
        """Joined raw samples of ``positions`` (sorted) from chunks of consecutive samples, each chunk of each
        modality one request, requested ahead by a thread pool."""
        chunks = []  # (shard, positions, sample indices, modalities present)
        for run in _runs(plan, positions):
            shard = self.shards[plan.shard_ids[run[0]]]
            wanted = plan.sample_ids[run].tolist()
            present = [m for m in self.modalities if m in shard.files]
            if not present:
                chunks += [(shard, run[i:i + 1], wanted[i:i + 1], present) for i in range(len(wanted))]
                continue
            largest = max(present, key=lambda m: int(shard.sizes[m][wanted].sum()))
            file = shard.files[largest]
            start = 0
            for part in runs(wanted, file.offsets, shard.sizes[largest], prefetch.CHUNK_BYTES):
                chunks.append((shard, run[start:start + len(part)], part, present))
                start += len(part)
        tasks = ((int(shard.sizes[m][part].sum()),
                  functools.partial(prefetch.fetch_samples, shard.files[m], shard.keys, part, retries=self.retries,
                                    storage_options=self.storage_options))
                 for shard, _, part, present in chunks for m in present)
        fetched = prefetch.in_order(tasks)
        try:
            for shard, run, part, present in chunks:
                parts = {m: next(fetched) for m in present}
                for j, (position, index) in enumerate(zip(run.tolist(), part)):
                    yield position, {m: parts[m][j][1] if m in parts else _absent(shard, index, m)
                                     for m in self.modalities}
        finally:
            fetched.close()

    def _reader(self, shard: AlignedShard, modality: str, wanted: list[int]) -> Iterator[tuple[int, dict]]:
        """Raw samples at ``wanted``: a selection reads only their byte ranges (unless checksums are verified,
        which needs whole shards); otherwise one forward read from the first wanted sample."""
        file = shard.files[modality]
        if self.selection is not None and not self.verify:
            return read_runs(file.url, shard.keys, wanted, file.offsets, shard.sizes[modality], retries=self.retries,
                             storage_options=self.storage_options)
        return read_samples(file, shard.keys, wanted, verify=self.verify, retries=self.retries,
                            storage_options=self.storage_options)

    def _sample(self, plan: RankPlan, position: int, raw: Mapping[str, dict], into: Mapping | None = None) -> dict:
        return self.joined(self.shards[plan.shard_ids[position]], int(plan.sample_ids[position]), raw,
                           padding=bool(plan.padding[position]), into=into)

    def read_one(self, shard: AlignedShard, index: int) -> dict[str, dict]:
        """The raw samples of every modality at ``index`` of ``shard``, each read by its byte range only."""
        raw = {}
        for modality in self.modalities:
            if modality not in shard.files:
                raw[modality] = _absent(shard, index, modality)
                continue
            file = shard.files[modality]
            ((_, raw[modality]),) = read_runs(file.url, shard.keys, [index], file.offsets, shard.sizes[modality],
                                              retries=self.retries, storage_options=self.storage_options)
        return raw

    def joined(self, shard: AlignedShard, index: int, raw: Mapping[str, dict], padding: bool = False,
               into: Mapping | None = None) -> dict:
        """The output sample (numpy) of the raw samples ``raw`` at ``index`` of ``shard``: decoded, checked,
        transformed, placeholders for missing modalities. ``into`` (``BatchRows.destinations``): arrays, nested
        like the sample, that the transforms may write their outputs in."""
        out: dict = {"chip_id": shard.keys[index], "region": shard.region}
        meta = {"split": self.split, "shard": shard.name, "sample_index": index, "padding": padding}
        for modality, sample in raw.items():
            url = shard.files[modality].url if modality in shard.files else shard.region
            arrays, info = decode(sample, url, self._limits(modality))
            available = bool(info.get("available", bool(arrays)))
            try:
                if available:
                    transform, targets = self.transforms[modality], self._destinations(modality, into)
                    value = transform(arrays, info.get("fields", {}), info.get("dates"), info.get("labels"),
                                      shard.region, **({"into": targets} if targets else {}))
                else:
                    value = {k: v.copy() for k, v in self._placeholder(modality).items()}
            except (TypeError, OverflowError, MemoryError, RecursionError, StoredMismatch) as exc:  # never bare
                raise ShardError(f"{url}: sample {index} ({shard.keys[index]}): {modality}: "
                                 f"{type(exc).__name__}: {exc}") from None
            single = next(iter(value)) if len(value) == 1 else None  # one array: the field, or a recipe's stack
            out[modality] = value[single] if single in (self.declarations[modality].field,
                                                        self.declarations[modality].name, modality) else value
            out[f"{modality}_available"] = available
            meta[modality] = info
        if self.config.lonlat:
            out["lonlat"] = chip_lonlat({m: meta[m] for m in self.modalities})
        if self.config.stack:
            stack_sample(out, self.config.stack)
        out["meta"] = meta
        return out

    def _destinations(self, modality: str, into: Mapping | None) -> dict[str, np.ndarray] | None:
        """What ``modality``'s transform (ours, not a recipe's) may write its outputs in, by output name, from
        ``into``: its single array is the sample's field (what ``joined`` keeps of a one-array output)."""
        target = (into or {}).get(modality)
        if not isinstance(self.transforms[modality], ModalityTransform) or target is None:
            return None
        if isinstance(target, np.ndarray):
            return {self.declarations[modality].field: target}
        return {k: v for k, v in target.items() if isinstance(v, np.ndarray)} if isinstance(target, Mapping) else None

    # -- setup helpers ----------------------------------------------------------------------------
    def _distribution(self) -> tuple[int, int]:
        """(rank, world_size): explicit, else torch.distributed when initialised here, else the value
        seen in the main process (DataLoader workers started with spawn have no process group)."""
        if self._explicit is None and dist.is_available() and dist.is_initialized():
            self._dist = (dist.get_rank(), dist.get_world_size())
        return self._dist

    def _declaration(self, modality: str) -> Modality:
        """What ``modality`` holds: the declaration published with the first region having it."""
        return next((r.declarations[modality] for r in self.regions if modality in r.declarations),
                    None) or declaration(modality)

    def _eligible(self, shard: AlignedShard) -> np.ndarray:
        if self.missing == "mask":
            return np.arange(shard.nsamples)
        return np.flatnonzero(np.logical_and.reduce([shard.available[m] for m in self.modalities]))

    def _transform(self, modality: str, paired: bool) -> ModalityTransform | RecipeTransform:
        option = functools.partial(self.config.per_modality, modality=modality)
        recipe = self.config.recipe
        declared = self.declarations[modality]
        specs = upstream.default_recipe(declared) if recipe == "upstream" else (
            recipe.get(modality) if isinstance(recipe, Mapping) else None)
        if specs is not None:
            if self.config.defer:
                raise ValueError("defer=True finishes our default recipe on the device, not recipe=")
            extra = option("transform")
            extra = [] if extra is None else [extra] if callable(extra) else list(extra)
            return RecipeTransform(declared, list(specs) + extra, functools.partial(self._stats, modality))
        norm = option("normalize")
        if norm:
            for region in self.regions:
                problems = stats_problems(region.stats[modality])
                if problems:
                    raise ShardError(f"{region.root}: metadata/{declared.name}.stats.json: refusing to normalise "
                                     f"{declared.name}: {'; '.join(problems[:5])}")
        stats = pool_stats([region.stats[modality] for region in self.regions]) if norm else None
        return ModalityTransform(declared, stats=stats, bands=(self.config.bands or {}).get(modality),
                                 normalize=norm, labels=self.config.labels, spatial_size=option("spatial_size"),
                                 resize=option("resize"), datepairs=self.config.datepairs if paired else None,
                                 transform=option("transform"), defer=self.config.defer)

    def _stats(self, modality: str, variant: str) -> dict[str, dict]:
        """``{region: train statistics}`` of ``modality`` in the ``variant`` stats file of every root."""
        out = {}
        for region in self.regions:
            if not any(modality in shard.files for shard in region.shards):
                continue  # the region has no such modality
            url = join(region.root, f"metadata/{stats_file(region.declarations[modality].name, variant)}")
            out[region.region] = train_stats(read_bytes(url, retries=self.retries,
                                                        storage_options=self.storage_options), url)
        return out

    def _template(self, modality: str) -> dict | None:
        """``fields`` of the first chip that has ``modality`` (checked), or ``None`` when no chip has it."""
        if modality not in self._templates:
            location = next((r.templates[modality] for r in self.regions if r.templates[modality]), None)
            fields = None
            if location is not None:
                url, offset, size = location
                where = f"{url}: json member at byte {offset}"
                info = load_json(read_range(url, offset, size, retries=self.retries,  # a bounded Range request
                                            storage_options=self.storage_options), where)
                fields = info.get("fields") if isinstance(info, dict) else None
                problem = "no fields" if not isinstance(fields, dict) or not fields else next(
                    filter(None, (field_problem(name, f) for name, f in fields.items())), None)
                if problem:
                    raise ShardError(f"{where} (the modality's template sample): {problem}")
            self._templates[modality] = fields
        return self._templates[modality]

    def _limits(self, modality: str) -> dict[str, FieldLimit]:
        """Plausible dtype and shape of each field of ``modality`` (``m3leo_hf.limits.field_limits``)."""
        if modality not in self._field_limits:
            spec = self.declarations[modality]
            self._field_limits[modality] = field_limits(spec.stored_dtype, len(spec.band_names), spec.variable_axis,
                                                        self._template(modality))
        return self._field_limits[modality]

    def _placeholder(self, modality: str) -> dict:
        """Output for chips lacking ``modality``, shaped like the first chip that has it."""
        if modality not in self._placeholders:
            fields = self._template(modality)
            if fields is None:
                raise ValueError(f"no chip of {self.roots} has {modality}: cannot shape its placeholders; "
                                 f"use missing='skip' or drop the modality")
            self._placeholders[modality] = self.transforms[modality].placeholder(fields)
        return self._placeholders[modality]


def _absent(shard: AlignedShard, index: int, modality: str) -> dict:
    """The raw sample of a modality the shard's region does not have at all."""
    info = {"chip_id": shard.keys[index], "region": shard.region, "modality": modality, "available": False,
            "missing_reason": f"region {shard.region} has no {modality}"}
    return {"__key__": shard.keys[index], "json": json.dumps(info).encode()}


def _then(items: Iterator, then: Callable[[], None]) -> Iterator:
    """``items``, then ``then()`` once they are exhausted (not when the iteration stops early)."""
    yield from items
    then()


def _runs(plan: RankPlan, positions: np.ndarray) -> Iterator[np.ndarray]:
    """Split sorted positions into runs reading one shard forwards (same shard, rising sample index)."""
    if not len(positions):
        return
    shards, samples = plan.shard_ids[positions], plan.sample_ids[positions]
    breaks = np.flatnonzero((shards[1:] != shards[:-1]) | (samples[1:] <= samples[:-1])) + 1
    yield from np.split(positions, breaks)


def stream(roots: str | os.PathLike | Sequence[str | os.PathLike] | StreamConfig, *,
           modalities: Sequence[str] | None = None, **options) -> M3LEOStream:
    """Stream the aligned shards of region ``roots`` (local region dirs, ``https://…/resolve/main``,
    ``hf://datasets/ORG/NAME``) joined by chip id.

    Options: ``split`` ("train"); ``batch_size`` (batch inside the stream, use
    ``DataLoader(batch_size=None)``); ``shuffle`` (default: train only), ``shuffle_buffer`` (256),
    ``seed``; ``equalize`` ("drop" for train, "pad" otherwise; padded samples have
    ``meta["padding"]``) and ``drop_last`` (train only) make every rank yield the same number of
    items; ``missing="mask"`` (zeros / ignore-index labels and ``<modality>_available=False``) or
    ``"skip"`` (drop chips lacking a modality); ``bands={"s1grd": [names]}``; ``normalize`` (True or
    modality names: published train stats, nodata and NaN -> 0); ``defer`` (yield the stored integers, cropped/
    padded, and leave normalisation and class labels to ``m3leo_hf.normalize_on(stream, device)``: the same
    tensors, computed on the GPU, with half the bytes or less through shared memory and to the device);
    ``labels`` (esaworldcover -> ``{"label", "presence"}``); ``spatial_size`` (int, (H, W) or per modality: centre crop/pad);
    ``rank``/``world_size`` (default: torch.distributed); ``verify_checksums``; ``retries``;
    ``storage_options`` (fsspec); ``datepairs`` (GUNW: fixed-size date-pair selection, so gunw
    batches; ``True`` or ``{"fields": ["unwrappedphase"], "windows": {"short": (0, 60), "medium":
    (72, 132), "long": (140, 216)}, "rule": "far" | "close" | "mean"}`` (these are the defaults):
    ``sample["gunw"]`` is then ``{field: (n_windows, H, W) float32, "pairs_available": (n_windows,)
    bool}``, a window without a pair in its baseline range being zeros; see
    ``m3leo_hf.transforms.DatePairs``; ``"order": "file"`` picks far/close as the upstream loader does,
    the first/last matching pair in file order); ``resize`` (int, (H, W) or per modality: resampling,
    bilinear with antialias, class maps nearest, mean-preserving for regression labels); ``transform``
    (a stage ``Chip -> Chip``, a list of them, or per modality: run after the built-in ones, see
    ``m3leo_hf.stages``); ``recipe`` (``"upstream"``: the upstream framework's loaders, ``m3leo_hf.upstream``;
    or ``{modality: [stage declarations]}``); ``stack`` (``{"x": [modalities]}``: also their outputs
    concatenated on channels); ``lonlat`` (upstream's virtual modality: ``sample["lonlat"]``, the chip centre
    ``[lon, lat]``). Selection (``m3leo_hf.selection.Selection``, on each region's ``metadata/chips.parquet``):
    ``chips`` (ids), ``where`` (a pyarrow expression such as ``pc.field("esaworldcover-2020_frac_10") > 0.5``,
    or a callable on the table), ``bbox`` (west, south, east, north): only the selected chips are planned
    (exact epochs over the selection) and only their byte ranges are read (``verify_checksums`` reads whole
    shards). ``roots`` may also be a ``StreamConfig`` holding every option.
    """
    return M3LEOStream(roots, modalities=modalities, **options)
