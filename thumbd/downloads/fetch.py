"""Fetch one URL safely into incoming/: the network side of the download stage.

Runs on a downloader thread; the main loop never calls it. What it guards against:

- Server-side request forgery. Only http and https. thumbd resolves the host itself, refuses
  loopback, private, link-local (cloud metadata), multicast, reserved and unspecified addresses
  (unless `allow_private_addresses`), then connects to exactly the address it checked: the
  connection is pinned, so DNS rebinding cannot swap the address between check and connect. The
  Host header, TLS SNI and the certificate check still use the URL's host name. Redirects are
  followed here, hop by hop, with the same checks on every hop.
- Unbounded resources: connect and read timeouts, a total deadline per URL (`total_timeout`:
  a server that trickles a byte now and then, in its headers or its body, is cut off then), a
  cap on the body (`max_bytes`), a cap on redirects, and the caller's per-host limit.
- Lies: the body must sniff as an image by its magic bytes; the Content-Type is only used to
  explain a refusal.
- Partial files: the body streams into a temporary file under incoming/.thumbd-downloads/
  (a dot folder, which the watcher and scans ignore) and is renamed into the manifest's folder
  only once complete and verified.

Failures are values (`Failure`) with a reason a person understands; only bugs raise.
Environment proxies (http_proxy) are ignored on purpose: a proxy would make the address check
meaningless.
"""

from __future__ import annotations

import contextlib
import errno
import http.client
import ipaddress
import os
import socket
import ssl
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from email.utils import parsedate_to_datetime
from http import HTTPStatus
from typing import IO
from urllib.parse import quote, urljoin, urlsplit

from thumbd.downloads.manifest import SCHEMES, check_url, host_ascii

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], list[str]]

TMP_DIR = ".thumbd-downloads"
CHUNK = 64 * 1024
SNIFF_BYTES = 32
REDIRECTS = frozenset({301, 302, 303, 307, 308})
IDLE_SECONDS = 15.0  # an idle keep-alive connection older than this is closed, not reused


# -- outcomes ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Downloaded:
    """The URL's body is complete, verified, and renamed to `file` (relative to incoming/)."""

    file: str
    size: int
    kind: str  # the sniffed extension: jpg, png, ...


@dataclass(frozen=True, slots=True)
class Failure:
    """The URL could not be fetched; `retry` says whether another attempt may help."""

    reason: str
    retry: bool = False
    retry_after: float | None = None  # seconds the server asked us to wait


@dataclass(frozen=True, slots=True)
class Cancelled:
    """Stopped by a shutdown: nothing was written, the URL stays pending."""


Result = Downloaded | Failure | Cancelled


@dataclass(frozen=True, slots=True)
class Limits:
    connect_timeout: float = 10.0
    read_timeout: float = 30.0
    max_bytes: int = 50_000_000
    max_redirects: int = 5
    user_agent: str = "thumbd"
    total_timeout: float = 300.0


class _Stop(Exception):
    """Ends an attempt with a result (raised and caught inside this module only)."""

    def __init__(self, result: Result) -> None:
        super().__init__(result)
        self.result = result


# -- addresses --------------------------------------------------------------------------------


