"""A real HTTP server on 127.0.0.x for the download tests, with scripted misbehaviour.

Each path has a route that says how to answer its n-th request: an image, a status, a redirect,
a slow or endless body, no answer at all. The server counts what it sees, on its side of the
wire: requests per path (with their times and Host headers), connections accepted, and the most
requests and connections it had open at once.

HTTP/1.1 with keep-alive, so a client that reuses connections can. `close()` ends everything,
including handlers that are waiting on purpose, so tests never hang on teardown.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class Route:
    def serve(self, h: Handler, n: int) -> None:
        raise NotImplementedError


@dataclass
class Body(Route):
    data: bytes
    content_type: str = "image/jpeg"
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)

    def serve(self, h: Handler, n: int) -> None:
        h.send_response(self.status)
        h.send_header("Content-Type", self.content_type)
        h.send_header("Content-Length", str(len(self.data)))
        for k, v in self.headers.items():
            h.send_header(k, v)
        h.end_headers()
        h.wfile.write(self.data)


def status(code: int, **headers: str) -> Body:
    return Body(f"status {code}\n".encode(), "text/plain", code, dict(headers))


@dataclass
class Steps(Route):
    """The n-th request gets the n-th route; the last one repeats."""

    steps: list[Route]

    def serve(self, h: Handler, n: int) -> None:
        self.steps[min(n, len(self.steps)) - 1].serve(h, n)


@dataclass
class Redirect(Route):
    location: str
    code: int = 302

    def serve(self, h: Handler, n: int) -> None:
        status(self.code, Location=self.location).serve(h, n)


@dataclass
class Slow(Route):
    """The body in `parts` pieces with a pause before each."""

    data: bytes
    parts: int = 10
    pause: float = 0.1

    def serve(self, h: Handler, n: int) -> None:
        h.send_response(200)
        h.send_header("Content-Type", "image/jpeg")
        h.send_header("Content-Length", str(len(self.data)))
        h.end_headers()
        step = -(-len(self.data) // self.parts)
        for i in range(0, len(self.data), step):
            if h.server.closing.wait(self.pause):  # type: ignore[attr-defined]
                return
            h.wfile.write(self.data[i : i + step])
            h.wfile.flush()


@dataclass
class Endless(Route):
    """A JPEG header, then zeros until the client hangs up. No Content-Length."""

    def serve(self, h: Handler, n: int) -> None:
        h.send_response(200)
        h.send_header("Content-Type", "image/jpeg")
        h.send_header("Connection", "close")
        h.end_headers()
        h.close_connection = True
        h.wfile.write(b"\xff\xd8\xff\xe0" + b"\0" * 60)
        chunk = b"\0" * 65536
        with contextlib.suppress(OSError):
            while not h.server.closing.is_set():  # type: ignore[attr-defined]
                h.wfile.write(chunk)


@dataclass
class Trickle(Route):
    """A byte every `pause` seconds until the client hangs up: in the body after a JPEG's first
    bytes, or (`in_headers`) in a header line that never ends."""

    pause: float = 0.2
    in_headers: bool = False

    def serve(self, h: Handler, n: int) -> None:
        h.close_connection = True
        if self.in_headers:
            h.wfile.write(b"HTTP/1.1 200 OK\r\nX-Wait: ")
            unit = b"w"
        else:
            h.send_response(200)
            h.send_header("Content-Type", "image/jpeg")
            h.send_header("Connection", "close")
            h.end_headers()
            h.wfile.write(b"\xff\xd8\xff\xe0" + b"\0" * 60)
            unit = b"\0"
        with contextlib.suppress(OSError):
            h.wfile.flush()
            while not h.server.closing.wait(self.pause):  # type: ignore[attr-defined]
                h.wfile.write(unit)
                h.wfile.flush()


@dataclass
class HeadersOnly(Route):
    """A 200 with its headers (and a length), then nothing: the body never comes."""

    def serve(self, h: Handler, n: int) -> None:
        h.send_response(200)
        h.send_header("Content-Type", "image/jpeg")
        h.send_header("Content-Length", "100000")
        h.end_headers()
        h.wfile.flush()
        h.server.closing.wait()  # type: ignore[attr-defined]
        h.close_connection = True


@dataclass
class CutBody(Route):
    """Declares `length` bytes, sends the first `sent` of `data`, and closes the connection."""

    data: bytes
    sent: int = 1000

    def serve(self, h: Handler, n: int) -> None:
        h.send_response(200)
        h.send_header("Content-Type", "image/jpeg")
        h.send_header("Content-Length", str(len(self.data)))
        h.end_headers()
        h.wfile.write(self.data[: self.sent])
        h.wfile.flush()
        h.close_connection = True


def gzip_bomb(inflated: int) -> bytes:
    """A gzip stream of a JPEG's first bytes and then `inflated` zero bytes (about a thousand
    times smaller than what it inflates to), made in pieces so the test never holds it whole."""
    import zlib

    packer = zlib.compressobj(9, zlib.DEFLATED, 31)  # 31: the gzip container
    parts = [packer.compress(b"\xff\xd8\xff\xe0" + b"\0" * 60)]
    zeros = b"\0" * (1 << 20)
    for _ in range(inflated // len(zeros)):
        parts.append(packer.compress(zeros))
    parts.append(packer.flush())
    return b"".join(parts)


@dataclass
class Silent(Route):
    """Reads the request and never answers."""

    def serve(self, h: Handler, n: int) -> None:
        h.server.closing.wait()  # type: ignore[attr-defined]
        h.close_connection = True


@dataclass
class Gate(Route):
    """Answers with `body` once the test opens the gate."""

    body: Route
    opened: threading.Event = field(default_factory=threading.Event)

    def serve(self, h: Handler, n: int) -> None:
        server = h.server
        while not self.opened.wait(0.05):
            if server.closing.is_set():  # type: ignore[attr-defined]
                return
        self.body.serve(h, n)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 10  # an idle keep-alive connection is closed after this long
    server: Server

    def setup(self) -> None:
        super().setup()
        self.server.connection_opened(self.connection)

    def finish(self) -> None:
        with contextlib.suppress(OSError):
            super().finish()
        self.server.connection_closed(self.connection)

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        n = self.server.request_started(path, self.headers.get("Host", ""))
        if self.server.tally is not None:
            self.server.tally.started()
        self.server.agents.add(self.headers.get("User-Agent", ""))
        self.server.encodings.append(self.headers.get("Accept-Encoding", ""))
        try:
            if self.server.hold:
                time.sleep(self.server.hold)  # widen the window in which requests overlap
        finally:
            self.server.request_answered()
            if self.server.tally is not None:
                self.server.tally.answered()
        route = self.server.routes.get(path, status(404))
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            route.serve(self, n)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class Tally:
    """Requests in flight over several servers at once (the most there ever were)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.active = 0
        self.max_active = 0

    def started(self) -> None:
        with self.lock:
            self.active += 1
            self.max_active = max(self.max_active, self.active)

    def answered(self) -> None:
        with self.lock:
            self.active -= 1


