"""The static HTTP server on 127.0.0.1 of the benchmarks, without delay: it honours ``Range: bytes=a-b`` /
``bytes=a-`` and counts the body bytes it sends per file (``sent``) and its requests: what a reader really fetched."""

from __future__ import annotations

from benchmarks.delayed_server import DelayedServer as ByteServer

__all__ = ["ByteServer"]