def system_resolver(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def why_not_public(ip: IPAddress) -> str | None:
    """What kind of non-public address `ip` is, or None for a public one."""
    if isinstance(ip, ipaddress.IPv6Address):
        for embedded in (ip.ipv4_mapped, ip.sixtofour, ip.teredo and ip.teredo[1]):
            if embedded:
                kind = why_not_public(embedded)
                if kind is not None:
                    return kind
    checks = (
        (ip.is_loopback, "loopback"),
        (ip.is_link_local, "link-local"),
        (ip.is_multicast, "multicast"),
        (ip.is_unspecified, "unspecified"),
        (ip.is_reserved, "reserved"),
        (ip.is_private, "private"),
    )
    for hit, kind in checks:
        if hit:
            return kind
    return None if ip.is_global else "not globally routable"


class AddressPolicy:
    """Resolves a host and says which of its addresses may be connected to."""

    def __init__(
        self,
        *,
        allow_private: bool,
        resolver: Resolver = system_resolver,
        treat_as_public: frozenset[IPAddress] = frozenset(),
    ) -> None:
        self.allow_private = allow_private
        self.resolver = resolver
        self.treat_as_public = treat_as_public  # test-only (THUMBD_TEST_PUBLIC)

    def addresses(self, host: str, port: int) -> list[IPAddress]:
        """Every address of `host`, all checked; raises _Stop with a Failure otherwise."""
        try:
            found = [ipaddress.ip_address(a.split("%", 1)[0]) for a in self.resolver(host, port)]
        except socket.gaierror as e:
            temporary = e.errno in (socket.EAI_AGAIN, getattr(socket, "EAI_SYSTEM", None))
            raise _Stop(Failure(f"cannot resolve {host}: {e.strerror}", retry=temporary)) from None
        except (UnicodeError, ValueError) as e:
            raise _Stop(Failure(f"cannot resolve {host}: {e}")) from None
        if not found:
            raise _Stop(Failure(f"cannot resolve {host}: no addresses"))
        if not self.allow_private:
            for ip in found:  # one bad address refuses the name: it is playing games
                kind = why_not_public(ip) if ip not in self.treat_as_public else None
                if kind is not None:
                    shown = str(ip) if host == str(ip) else f"{host} is {ip}"
                    raise _Stop(Failure(f"refused: private address ({shown}, {kind})"))
        return found


# -- connections ------------------------------------------------------------------------------


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


class _Deadline:
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


class _HTTP(http.client.HTTPConnection):
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


class _HTTPS(http.client.HTTPSConnection):
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


Connection = _HTTP | _HTTPS


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


# -- one URL ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Target:
    """One hop: where to connect and what to ask for."""

    url: str
    scheme: str
    host: str  # as sent (IDNA), no brackets
    port: int
    path: str  # path and query, percent-encoded

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.scheme, self.host, self.port)

    @classmethod
    def parse(cls, url: str) -> Target:
        problem = check_url(url)
        if problem is not None:
            raise _Stop(Failure(problem))
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        assert parts.hostname is not None and scheme in SCHEMES
        port = parts.port or (443 if scheme == "https" else 80)
        path = quote(parts.path or "/", safe="/%;:@&=+$,!~*'()-._")
        if parts.query:
            path += "?" + quote(parts.query, safe="/%;:@&=+$,!~*'()-._?")
        return cls(url, scheme, host_ascii(parts.hostname), port, path)


def host_key(url: str) -> str:
    """What the per-host limit counts by: the host name, lower case."""
    try:
        return (urlsplit(url).hostname or "").lower()
    except ValueError:
        return ""


class HostSlot:
    """The per-host slot a fetch holds; a redirect to another host trades it for that host's."""

    def __init__(
        self,
        host: str,
        acquire: Callable[[str], bool],
        release: Callable[[str], None],
    ) -> None:
        self.host: str | None = host
        self._acquire, self._release = acquire, release

    def switch(self, host: str) -> bool:
        if host == self.host:
            return True
        self.release()
        if not self._acquire(host):  # shutting down
            return False
        self.host = host
        return True

    def release(self) -> None:
        if self.host is not None:
            self._release(self.host)
            self.host = None


@dataclass(frozen=True, slots=True)
class Destination:
    """Where a download goes: incoming/<folder>/<stem>.<sniffed extension>."""

    root: str  # incoming/
    folder: str  # relative to root
    stem: str


