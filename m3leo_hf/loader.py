"""``StatefulLoader``: a DataLoader over an ``M3LEOStream`` whose position is checkpointable.

The state is ``(epoch, batches this rank has consumed)``, counted in the main process. On
resume the stream maps that count back through the DataLoader's round-robin over workers
(``planning.resume``), so the remaining batches come out exactly as they would have.
With 2+ workers and batches, every worker reads an equal share of the epoch: the last
``batches % num_workers`` batches are read in equal parts by all workers and joined here
(``planning.split_tail``). Resuming needs the same seed, world size, batch size and
``num_workers``. One DataLoader serves
every epoch, so ``persistent_workers=True`` keeps its workers (they start each epoch from the
position the stream shares with them); ``pin_memory`` and ``prefetch_factor`` pass through.
"""

from __future__ import annotations

from typing import Iterator, Mapping

import torch
from torch.utils.data import DataLoader

from m3leo_hf.collate import TAIL_PART, tail_batches
from m3leo_hf.dataset import M3LEOStream
from m3leo_hf.recycle import SLOT_KEY, Holds, hold, tensors
from m3leo_hf.tail_arena import TailArena


def _as_is(item: dict) -> dict:
    """The stream's items are tensors already: no ``default_convert`` walk over every sample's metadata."""
    return item


class StatefulLoader:
    """Iterate ``dataset`` through a ``DataLoader(batch_size=None, in_order=True)``; extra keyword
    arguments (``num_workers``, ``pin_memory``, ``prefetch_factor``...) go to the DataLoader. ``recycle``:
    workers (or this process, with 0 workers) reuse a few buffer sets for full batches, each once all memory of
    its previous batch is gone here: every tensor, view, ``.numpy()`` array, storage or DLPack capsule of it
    (``m3leo_hf.recycle``); workers write the tail parts of an epoch's last batches at their rows of one shared
    file, mapped here as the joined batch (``m3leo_hf.tail_arena``). Only a raw pointer (``data_ptr()``) kept
    past the batch is not seen: copy the data, or pass ``recycle=False``."""

    def __init__(self, dataset: M3LEOStream, *, num_workers: int = 0, recycle: bool = True, **loader_options):
        fixed = sorted(set(loader_options) & {"batch_size", "batch_sampler", "sampler", "shuffle", "in_order",
                                              "collate_fn"})
        if fixed:
            raise ValueError(f"StatefulLoader fixes {fixed}; batch and shuffle with the stream's options")
        self.dataset, self.num_workers, self.options = dataset, num_workers, loader_options
        self.epoch, self.batches = dataset.epoch, 0
        self._loader: DataLoader | None = None
        self._arenas: tuple[TailArena, ...] = ()
        self._holds = Holds()  # recycled slots and tail arenas waiting for their batches to be gone
        dataset.split_tail = num_workers > 1
        dataset.recycle = recycle  # see m3leo_hf.recycle

    def __len__(self) -> int:
        return len(self.dataset)

    def set_epoch(self, epoch: int) -> None:
        """Select ``epoch``; a no-op when it is the current epoch (keeps a loaded position)."""
        if epoch != self.epoch:
            self.epoch, self.batches = epoch, 0

    def state_dict(self) -> dict:
        return {**self.dataset.state_dict(), "epoch": self.epoch, "batches": self.batches,
                "num_workers": self.num_workers}

    def load_state_dict(self, state: Mapping) -> None:
        if state.get("num_workers", self.num_workers) != self.num_workers:
            raise ValueError(f"cannot resume: state has num_workers={state['num_workers']}, "
                             f"this loader {self.num_workers}")
        self.dataset.load_state_dict(state)
        self.epoch, self.batches = int(state["epoch"]), int(state["batches"])

    def __iter__(self) -> Iterator:
        self.dataset.load_state_dict({"epoch": self.epoch, "batches": self.batches})
        if self._loader is None:
            self._loader = DataLoader(self.dataset, batch_size=None, num_workers=self.num_workers,
                                      collate_fn=_as_is, **self.options)
        plan = self.dataset.plan(self.epoch, max(self.num_workers, 1))
        skip = max(0, self.batches - sum(plan.worker_batches))  # tail batches already consumed
        if self.dataset.recycle and self.num_workers > 1 and (not self._arenas or not self.options.get("persistent_workers")):
            self._arenas = self.dataset.tail_arenas = TailArena.pair()  # before the workers fork (below)
        parts: list[dict] = []
        pin = bool(self.options.get("pin_memory")) and torch.accelerator.is_available()
        self._holds.poll()
        for batch in self._loader:
            self._holds.poll()
            if SLOT_KEY in batch:  # released for reuse once the batch's memory is gone
                batch = hold(batch, self.dataset._recycle_flags, pin, self._holds)
            if TAIL_PART not in batch:
                self.batches += 1
                yield batch
                self._holds.poll()  # what the caller dropped before asking for the next batch
                continue
            parts.append(batch)
            if len(parts) == plan.tail_parts:
                joined, arena = tail_batches(parts, plan.batch_size, pin)
                parts.clear()
                if arena is not None:  # mapped from the arena: workers may write it again once all are gone
                    arena.flag[0] = 1
                    self._holds.add([t for batch in joined for t in tensors(batch)], arena.release)
                for batch in joined[skip:]:
                    self.batches += 1
                    yield batch
                    self._holds.poll()
                del joined, batch
        self.epoch, self.batches = self.epoch + 1, 0
