"""Prometheus metrics, with the official client library, served when `[metrics] listen` is set.

The same address serves the status page (`/` and `/status.json`, service/page.py); `/metrics`
is the Prometheus text, and any other path is a 404.

The metrics live in a registry of this module and always count (an increment costs next to
nothing); only the HTTP endpoint is optional. Every function here is safe to call whether or
not metrics are served, so the rest of thumbd calls them unconditionally:

    metrics.file_done(bytes_in, bytes_out, render_seconds)
    metrics.file_failed(reason)
    metrics.download_finished(seconds, outcome)     # for the URL downloader

Labels stay a small, fixed set: a failure's free-text reason becomes one of REASON_KINDS, a
download's outcome one of DOWNLOAD_OUTCOMES, so a flood of odd files cannot grow the series.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer
from prometheus_client.process_collector import ProcessCollector

if TYPE_CHECKING:
    from wsgiref.types import StartResponse

log = logging.getLogger("thumbd.metrics")

REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)  # process_resident_memory_bytes, cpu seconds, open fds

# (prefix of the reason text, kind). First match wins; anything else is "other".
_REASONS: tuple[tuple[str, str], ...] = (
    ("too large", "too_large"),
    ("unsupported format", "unsupported"),
    ("cannot identify", "unsupported"),
    ("image file is truncated", "corrupt"),
    ("cannot decode", "corrupt"),
    ("empty file", "corrupt"),
    ("out of memory", "memory"),
    ("timed out", "timeout"),
    ("worker crashed", "crashed"),
    ("cannot write", "write"),
    ("unsafe output path", "write"),
    ("file not found", "unreadable"),
    ("permission denied", "unreadable"),
    ("not a regular file", "unreadable"),
    ("cannot open", "unreadable"),
    ("internal error", "internal"),
)
REASON_KINDS = tuple(sorted({kind for _, kind in _REASONS} | {"other"}))
DOWNLOAD_OUTCOMES = ("ok", "http_error", "network_error", "too_large", "refused", "other")

FILES_DONE = Counter("thumbd_files_done", "Sources rendered and written", registry=REGISTRY)
FILES_FAILED = Counter(
    "thumbd_files_failed", "Sources recorded failed, by kind of reason", ["reason"],
    registry=REGISTRY,
)  # fmt: skip
BYTES_IN = Counter("thumbd_bytes_in", "Bytes of sources rendered", registry=REGISTRY)
BYTES_OUT = Counter("thumbd_bytes_out", "Bytes of thumbnails written", registry=REGISTRY)
MOVED = Counter(
    "thumbd_sources_moved", "Sources whose thumbnails followed them to a new path, not rendered",
    registry=REGISTRY,
)  # fmt: skip
REUSED = Counter(
    "thumbd_sources_reused", "Sources given the thumbnails of a copy already done, not rendered",
    registry=REGISTRY,
)  # fmt: skip
QUEUE_DEPTH = Gauge(
    "thumbd_queue_depth", "Files waiting: settling plus ready to render", registry=REGISTRY
)
IN_FLIGHT = Gauge("thumbd_in_flight", "Files handed to the worker pool", registry=REGISTRY)
RENDER_SECONDS = Histogram(
    "thumbd_render_seconds",
    "CPU seconds a worker spent rendering one source",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
    registry=REGISTRY,
)
POOL_RESTARTS = Counter(
    "thumbd_pool_restarts", "Workers replaced after a crash or a timeout", registry=REGISTRY
)
HEALTHY = Gauge(
    "thumbd_healthy", "1 while the observer and the pool are healthy", registry=REGISTRY
)
DOWNLOAD_SECONDS = Histogram(
    "thumbd_download_seconds",
    "Seconds one URL took to download",
    buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
    registry=REGISTRY,
)
DOWNLOADS = Counter(
    "thumbd_downloads", "URLs downloaded, by outcome", ["outcome"], registry=REGISTRY
)

for _kind in REASON_KINDS:  # every series exists from the start, at 0
    FILES_FAILED.labels(reason=_kind)
for _outcome in DOWNLOAD_OUTCOMES:
    DOWNLOADS.labels(outcome=_outcome)


def reason_kind(reason: str) -> str:
    """The bounded label for a failure's free-text reason."""
    lowered = reason.lower()
    for prefix, kind in _REASONS:
        if lowered.startswith(prefix):
            return kind
    return "other"