class Fetcher:
    """Fetches URLs for the downloader threads (it is shared by them: no per-call state)."""

    def __init__(
        self,
        limits: Limits,
        policy: AddressPolicy,
        root: str,
        sockets: Sockets,
        connections: Connections,
        *,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.limits = limits
        self.policy = policy
        self.root = root
        self.tmp = os.path.join(root, TMP_DIR)
        self.sockets = sockets
        self.connections = connections
        self.tls = tls or _tls_context()
        self._local = threading.local()  # the calling thread's _Deadline

    def fetch(self, url: str, dest: Destination, slot: HostSlot) -> Result:
        deadline = self._local.deadline = _Deadline(self.limits.total_timeout, self.sockets)
        try:
            return self._follow(url, dest, slot)
        finally:
            deadline.cancel()
            self._local.deadline = None

    def _follow(self, url: str, dest: Destination, slot: HostSlot) -> Result:
        seen = {url}
        for hop in range(self.limits.max_redirects + 1):
            result = self._hop(url, dest, slot)
            if isinstance(result, Failure) and hop > 0:
                return replace(result, reason=f"{result.reason} (redirected to {url})")
            if not isinstance(result, str):
                return result
            url = result
            if url in seen:
                return Failure(f"redirect loop (back to {url})")
            seen.add(url)
        return Failure(f"too many redirects (more than {self.limits.max_redirects})")

    def _expired(self) -> Failure | None:
        deadline: _Deadline | None = getattr(self._local, "deadline", None)
        return deadline.failure() if deadline is not None and deadline.expired else None

    def _hop(self, url: str, dest: Destination, slot: HostSlot) -> Result | str:
        """One request: its result, or the URL it redirects to."""
        try:
            target = Target.parse(url)
            if not slot.switch(host_key(url)):
                return Cancelled()
            conn, response = self._request(target)
            if response.status not in REDIRECTS:
                return self._receive(target, conn, response, dest)
            conn.close()
        except _Stop as stop:
            return stop.result
        location = response.getheader("Location")
        if not location:
            return Failure(f"HTTP {response.status} redirect without a Location")
        return _redirect_target(url, location, response.status)

    # -- one request -----------------------------------------------------------------------

    def _request(self, target: Target) -> tuple[Connection, http.client.HTTPResponse]:
        deadline: _Deadline | None = getattr(self._local, "deadline", None)
        reused = self.connections.get(target.key)
        if reused is not None:
            if deadline is not None:
                deadline.watch(reused)
            response = self._send_reused(reused, target)
            if response is not None:
                return reused, response
        conn = self._connect(target)
        if deadline is not None:
            deadline.watch(conn)
        try:
            with self._network_errors(connecting=False):
                return conn, self._send(conn, target)
        except BaseException:
            conn.close()
            raise

    def _send_reused(self, conn: Connection, target: Target) -> http.client.HTTPResponse | None:
        """Send on an idle keep-alive connection; None if the server had closed it meanwhile
        (then a fresh connection is no retry: nothing reached the server)."""
        try:
            with self._network_errors(connecting=False):
                try:
                    return self._send(conn, target)
                except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                    pass
        except BaseException:
            conn.close()
            raise
        conn.close()
        return None

    def _connect(self, target: Target) -> Connection:
        ips = self.policy.addresses(target.host, target.port)
        errors: list[str] = []
        for ip in ips:
            conn = self._connection(target, ip)
            try:
                with self._network_errors(connecting=True):
                    conn.connect()
                return conn
            except _Stop as stop:
                conn.close()
                if not isinstance(stop.result, Failure) or not stop.result.retry:
                    raise
                errors.append(stop.result.reason)
        raise _Stop(Failure(errors[-1] if errors else "cannot connect", retry=True))

    def _connection(self, target: Target, ip: IPAddress) -> Connection:
        if target.scheme == "https":
            return _HTTPS(target.host, target.port, ip, self.limits, self.sockets, self.tls)
        return _HTTP(target.host, target.port, ip, self.limits, self.sockets)

    def _send(self, conn: Connection, target: Target) -> http.client.HTTPResponse:
        # identity: a gzip-encoded body would not sniff as an image (and could be a bomb)
        headers = {
            "User-Agent": self.limits.user_agent,
            "Accept": "image/*",
            "Accept-Encoding": "identity",
        }
        conn.request("GET", target.path, headers=headers)
        return conn.getresponse()

    # -- the body --------------------------------------------------------------------------

    def _receive(
        self,
        target: Target,
        conn: Connection,
        response: http.client.HTTPResponse,
        dest: Destination,
    ) -> Result:
        try:
            if response.status == 200:
                self._check_length(response)
                result = self._download(response, dest)
            else:
                result = _status_failure(response)
        except BaseException:
            conn.close()
            raise
        self._release(target, conn, response)
        return result

    def _release(
        self, target: Target, conn: Connection, response: http.client.HTTPResponse
    ) -> None:
        """Keep the connection for the next URL if its response was read to the end."""
        if response.length == 0:
            response.close()  # http.client leaves a fully read response open; finish it
        if response.will_close or not response.isclosed() or self._expired():
            conn.close()
        else:
            self.connections.put(target.key, conn)

    def _check_length(self, response: http.client.HTTPResponse) -> None:
        length = response.getheader("Content-Length")
        if length and length.strip().isdigit() and int(length) > self.limits.max_bytes:
            raise _Stop(Failure(f"larger than {size_text(self.limits.max_bytes)}"))

    def _download(self, response: http.client.HTTPResponse, dest: Destination) -> Result:
        with self._temp_file() as (tmp_path, out):
            head, size = self._sniffed_head(response)
            kind = sniff(head)
            if kind is None:
                return Failure(f"not an image ({_content_type(response)}{_encoding(response)})")
            out.write(head)
            size = self._copy_rest(response, out, size)
            _durable(out)
            out.close()
            final = _place(tmp_path, dest, kind)
            return Downloaded(final, size, kind)
        raise AssertionError("unreachable: _temp_file swallows nothing")

    def _sniffed_head(self, response: http.client.HTTPResponse) -> tuple[bytes, int]:
        head = b""
        while len(head) < SNIFF_BYTES:
            chunk = self._read(response)
            if not chunk:
                break
            head += chunk
        self._check_size(len(head))
        return head, len(head)

    def _copy_rest(self, response: http.client.HTTPResponse, out: IO[bytes], size: int) -> int:
        while True:
            chunk = self._read(response)
            if not chunk:
                return size
            size += len(chunk)
            self._check_size(size)
            try:
                out.write(chunk)
            except OSError as e:
                raise _Stop(Failure(f"cannot write the download: {e.strerror}")) from None

    def _read(self, response: http.client.HTTPResponse) -> bytes:
        if self.sockets.cancelled.is_set():
            raise _Stop(Cancelled())
        with self._network_errors(connecting=False):
            chunk = response.read1(CHUNK)
        if not chunk and self.sockets.cancelled.is_set():
            raise _Stop(Cancelled())  # our own shutdown() ended the stream, not the server
        if not chunk and (expired := self._expired()) is not None:
            raise _Stop(expired)  # the deadline's shutdown() ended it: the body is not complete
        return chunk

    def _check_size(self, size: int) -> None:
        if size > self.limits.max_bytes:
            raise _Stop(Failure(f"larger than {size_text(self.limits.max_bytes)}"))

    @contextlib.contextmanager
    def _temp_file(self) -> Iterator[tuple[str, IO[bytes]]]:
        try:
            os.makedirs(self.tmp, exist_ok=True)
            fd, path = tempfile.mkstemp(dir=self.tmp, suffix=".download")
        except OSError as e:
            reason = f"cannot create a temporary file in {self.tmp}: {e.strerror}"
            raise _Stop(Failure(reason)) from None
        out = os.fdopen(fd, "wb", buffering=1024 * 1024)
        try:
            yield path, out
        finally:
            out.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)  # still there only when the download did not complete

    # -- errors ----------------------------------------------------------------------------

    @contextlib.contextmanager
    def _network_errors(self, *, connecting: bool) -> Iterator[None]:
        """Turn what the network raises into Failures (retryable for connection trouble)."""
        try:
            yield
        except _Stop:
            raise
        except Exception as e:
            if self.sockets.cancelled.is_set():
                raise _Stop(Cancelled()) from None
            if (expired := self._expired()) is not None:
                raise _Stop(expired) from None
            raise _Stop(self._failure(e, connecting)) from None

    def _failure(self, e: Exception, connecting: bool) -> Failure:
        limits = self.limits
        if isinstance(e, TimeoutError | socket.timeout):
            if connecting:
                return Failure(f"connect timed out after {limits.connect_timeout:g} s", retry=True)
            return Failure(f"timed out after {limits.read_timeout:g} s")
        if isinstance(e, ssl.SSLCertVerificationError):
            return Failure(f"TLS certificate not accepted: {e.verify_message}")
        if isinstance(e, ssl.SSLError):
            return Failure(f"TLS error: {e.reason or e}")
        if isinstance(e, ConnectionRefusedError):
            return Failure("connection refused", retry=True)
        if isinstance(e, http.client.IncompleteRead):
            return Failure("connection closed before the end of the body", retry=True)
        if isinstance(e, http.client.RemoteDisconnected | ConnectionError):
            return Failure("connection closed by the server", retry=True)
        if isinstance(e, http.client.HTTPException):
            return Failure(f"bad HTTP response ({type(e).__name__})")
        if isinstance(e, OSError):
            return Failure(f"cannot connect: {e.strerror or e}", retry=True)
        raise e


