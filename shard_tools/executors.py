"""Run independent, picklable tasks inline, on a local process pool or on a dask.distributed cluster."""

from __future__ import annotations

import functools
import logging
from concurrent.futures import ProcessPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from multiprocessing import get_context
from typing import Any, Callable, Iterator, Sequence, TypeVar

EXECUTORS = ("local", "dask")
T = TypeVar("T")


@dataclass(frozen=True)
class Executor:
    """Where tasks run.

    ``local``: inline with one worker, else a spawn process pool of ``workers``. ``dask``: the cluster whose
    scheduler listens at ``scheduler``, or a LocalCluster of ``workers`` single-threaded processes started
    for the run. ``after`` (picklable) runs in the worker on each task right after the task function.
    """

    kind: str = "local"
    workers: int = 1
    scheduler: str | None = None
    after: Callable[[Any], None] | None = None

    def __post_init__(self) -> None:
        if self.kind not in EXECUTORS:
            raise ValueError(f"executor {self.kind!r} not in {EXECUTORS}")
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")
        if self.scheduler and self.kind != "dask":
            raise ValueError("a scheduler address needs the dask executor")

    @property
    def in_process(self) -> bool:
        """True when tasks run in the calling process."""
        return self.kind == "local" and self.workers == 1


def as_executor(executor: str | Executor, workers: int = 1) -> Executor:
    """``executor`` itself, or an :class:`Executor` of that kind with ``workers`` workers."""
    return executor if isinstance(executor, Executor) else Executor(executor, workers)


@contextmanager
def task_runner(executor: Executor) -> Iterator[Callable[[Callable[[T], Any], Sequence[T]], Iterator[T]]]:
    """A ``run(func, tasks)`` for the block: it runs ``func(task)`` then ``executor.after(task)`` for every task
    and yields each task once both returned, reusing one process pool or dask client, started on first need.

    Local runs yield in task order, dask runs in completion order. A failing task raises its exception
    here; tasks not yet started are cancelled.
    """
    with ExitStack() as stack:
        backend: list = []

        def run(func: Callable[[T], Any], tasks: Sequence[T]) -> Iterator[T]:
            call = functools.partial(_call, func, executor.after)
            if executor.kind == "local" and (executor.workers == 1 or len(tasks) <= 1):
                for task in tasks:
                    call(task)
                    yield task
                return
            if not tasks:
                return
            if not backend:
                backend.append(stack.enter_context(_open(executor)))
            yield from (_run_dask if executor.kind == "dask" else _run_pool)(backend[0], call, list(tasks))

        yield run


def _call(func: Callable[[T], Any], after: Callable[[T], None] | None, task: T) -> None:
    func(task)
    if after is not None:
        after(task)


@contextmanager
def _open(executor: Executor) -> Iterator[Any]:
    """A spawn process pool, or a dask client (of a LocalCluster started here when no scheduler is given)."""
    if executor.kind == "local":
        with ProcessPoolExecutor(max_workers=executor.workers, mp_context=get_context("spawn")) as pool:
            yield pool
        return
    from dask.distributed import Client, LocalCluster

    with ExitStack() as stack:
        if executor.scheduler:
            client = stack.enter_context(Client(executor.scheduler, set_as_default=False))
        else:
            cluster = stack.enter_context(LocalCluster(
                n_workers=executor.workers, threads_per_worker=1, processes=True,
                dashboard_address=None, silence_logs=logging.ERROR))
            client = stack.enter_context(Client(cluster, set_as_default=False))
        yield client


def _run_pool(pool: ProcessPoolExecutor, call: Callable[[T], None], tasks: list[T]) -> Iterator[T]:
    for task, _ in zip(tasks, pool.map(call, tasks)):
        yield task


def _run_dask(client: Any, call: Callable[[T], None], tasks: list[T]) -> Iterator[T]:
    from dask.distributed import as_completed

    futures = client.map(call, tasks, pure=False)
    owner = {future.key: task for future, task in zip(futures, tasks)}
    try:
        for future in as_completed(futures, loop=client.loop):
            future.result()
            yield owner[future.key]
    finally:
        client.cancel(futures)