def source_moved(n: int = 1) -> None:
    MOVED.inc(n)


def source_reused() -> None:
    REUSED.inc()


def file_done(bytes_in: int, bytes_out: int, render_seconds: float) -> None:
    FILES_DONE.inc()
    BYTES_IN.inc(bytes_in)
    BYTES_OUT.inc(bytes_out)
    RENDER_SECONDS.observe(render_seconds)


def file_failed(reason: str) -> None:
    FILES_FAILED.labels(reason=reason_kind(reason)).inc()


def download_finished(seconds: float, outcome: str) -> None:
    """One URL fetched (or not): `outcome` is one of DOWNLOAD_OUTCOMES, else counted as other."""
    DOWNLOAD_SECONDS.observe(seconds)
    DOWNLOADS.labels(outcome=outcome if outcome in DOWNLOAD_OUTCOMES else "other").inc()


def set_load(queue_depth: int, in_flight: int) -> None:
    QUEUE_DEPTH.set(queue_depth)
    IN_FLIGHT.set(in_flight)


# What the endpoint serves beside /metrics: (status line, headers, body) for a path, or None
# for "no such page". The daemon sets it (service/page.py); without it only /metrics answers.
Response = tuple[str, list[tuple[str, str]], bytes]
Pages = Callable[[str], Response | None]
_pages: Pages | None = None


def set_pages(pages: Pages | None) -> None:
    """Serve `pages` beside /metrics, on the same address (the status page)."""
    global _pages
    _pages = pages


def _app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    path = environ.get("PATH_INFO") or "/"
    if path == "/metrics":
        metrics: Iterable[bytes] = _METRICS_APP(environ, start_response)
        return metrics
    pages = _pages
    found = pages(path) if pages is not None else None
    if found is None:
        text = [("Content-Type", "text/plain; charset=utf-8")]
        found = ("404 Not Found", text, b"not found: try /metrics\n")
    status, headers, body = found
    start_response(
        status,
        [
            *headers,
            ("Content-Length", str(len(body))),
            ("Cache-Control", "no-store"),
            ("X-Content-Type-Options", "nosniff"),
        ],
    )
    return [body]


_METRICS_APP = make_wsgi_app(REGISTRY)


class _Server(ThreadingWSGIServer):
    """One thread per request, as prometheus_client's own server: a slow reader of the status
    page never holds up a scrape."""


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass  # no line per request on stderr (the journal)


class Server:
    """/metrics, and the pages set with set_pages, on their own daemon thread."""

    def __init__(self, listen: str) -> None:
        host, _, port = listen.rpartition(":")
        self.listen = listen
        family, _, _, _, address = socket.getaddrinfo(
            host.strip("[]"), int(port), type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        server_class = type("_Server", (_Server,), {"address_family": family})
        self._httpd: WSGIServer = make_server(
            str(address[0]), int(port), _app, server_class, handler_class=_QuietHandler
        )
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name="metrics", daemon=True
        )
        self._thread.start()

    @property
    def port(self) -> int:
        return int(self._httpd.server_port)

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


def serve(listen: str) -> Server | None:
    """Start the endpoint for `listen` ("" = off). Raises OSError if the address is taken."""
    if not listen:
        return None
    server = Server(listen)
    host = listen.rpartition(":")[0]
    log.info("metrics on http://%s:%d/metrics", host, server.port)
    if _pages is not None:
        log.info("status page on http://%s:%d/", host, server.port)
    return server