# -- helpers ----------------------------------------------------------------------------------


def _tls_context() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.set_alpn_protocols(["http/1.1"])
    return context


def _status_failure(response: http.client.HTTPResponse) -> Failure:
    status = response.status
    try:
        phrase = f" ({HTTPStatus(status).phrase})"
    except ValueError:
        phrase = ""
    retry = status == 429 or 500 <= status <= 599
    after = retry_after(response.getheader("Retry-After")) if retry else None
    return Failure(f"HTTP {status}{phrase}", retry=retry, retry_after=after)


def retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date); None if absent/bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when - (time.time() if now is None else now))


def _redirect_target(url: str, location: str, status: int) -> str | Failure:
    """The absolute URL a Location header points to, read the way browsers read it: raw UTF-8
    bytes (which http.client hands over as Latin-1) are UTF-8, and spaces are percent-encoded."""
    location = location.strip()
    with contextlib.suppress(UnicodeError):
        location = location.encode("latin-1").decode("utf-8")
    location = location.replace(" ", "%20")
    try:
        return urljoin(url, location)
    except ValueError as e:
        shown = "".join(c if c.isprintable() else "?" for c in location)[:200]
        return Failure(f"HTTP {status} redirect to a bad URL ({shown!r}: {e})")


def _encoding(response: http.client.HTTPResponse) -> str:
    """`, Content-Encoding gzip` when the server compressed the body (although thumbd asked for
    identity): that is why its bytes are not an image's."""
    value = (response.getheader("Content-Encoding") or "").strip().lower()
    shown = "".join(c for c in value if c.isprintable())[:30]
    return f", Content-Encoding {shown}" if shown and shown != "identity" else ""