class Server(ThreadingHTTPServer):
    daemon_threads = False
    block_on_close = True

    def __init__(
        self,
        host: str = "127.0.0.1",
        hold: float = 0.0,
        *,
        port: int = 0,
        tls: ssl.SSLContext | None = None,
        idle_timeout: float = 10.0,
        tally: Tally | None = None,
    ) -> None:
        handler = type("Handler", (Handler,), {"timeout": idle_timeout})
        super().__init__((host, port), handler)
        self.host = host
        self.port = self.server_address[1]
        self.hold = hold
        self.tally = tally
        self.server_names: list[str | None] = []  # TLS SNI, as the client sent it
        if tls is not None:
            tls.sni_callback = self._sni
            self.socket = tls.wrap_socket(self.socket, server_side=True)
        self.routes: dict[str, Route] = {}
        self.closing = threading.Event()
        self.lock = threading.Lock()
        self.counts: Counter[str] = Counter()
        self.times: dict[str, list[float]] = {}
        self.hosts: list[str] = []
        self.agents: set[str] = set()
        self.encodings: list[str] = []  # Accept-Encoding of each request
        self.connections = 0
        self.open: set[socket.socket] = set()
        self.max_open = 0
        self.active = 0
        self.max_active = 0
        self._thread = threading.Thread(target=self.serve_forever, name="http-server")

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients hang up on purpose in these tests (cut bodies, timeouts, cancels)

    def url(self, path: str, host: str | None = None) -> str:
        scheme = "https" if isinstance(self.socket, ssl.SSLSocket) else "http"
        return f"{scheme}://{host or self.host}:{self.port}{path}"

    def _sni(self, sock: ssl.SSLObject, name: str | None, ctx: ssl.SSLContext) -> None:
        with self.lock:
            self.server_names.append(name)

    def __enter__(self) -> Server:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.closing.set()
        self.shutdown()
        self._thread.join()
        with self.lock:
            conns = list(self.open)
        for c in conns:  # wake handlers blocked reading an idle keep-alive connection
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)
        self.server_close()

    # -- accounting, from the handler threads ------------------------------------------------

    def connection_opened(self, conn: socket.socket) -> None:
        with self.lock:
            self.connections += 1
            self.open.add(conn)
            self.max_open = max(self.max_open, len(self.open))

    def connection_closed(self, conn: socket.socket) -> None:
        with self.lock:
            self.open.discard(conn)

    def request_started(self, path: str, host: str) -> int:
        with self.lock:
            self.counts[path] += 1
            self.times.setdefault(path, []).append(time.monotonic())
            self.hosts.append(host)
            self.active += 1
            self.max_active = max(self.max_active, self.active)
            return self.counts[path]

    def request_answered(self) -> None:
        with self.lock:
            self.active -= 1

    def total_requests(self) -> int:
        with self.lock:
            return sum(self.counts.values())


@contextlib.contextmanager
def serving(host: str = "127.0.0.1", hold: float = 0.0, **kw: Any) -> Iterator[Server]:
    with Server(host, hold, **kw) as server:
        yield server
