"""Prometheus metrics, with the official client library, served when `[metrics] listen` is set.

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
import threading
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.process_collector import ProcessCollector

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


class Server:
    """The /metrics endpoint on its own daemon thread."""

    def __init__(self, listen: str) -> None:
        host, _, port = listen.rpartition(":")
        self.listen = listen
        self._httpd: WSGIServer
        self._thread: threading.Thread
        self._httpd, self._thread = start_http_server(int(port), host.strip("[]"), REGISTRY)
        self._thread.name = "metrics"

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
    return server
