"""A static HTTP/1.1 server on 127.0.0.1 over a folder that answers every request ``delay_s`` late (a remote
bucket or the Hub seen from far away; 0 for none). Honours ``Range: bytes=a-b`` / ``bytes=a-`` and ``HEAD``,
and records what a reader really fetched: ``requests`` (path, Range header) and ``sent`` body bytes per path."""

from __future__ import annotations

import os
import re
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

RANGE = re.compile(r"bytes=(\d+)-(\d*)")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # the stdlib's 5 drops connections of parallel readers: 1 s SYN retries


class DelayedServer:
    """``with DelayedServer(folder, 0.05) as server: server.url``."""

    def __init__(self, folder: Path, delay_s: float = 0.0):
        self.folder, self.delay_s = Path(folder).resolve(), delay_s
        self.requests: list[tuple[str, str]] = []
        self.sent: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._server = _Server(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> "DelayedServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def reset(self) -> None:
        with self._lock:
            self.sent.clear()
            self.requests.clear()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def do_HEAD(self) -> None:  # noqa: N802 - stdlib naming
                self._answer(body=False)

            def do_GET(self) -> None:  # noqa: N802
                self._answer(body=True)

            def _answer(self, body: bool) -> None:
                time.sleep(server.delay_s)
                relative = unquote(urlsplit(self.path).path).lstrip("/")
                path = (server.folder / relative).resolve()
                if server.folder not in path.parents or not path.is_file():
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                size = path.stat().st_size
                match = RANGE.fullmatch(self.headers.get("Range", "").strip())
                start, end = (int(match.group(1)), min(int(match.group(2) or size - 1) + 1, size)) if match else (0, size)
                self.send_response(206 if match else 200)
                if match:
                    self.send_header("Content-Range", f"bytes {start}-{end - 1}/{size}")
                self.send_header("Accept-Ranges", "bytes")
                self.send_header("Content-Length", str(max(end - start, 0)))
                self.end_headers()
                with server._lock:
                    server.requests.append((relative, self.headers.get("Range", "")))
                if not body:
                    return
                with server._lock:  # counted before sending: a client never sees a stale count
                    server.sent[relative] += end - start
                with path.open("rb") as handle:  # sent from the page cache by the kernel, as a static file server does
                    position = start
                    try:
                        while position < end:
                            count = os.sendfile(self.connection.fileno(), handle.fileno(), position, end - position)
                            if not count:  # the file shrank under the server
                                break
                            position += count
                    except (BrokenPipeError, ConnectionResetError):
                        pass
                    if position < end:
                        with server._lock:
                            server.sent[relative] -= end - position

        return Handler
