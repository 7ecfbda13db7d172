"""Read ahead: iterate a reading generator in a background thread, a bounded number of items ahead,
so the next samples' (and the next shard's) bytes are read while the current ones are decoded and
transformed. Reads release the GIL, so this overlaps I/O with work even in one process."""

from __future__ import annotations

import queue
import threading
from typing import Generator, Iterator, TypeVar

T = TypeVar("T")
_END = object()
POLL_S = 0.1


def read_ahead(items: Generator[T, None, None], depth: int) -> Iterator[T]:
    """``items``, produced up to ``depth`` ahead by a thread; its errors are raised here. Closing
    this iterator stops the thread, which closes ``items`` (its files) before this returns."""
    if depth < 1:
        yield from items
        return
    buffer: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(entry: tuple) -> bool:
        while not stop.is_set():
            try:
                buffer.put(entry, timeout=POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put((item, None)):
                    return
            put((_END, None))
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, raised there
            put((_END, exc))
        finally:
            items.close()

    thread = threading.Thread(target=produce, name="m3leo-read-ahead", daemon=True)
    thread.start()
    try:
        while True:
            item, error = buffer.get()
            if error is not None:
                raise error
            if item is _END:
                return
            yield item
    finally:
        stop.set()
        thread.join()
