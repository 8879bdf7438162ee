"""The downloader's sockets and connections: pinned to a checked address, bounded in time.

- `PinnedHTTP` / `PinnedHTTPS` connect to the one address the policy checked, whatever DNS says
  later; the Host header, TLS SNI and the certificate check still use the URL's host name.
- `Connections` keeps idle keep-alive connections for the next URL of the same host, bounded.
- `Sockets` knows every open socket, so that a shutdown can wake every blocked read.
- `Deadline` is one URL's total time (`total_timeout`): a server that trickles a byte now and
  then, in its headers or its body, is cut off then.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import ssl
import threading
import time

from thumbd.downloads.outcomes import Failure, Limits
from thumbd.downloads.policy import IPAddress

IDLE_SECONDS = 15.0  # an idle keep-alive connection older than this is closed, not reused


class Sockets:
    """Every open socket of the downloader, so that a shutdown can abort blocked reads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        # Sockets fetches are using. http.client "closes" a connection whose response ends with
        # the connection (Connection: close, or no length) and reads that body from the socket
        # it handed to the response: closed for _open, but still the one a read blocks on.
        self._in_use: set[socket.socket] = set()
        self.cancelled = threading.Event()

    def use(self, sock: socket.socket, instead_of: socket.socket | None = None) -> None:
        with self._lock:
            if instead_of is not None:
                self._in_use.discard(instead_of)
            self._in_use.add(sock)
        if self.cancelled.is_set():
            _abort(sock)

    def done_with(self, sock: socket.socket | None) -> None:
        if sock is not None:
            with self._lock:
                self._in_use.discard(sock)

    def add(self, sock: socket.socket) -> None:
        with self._lock:
            self._open.add(sock)
        if self.cancelled.is_set():
            _abort(sock)

    def discard(self, sock: socket.socket | None) -> None:
        if sock is not None:
            with self._lock:
                self._open.discard(sock)

    def cancel(self) -> None:
        """Wake every thread blocked on the network; they then return Cancelled."""
        self.cancelled.set()
        with self._lock:
            socks = self._open | self._in_use
        for sock in socks:
            _abort(sock)


