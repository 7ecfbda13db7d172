"""A static HTTP server on 127.0.0.1 over a folder that honours ``Range: bytes=a-b`` / ``bytes=a-`` and counts
the body bytes it sends per file: what a reader really fetched."""

from __future__ import annotations

import re
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit


class ByteServer:
    def __init__(self, folder: Path):
        self.folder = Path(folder).resolve()
        self.sent: Counter[str] = Counter()
        self.requests: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):  # noqa: N802 - stdlib naming
                relative = unquote(urlsplit(self.path).path).lstrip("/")
                path = (server.folder / relative).resolve()
                if server.folder not in path.parents or not path.is_file():
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                size = path.stat().st_size
                header = self.headers.get("Range", "")
                match = re.fullmatch(r"bytes=(\d+)-(\d*)", header.strip())
                start, end = (int(match.group(1)), min(int(match.group(2) or size - 1) + 1, size)) if match else (0, size)
                self.send_response(206 if match else 200)
                if match:
                    self.send_header("Content-Range", f"bytes {start}-{end - 1}/{size}")
                self.send_header("Content-Length", str(end - start))
                self.end_headers()
                with server._lock:
                    server.requests.append((relative, header))
                with path.open("rb") as handle:
                    handle.seek(start)
                    remaining = end - start
                    try:
                        while remaining:
                            chunk = handle.read(min(1 << 16, remaining))
                            with server._lock:  # counted before sending: a client never sees a stale count
                                server.sent[relative] += len(chunk)
                            self.wfile.write(chunk)
                            remaining -= len(chunk)
                    except (BrokenPipeError, ConnectionResetError):
                        pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> ByteServer:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def reset(self) -> None:
        with self._lock:
            self.sent.clear()
            self.requests.clear()
