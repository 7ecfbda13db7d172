"""Read ahead: iterate a reading generator in a background thread, a bounded number of items ahead,
so the next samples' (and the next shard's) bytes are read while the current ones are decoded and
transformed. Reads release the GIL, so this overlaps I/O with work even in one process. The thread
starts when ``read_ahead`` is called, so a stream can start the next epoch's reads before it begins."""

from __future__ import annotations

import queue
import threading
from typing import Generator, Iterator, TypeVar

T = TypeVar("T")
_END = object()
POLL_S = 0.1


class ReadAhead(Iterator[T]):
    """``items``, produced up to ``depth`` ahead by a thread started now; its errors are raised here.
    ``close()`` stops the thread, which closes ``items`` (its files) before it returns."""

    def __init__(self, items: Generator[T, None, None], depth: int):
        self._items, self._buffer, self._stop = items, queue.Queue(maxsize=depth), threading.Event()
        self._done = False
        self._thread = threading.Thread(target=self._produce, name="m3leo-read-ahead", daemon=True)
        self._thread.start()

    def _put(self, entry: tuple) -> bool:
        while not self._stop.is_set():
            try:
                self._buffer.put(entry, timeout=POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def _produce(self) -> None:
        try:
            for item in self._items:
                if not self._put((item, None)):
                    return
            self._put((_END, None))
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, raised there
            self._put((_END, exc))
        finally:
            self._items.close()

    def __next__(self) -> T:
        if self._done:
            raise StopIteration
        item, error = self._buffer.get()
        if error is not None or item is _END:
            self.close()
            if error is not None:
                raise error
            raise StopIteration
        return item

    def close(self) -> None:
        self._done = True
        self._stop.set()
        self._thread.join()


def read_ahead(items: Generator[T, None, None], depth: int) -> Iterator[T]:
    """``items`` read ``depth`` ahead by a ``ReadAhead`` thread, or ``items`` itself when ``depth < 1``."""
    return ReadAhead(items, depth) if depth >= 1 else items
