"""``M3LEODataModule``: M3LEO streams under Lightning (optional extra ``m3leo-hf[lightning]``).

Lightning stops an epoch after ``len(loader)`` batches and calls ``iter()`` again for the next one. The
loaders here position their stream at ``trainer.current_epoch`` on every ``iter()`` (``set_epoch``, so each
epoch has its own order), ``len`` is the batch count every rank yields (our exact DDP planning), and the
train loader's ``state_dict`` (saved by Lightning in each checkpoint) is the trainer's own count of the
batches it trained this epoch, so a run resumed from a mid-epoch checkpoint gets exactly the batches an
uninterrupted run would have seen next. The stream's order fingerprint travels with it: resuming with
other order options (seed, roots, shuffle_buffer, ...) is refused.
"""

from __future__ import annotations

import os
from typing import Any, Iterator, Mapping, Sequence

import lightning.pytorch as L

from m3leo_hf.dataset import M3LEOStream, stream
from m3leo_hf.loader import StatefulLoader
from m3leo_hf.presets import preset


class EpochLoader:
    """A ``StatefulLoader`` restarted at ``trainer.current_epoch`` on each ``iter()`` (validation, test)."""

    def __init__(self, loader: StatefulLoader, datamodule: L.LightningDataModule):
        self.loader, self.datamodule = loader, datamodule

    def __len__(self) -> int:
        return len(self.loader)

    def _epoch(self) -> int:
        trainer = self.datamodule.trainer
        return trainer.current_epoch if trainer is not None else self.loader.epoch

    def __iter__(self) -> Iterator:
        self.loader.load_state_dict({"epoch": self._epoch(), "batches": 0})
        return iter(self.loader)


class ResumableLoader(EpochLoader):
    """The train loader: its ``state_dict`` is (epoch, batches the trainer trained this epoch); after
    ``load_state_dict`` the next ``iter()`` in that epoch skips those batches."""

    def __init__(self, loader: StatefulLoader, datamodule: L.LightningDataModule):
        super().__init__(loader, datamodule)
        self._resume: Mapping | None = None

    def __iter__(self) -> Iterator:
        epoch = self._epoch()
        resume = self._resume if self._resume is not None and int(self._resume["epoch"]) == epoch else None
        batches = int(resume["batches"]) if resume else 0
        if batches and batches >= len(self.loader):  # saved on the epoch's last batch: that epoch is done
            epoch, batches = epoch + 1, 0
        if self._resume is not None and int(self._resume["epoch"]) <= self._epoch():
            self._resume = None  # used, or stale (saved in an epoch the trainer has left)
        self.loader.load_state_dict({"epoch": epoch, "batches": batches})
        return iter(self.loader)

    def state_dict(self) -> dict:
        trainer = self.datamodule.trainer
        progress = trainer.fit_loop.epoch_loop.batch_progress.current
        return {**self.loader.state_dict(), "epoch": trainer.current_epoch, "batches": progress.processed}

    def load_state_dict(self, state: Mapping) -> None:
        self.loader.load_state_dict(state)  # refuses other order options, world size or worker count
        self._resume = dict(state)


class M3LEODataModule(L.LightningDataModule):
    """Train/val/test streams of region ``roots``: an upstream experiment (``preset="baseline-esawc/s1grd-vv-vh"``)
    or ``modalities`` with ``stream`` options. ``stream_options`` go to ``m3leo_hf.preset``/``stream`` for every
    split (``split`` excepted), ``loader_options`` (``pin_memory``, ``prefetch_factor``...) to the DataLoader.
    Streams are created in ``setup`` (after Lightning starts the process group)."""

    def __init__(self, roots: str | os.PathLike | Sequence[str | os.PathLike], *, preset: str | None = None,
                 modalities: Sequence[str] | None = None, batch_size: int = 8, num_workers: int = 0,
                 splits: Mapping[str, str] | None = None, stream_options: Mapping[str, Any] | None = None,
                 loader_options: Mapping[str, Any] | None = None):
        super().__init__()
        if (preset is None) == (modalities is None):
            raise ValueError("give preset= or modalities=, not both or neither")
        self.roots = [os.fspath(r) for r in ([roots] if isinstance(roots, (str, os.PathLike)) else roots)]
        self.preset, self.modalities, self.batch_size, self.num_workers = preset, modalities, batch_size, num_workers
        self.splits = {"train": "train", "val": "val", "test": "test", **(splits or {})}
        self.stream_options, self.loader_options = dict(stream_options or {}), dict(loader_options or {})
        self.streams: dict[str, M3LEOStream] = {}
        self._loaders: dict[str, EpochLoader] = {}

    def make_stream(self, split: str) -> M3LEOStream:
        options = {"batch_size": self.batch_size, **self.stream_options, "split": self.splits[split]}
        if self.preset is not None:
            return preset(self.preset, self.roots, **options)
        return stream(self.roots, modalities=self.modalities, **options)

    def setup(self, stage: str | None = None) -> None:
        wanted = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",)}.get(stage or "fit", ("train", "val"))
        for split in wanted:
            if split not in self.streams:
                self.streams[split] = self.make_stream(split)

    def _loader(self, split: str, kind: type[EpochLoader]) -> EpochLoader:
        if split not in self._loaders:
            if split not in self.streams:
                self.streams[split] = self.make_stream(split)
            loader = StatefulLoader(self.streams[split], num_workers=self.num_workers, **self.loader_options)
            self._loaders[split] = kind(loader, self)
        return self._loaders[split]

    def train_dataloader(self) -> ResumableLoader:
        return self._loader("train", ResumableLoader)

    def val_dataloader(self) -> EpochLoader:
        return self._loader("val", EpochLoader)

    def test_dataloader(self) -> EpochLoader:
        return self._loader("test", EpochLoader)
