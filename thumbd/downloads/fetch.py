"""Fetch one URL safely into incoming/: the HTTP side of the download stage.

Runs on a downloader thread; the main loop never calls it. `Fetcher` follows a URL hop by hop
(redirects are followed here, not by a library, with the same checks on every hop), sends the
request, reads the response and hands the body to files.py. What it guards against, and where:

- Server-side request forgery: only http and https (manifest.check_url); the host's addresses
  are checked by policy.AddressPolicy, and the connection is pinned to a checked address
  (connections.py). Environment proxies (http_proxy) are ignored on purpose: a proxy would make
  the address check meaningless.
- Unbounded resources: connect and read timeouts, a total deadline per URL (`total_timeout`,
  connections.Deadline), a cap on the body (`max_bytes`), a cap on redirects, and the caller's
  per-host limit (`HostSlot`).
- Lies: the body must sniff as an image by its magic bytes (files.sniff); the Content-Type is
  only used to explain a refusal.
- Partial files: the body is renamed to its final name only once complete (files.py).

Failures are values (outcomes.Failure) with a reason a person understands; only bugs raise.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from email.utils import parsedate_to_datetime
from http import HTTPStatus
from typing import IO
from urllib.parse import quote, urljoin, urlsplit

from thumbd.downloads.connections import (
    Connection,
    Connections,
    Deadline,
    PinnedHTTP,
    PinnedHTTPS,
    Sockets,
)
from thumbd.downloads.files import CHUNK, TMP_DIR, Destination, durable, place, sniff, temp_file
from thumbd.downloads.manifest import SCHEMES, check_url, host_ascii
from thumbd.downloads.outcomes import Cancelled, Downloaded, Failure, Limits, Result, Stop
from thumbd.downloads.policy import AddressPolicy, IPAddress

SNIFF_BYTES = 32
REDIRECTS = frozenset({301, 302, 303, 307, 308})


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
            raise Stop(Failure(problem))
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
        self._local = threading.local()  # the calling thread's Deadline

    def fetch(self, url: str, dest: Destination, slot: HostSlot) -> Result:
        deadline = self._local.deadline = Deadline(self.limits.total_timeout, self.sockets)
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
        deadline: Deadline | None = getattr(self._local, "deadline", None)
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
        except Stop as stop:
            return stop.result
        location = response.getheader("Location")
        if not location:
            return Failure(f"HTTP {response.status} redirect without a Location")
        return _redirect_target(url, location, response.status)

    # -- one request -----------------------------------------------------------------------

    def _request(self, target: Target) -> tuple[Connection, http.client.HTTPResponse]:
        deadline: Deadline | None = getattr(self._local, "deadline", None)
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
            except Stop as stop:
                conn.close()
                if not isinstance(stop.result, Failure) or not stop.result.retry:
                    raise
                errors.append(stop.result.reason)
        raise Stop(Failure(errors[-1] if errors else "cannot connect", retry=True))

    def _connection(self, target: Target, ip: IPAddress) -> Connection:
        if target.scheme == "https":
            return PinnedHTTPS(target.host, target.port, ip, self.limits, self.sockets, self.tls)
        return PinnedHTTP(target.host, target.port, ip, self.limits, self.sockets)

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
            raise Stop(Failure(f"larger than {size_text(self.limits.max_bytes)}"))

    def _download(self, response: http.client.HTTPResponse, dest: Destination) -> Result:
        with temp_file(self.tmp) as (tmp_path, out):
            head, size = self._sniffed_head(response)
            kind = sniff(head)
            if kind is None:
                return Failure(f"not an image ({_content_type(response)}{_encoding(response)})")
            out.write(head)
            size = self._copy_rest(response, out, size)
            durable(out)
            out.close()
            final = place(tmp_path, dest, kind)
            return Downloaded(final, size, kind)
        raise AssertionError("unreachable: temp_file swallows nothing")

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
                raise Stop(Failure(f"cannot write the download: {e.strerror}")) from None

    def _read(self, response: http.client.HTTPResponse) -> bytes:
        if self.sockets.cancelled.is_set():
            raise Stop(Cancelled())
        with self._network_errors(connecting=False):
            chunk = response.read1(CHUNK)
        if not chunk and self.sockets.cancelled.is_set():
            raise Stop(Cancelled())  # our own shutdown() ended the stream, not the server
        if not chunk and (expired := self._expired()) is not None:
            raise Stop(expired)  # the deadline's shutdown() ended it: the body is not complete
        return chunk

    def _check_size(self, size: int) -> None:
        if size > self.limits.max_bytes:
            raise Stop(Failure(f"larger than {size_text(self.limits.max_bytes)}"))

    # -- errors ----------------------------------------------------------------------------

    @contextlib.contextmanager
    def _network_errors(self, *, connecting: bool) -> Iterator[None]:
        """Turn what the network raises into Failures (retryable for connection trouble)."""
        try:
            yield
        except Stop:
            raise
        except Exception as e:
            if self.sockets.cancelled.is_set():
                raise Stop(Cancelled()) from None
            if (expired := self._expired()) is not None:
                raise Stop(expired) from None
            raise Stop(self._failure(e, connecting)) from None

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
