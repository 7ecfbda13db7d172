"""Recycled receive buffers of remote chunk reads: reused only once nothing made of them is alive, never
overwriting a sample the caller kept; ``read_range`` into a given buffer."""

from __future__ import annotations

import gc
import os

import numpy as np
import pytest

from m3leo_hf.ranged import read_range
from m3leo_hf.receive_buffers import ReceiveBuffers


def address(array: np.ndarray) -> int:
    return array.__array_interface__["data"][0]


def test_a_buffer_is_reused_only_when_every_view_of_it_is_gone():
    pool = ReceiveBuffers(1 << 16, keep=2)
    first = pool.take(100)
    first[:] = 7
    kept = first[10:20].view(np.int16)  # a view of a view: it holds the buffer too
    where = address(first)
    del first
    gc.collect()
    assert pool.free() == 0
    second = pool.take(100)
    assert address(second) != where and (kept == np.int16(0x0707)).all()
    del kept
    gc.collect()
    assert pool.free() == 1
    assert address(pool.take(50)) == where


def test_the_pool_keeps_at_most_keep_free_buffers_and_refuses_what_does_not_fit():
    pool = ReceiveBuffers(4096, keep=2)
    taken = [pool.take(4096) for _ in range(4)]
    del taken
    gc.collect()
    assert pool.free() == 2
    assert pool.take(4097) is None and pool.take(0) is None


def test_read_range_into_a_buffer_returns_a_view_of_it(tmp_path):
    path = tmp_path / "bytes"
    path.write_bytes(bytes(range(256)) * 4)
    buffer = np.full(600, 255, dtype=np.uint8)
    got = read_range(str(path), 100, 500, buffer=buffer)
    assert got.base is buffer and bytes(got) == path.read_bytes()[100:600]
    with pytest.raises(OSError, match="ends after 24 of 500"):  # the source is short: named, not padded
        read_range(str(path), 1000, 500, buffer=buffer, retries=0)
    with pytest.raises(ValueError, match="cannot hold"):
        read_range(str(path), 0, 700, buffer=buffer)


def test_a_forked_child_gets_its_own_pool():
    from m3leo_hf import receive_buffers

    parent = receive_buffers.receive_buffer(10, 4096, 2)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe
        child = receive_buffers.receive_buffer(10, 4096, 2)
        os.write(write, b"1" if receive_buffers._POOL.pid == os.getpid() and child is not None else b"0")
        os._exit(0)
    os.waitpid(pid, 0)
    assert os.read(read, 1) == b"1" and parent is not None