def _content_type(response: http.client.HTTPResponse) -> str:
    value = (response.getheader("Content-Type") or "").split(";", 1)[0].strip()
    shown = "".join(c for c in value if c.isprintable())[:60]
    return shown or "no Content-Type"


def sniff(head: bytes) -> str | None:
    """The image type the first bytes show (as a file extension), or None."""
    if head.startswith(b"\xff\xd8\xff"):
        return "jpg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "tif"
    if head[:2] == b"BM" and len(head) >= 18 and head[14] in (12, 40, 52, 56, 64, 108, 124):
        return "bmp"
    if head[4:8] == b"ftyp":
        return _iso_media(head)
    return None


def _iso_media(head: bytes) -> str | None:
    brands = {head[i : i + 4] for i in range(8, min(len(head), 32), 4)}
    if brands & {b"avif", b"avis"}:
        return "avif"
    if brands & {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1"}:
        return "heic"
    return None


def _place(tmp_path: str, dest: Destination, kind: str) -> str:
    """Rename the finished download into its folder; return its path relative to incoming/."""
    rel = f"{dest.folder}/{dest.stem}.{kind}"
    folder = os.path.join(dest.root, dest.folder)
    final = os.path.join(dest.root, rel)
    try:
        os.makedirs(folder, exist_ok=True)
        _check_inside(folder, dest.root)
        os.chmod(tmp_path, 0o666 & ~_umask())
        _replace(tmp_path, final)
        _sync_folder(folder)
    except OSError as e:
        raise _Stop(Failure(f"cannot write {rel}: {e.strerror or e}")) from None
    return rel


def _durable(out: IO[bytes]) -> None:
    """fsync a finished download before it gets its final name. Unlike a thumbnail, which the
    source can always make again, a download may be the only copy there will be (the URL can
    be gone tomorrow), and its URL is recorded done once it is in place: a power loss must not
    leave an empty file under a URL that is never fetched again. It costs a downloader thread a
    few milliseconds, next to a network transfer."""
    try:
        out.flush()
        os.fsync(out.fileno())
    except OSError as e:
        raise _Stop(Failure(f"cannot write the download: {e.strerror}")) from None


def _sync_folder(folder: str) -> None:
    """fsync the folder, so that the download's new name survives a power loss too. Best
    effort: some filesystems (FUSE, some network mounts) refuse an fsync of a folder, and the
    download is in place all the same."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _check_inside(folder: str, root: str) -> None:
    real_root = os.path.realpath(root)
    real = os.path.realpath(folder)
    if os.path.commonpath([real, real_root]) != real_root:
        raise _Stop(Failure(f"refused: {folder} leads outside {root} (to {real})"))


def _replace(tmp_path: str, final: str) -> None:
    try:
        os.replace(tmp_path, final)
    except OSError as e:
        if e.errno != errno.EXDEV:  # the manifest's folder is another filesystem (a mount)
            raise
        staged = os.path.join(os.path.dirname(final), f".{os.path.basename(final)}.download")
        with open(tmp_path, "rb") as src, open(staged, "wb") as dst:
            while chunk := src.read(CHUNK * 16):
                dst.write(chunk)
        os.replace(staged, final)


_UMASK: int | None = None


def _umask() -> int:
    global _UMASK
    if _UMASK is None:  # os.umask can only be read by setting it: do it once
        _UMASK = os.umask(0)
        os.umask(_UMASK)
    return _UMASK


def size_text(n: int) -> str:
    """Bytes for people, without a needless `.0`: 50 MB, 1.5 KB, 812 B."""
    if n < 1000:
        return f"{n} B"
    value = float(n)
    units = ["KB", "MB", "GB"]
    while True:
        value /= 1000
        unit = units.pop(0)
        if value < 1000 or not units:
            return f"{value:.1f}".removesuffix(".0") + f" {unit}"