def _abort(sock: socket.socket) -> None:
    # The plain socket's shutdown, also on an SSLSocket: it wakes a blocked recv or connect in
    # another thread without touching the TLS state that thread is using.
    with contextlib.suppress(OSError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


class Deadline:
    """One URL's total time (every hop, headers and body). When it passes, the socket in use is
    shut down: that wakes a read however often the server sends a byte (a per-read timeout
    alone never fires for a server that trickles one byte every few seconds). It also tells
    `Sockets` which socket the fetch uses, so that a shutdown wakes that read too."""

    def __init__(self, seconds: float, sockets: Sockets) -> None:
        self.seconds = seconds
        self.expired = False
        self._sockets = sockets
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True
        self._timer.name = "download-deadline"
        self._timer.start()

    def watch(self, conn: http.client.HTTPConnection) -> None:
        """`conn` (connected) is in use from now on. Its socket is kept here: http.client drops
        it from the connection while the response to `Connection: close` is being read."""
        if conn.sock is None:
            return
        with self._lock:
            previous, self._sock = self._sock, conn.sock
            expired = self.expired
        self._sockets.use(conn.sock, instead_of=previous)  # a shutdown can wake it, too
        if expired:
            _abort(conn.sock)

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            sock = self._sock
        if sock is not None:
            _abort(sock)

    def cancel(self) -> None:
        self._timer.cancel()
        with self._lock:
            sock, self._sock = self._sock, None
        self._sockets.done_with(sock)

    def failure(self) -> Failure:
        return Failure(f"timed out: not complete within total_timeout ({self.seconds:g} s)")


def _open_socket(ip: IPAddress, port: int, limits: Limits, sockets: Sockets) -> socket.socket:
    family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sockets.add(sock)
    try:
        sock.settimeout(limits.connect_timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.connect((str(ip), port))
    except BaseException:
        sockets.discard(sock)
        sock.close()
        raise
    return sock


class PinnedHTTP(http.client.HTTPConnection):
    """An HTTP connection to one checked address, whatever DNS says later."""

    def __init__(
        self, host: str, port: int, ip: IPAddress, limits: Limits, sockets: Sockets
    ) -> None:
        super().__init__(host, port, timeout=limits.read_timeout)
        self.ip, self.limits, self.sockets = ip, limits, sockets
        self.idle_since = 0.0

    def connect(self) -> None:
        self.sock = _open_socket(self.ip, self.port, self.limits, self.sockets)
        self.sock.settimeout(self.limits.read_timeout)

    def close(self) -> None:
        self.sockets.discard(self.sock)
        super().close()


class PinnedHTTPS(http.client.HTTPSConnection):
    """The TLS variant: connects to the checked address, verifies the certificate and sends SNI
    for the URL's host name."""

    def __init__(
        self,
        host: str,
        port: int,
        ip: IPAddress,
        limits: Limits,
        sockets: Sockets,
        context: ssl.SSLContext,
    ) -> None:
        super().__init__(host, port, timeout=limits.read_timeout, context=context)
        self.ip, self.limits, self.sockets = ip, limits, sockets
        self.idle_since = 0.0

    def connect(self) -> None:
        raw = _open_socket(self.ip, self.port, self.limits, self.sockets)
        try:
            tls = self._context.wrap_socket(raw, server_hostname=self.host)  # type: ignore[attr-defined]
        except BaseException:
            self.sockets.discard(raw)
            raw.close()
            raise
        self.sockets.discard(raw)
        self.sockets.add(tls)
        tls.settimeout(self.limits.read_timeout)
        self.sock = tls

    def close(self) -> None:
        self.sockets.discard(self.sock)
        super().close()


Connection = PinnedHTTP | PinnedHTTPS


class Connections:
    """Idle keep-alive connections by (scheme, host, port). Each was opened to a checked
    address, so reusing one is as safe as opening it was.

    Bounded per key and in total, and an idle connection older than IDLE_SECONDS is closed at
    the next get or put: a manifest spread over a thousand hosts must not keep a thousand
    sockets open after its downloads are done.
    """

    def __init__(self, max_idle_per_host: int, max_idle: int = 32) -> None:
        self.max_per_key = max_idle_per_host
        self.max_idle = max_idle
        self._lock = threading.Lock()
        self._idle: dict[tuple[str, str, int], list[Connection]] = {}

    def get(self, key: tuple[str, str, int]) -> Connection | None:
        with self._lock:
            doomed = self._expire()
            conns = self._idle.get(key)
            found = conns.pop() if conns else None
        for conn in doomed:
            conn.close()
        return found

    def put(self, key: tuple[str, str, int], conn: Connection) -> None:
        conn.idle_since = time.monotonic()
        with self._lock:
            conns = self._idle.setdefault(key, [])
            conns.append(conn)
            doomed = conns[: -self.max_per_key] if len(conns) > self.max_per_key else []
            del conns[: len(doomed)]
            doomed += self._expire()
        for c in doomed:
            c.close()

    def idle(self) -> int:
        with self._lock:
            return sum(len(cs) for cs in self._idle.values())

    def close_all(self) -> None:
        with self._lock:
            conns = [c for cs in self._idle.values() for c in cs]
            self._idle.clear()
        for c in conns:
            c.close()

    def _expire(self) -> list[Connection]:
        """Take out stale connections, then the oldest beyond the total bound (lock held)."""
        cutoff = time.monotonic() - IDLE_SECONDS
        doomed: list[Connection] = []
        for key in list(self._idle):
            conns = self._idle[key]
            doomed += [c for c in conns if c.idle_since < cutoff]
            conns[:] = [c for c in conns if c.idle_since >= cutoff]
            if not conns:
                del self._idle[key]
        left = sorted((c for cs in self._idle.values() for c in cs), key=lambda c: c.idle_since)
        for conn in left[: max(0, len(left) - self.max_idle)]:
            for conns in self._idle.values():
                if conn in conns:
                    conns.remove(conn)
            doomed.append(conn)
        return doomed
