"""Fetch one URL safely into incoming/: the HTTP side of the download stage, on its event loop.

`Fetcher` follows a URL hop by hop with aiohttp (`allow_redirects=False`: redirects are followed
here, with the same checks on every hop), streams the body to a temporary file (files.py) and
renames it into place. What it guards against, and where:

- Server-side request forgery: only http and https (manifest.check_url, every hop); every
  connection goes to an address the policy accepted (client.py: the resolver checks names, the
  socket factory every address, IP literals included). No proxy from the environment.
- Unbounded resources: connect and read timeouts (aiohttp's sock_connect and sock_read), one
  deadline for all hops of a URL (`total_timeout`, asyncio.timeout: it cancels a read however
  often the server sends a byte), `max_bytes` counted on the bytes written (after aiohttp
  undoes a gzip encoding: a small response can inflate a thousandfold), a cap on redirects, and
  the downloader's per-host slots (`HostSlot`).
- Lies: the body must sniff as an image by its magic bytes (files.sniff); the Content-Type is
  only used to explain a refusal.
- Partial files: the body is renamed to its final name only once complete (files.py).

Failures are values (outcomes.Failure) with a reason a person understands; only bugs raise. A
cancelled fetch raises asyncio.CancelledError to its caller, which reports it as Cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from email.utils import parsedate_to_datetime
from http import HTTPStatus
from urllib.parse import quote, urljoin, urlsplit

import aiohttp
from aiofiles.threadpool.binary import AsyncBufferedIOBase
from yarl import URL

from thumbd.downloads import client
from thumbd.downloads.files import TMP_DIR, Destination, durable, place, sniff, temp_file
from thumbd.downloads.manifest import SCHEMES, check_url, host_ascii
from thumbd.downloads.outcomes import Cancelled, Downloaded, Failure, Limits, Result, Stop
from thumbd.downloads.policy import AddressPolicy, Refused

SNIFF_BYTES = 32
REDIRECTS = frozenset({301, 302, 303, 307, 308})
DECODED = frozenset({"identity", "gzip", "x-gzip", "deflate", "br"})


@dataclass(frozen=True, slots=True)
class Target:
    """One hop: the URL as aiohttp gets it (host in IDNA, path percent-encoded)."""

    url: URL

    @classmethod
    def parse(cls, url: str) -> Target:
        problem = check_url(url)
        if problem is not None:
            raise Stop(Failure(problem))
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        assert parts.hostname is not None and scheme in SCHEMES
        host = host_ascii(parts.hostname)
        netloc = f"[{host}]" if ":" in host else host
        if parts.port is not None:
            netloc += f":{parts.port}"
        path = quote(parts.path or "/", safe="/%;:@&=+$,!~*'()-._")
        if parts.query:
            path += "?" + quote(parts.query, safe="/%;:@&=+$,!~*'()-._?")
        return cls(URL(f"{scheme}://{netloc}{path}", encoded=True))


def host_key(url: str) -> str:
    """What the per-host limit counts by: the host name, lower case."""
    try:
        return (urlsplit(url).hostname or "").lower()
    except ValueError:
        return ""


class HostSlot:
    """The per-host slot a fetch holds; a redirect to another host trades it for that host's
    (releasing the old one first, so that no cycle of waits can form)."""

    def __init__(
        self, host: str, acquire: Callable[[str], Awaitable[bool]], release: Callable[[str], None]
    ) -> None:
        self.host: str | None = host
        self._acquire, self._release = acquire, release

    async def switch(self, host: str) -> bool:
        if host == self.host:
            return True
        self.release()
        if not await self._acquire(host):  # shutting down
            return False
        self.host = host
        return True

    def release(self) -> None:
        if self.host is not None:
            self._release(self.host)
            self.host = None


class Fetcher:
    """Fetches URLs on the downloader's event loop, all through one aiohttp session."""

    def __init__(
        self,
        limits: Limits,
        policy: AddressPolicy,
        root: str,
        *,
        max_idle: int = 32,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.limits = limits
        self.tmp = f"{root}/{TMP_DIR}"
        self.session = client.session(limits, policy, max_idle=max_idle, tls=tls)

    async def close(self) -> None:
        await self.session.close()

    async def fetch(self, url: str, dest: Destination, slot: HostSlot) -> Result:
        """The URL's result; raises CancelledError when cancelled (nothing is left behind)."""
        deadline = asyncio.timeout(self.limits.total_timeout)
        try:
            async with deadline:
                return await self._follow(url, dest, slot)
        except TimeoutError:
            if not deadline.expired():
                raise
            seconds = self.limits.total_timeout
            return Failure(f"timed out: not complete within total_timeout ({seconds:g} s)")

    async def _follow(self, url: str, dest: Destination, slot: HostSlot) -> Result:
        seen = {url}
        for hop in range(self.limits.max_redirects + 1):
            result = await self._hop(url, dest, slot)
            if isinstance(result, Failure) and hop > 0:
                return replace(result, reason=f"{result.reason} (redirected to {url})")
            if not isinstance(result, str):
                return result
            url = result
            if url in seen:
                return Failure(f"redirect loop (back to {url})")
            seen.add(url)
        return Failure(f"too many redirects (more than {self.limits.max_redirects})")

    async def _hop(self, url: str, dest: Destination, slot: HostSlot) -> Result | str:
        """One request: its result, or the URL it redirects to."""
        try:
            target = Target.parse(url)
            if not await slot.switch(host_key(url)):
                return Cancelled()
            async with contextlib.AsyncExitStack() as files:
                async with self.session.get(target.url, allow_redirects=False) as response:
                    if response.status in REDIRECTS:
                        return _redirect(url, response)
                    if response.status != 200:
                        return _status_failure(response)
                    self._check_length(response)
                    tmp_path, out = await files.enter_async_context(temp_file(self.tmp))
                    received = await self._receive(response, out)
                if isinstance(received, Failure):
                    return received
                # The body is in: the connection is back in the pool, and the host's slot goes
                # to the next URL while this file is made durable (an fsync takes milliseconds).
                slot.release()
                kind, size = received
                await durable(out)
                await out.close()
                return Downloaded(await _placed(tmp_path, dest, kind), size, kind)
        except Stop as stop:
            return stop.result
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as e:
            return self._failure(e)
        raise AssertionError("unreachable: AsyncExitStack swallows nothing")

    # -- the body --------------------------------------------------------------------------

    def _check_length(self, response: aiohttp.ClientResponse) -> None:
        length = response.content_length
        if length is not None and length > self.limits.max_bytes:
            raise Stop(Failure(f"larger than {size_text(self.limits.max_bytes)}"))

    async def _receive(
        self, response: aiohttp.ClientResponse, out: AsyncBufferedIOBase
    ) -> tuple[str, int] | Failure:
        """The body into `out`: its sniffed kind and size, or why it is not an image."""
        head = b""
        while len(head) < SNIFF_BYTES and (chunk := await response.content.readany()):
            head += chunk
        kind = sniff(head)
        if kind is None:
            return Failure(f"not an image ({_content_type(response)}{_encoding(response)})")
        size = await self._write(out, head, 0)
        async for chunk in response.content.iter_any():
            size = await self._write(out, chunk, size)
        return kind, size

    async def _write(self, out: AsyncBufferedIOBase, chunk: bytes, size: int) -> int:
        """Write a chunk of the (decompressed) body; the size so far, checked."""
        size += len(chunk)
        if size > self.limits.max_bytes:
            raise Stop(Failure(f"larger than {size_text(self.limits.max_bytes)}"))
        try:
            await out.write(chunk)
        except OSError as e:
            raise Stop(Failure(f"cannot write the download: {e.strerror}")) from None
        return size

    # -- errors ----------------------------------------------------------------------------

    def _failure(self, e: Exception) -> Failure:
        """What the network raised, as a Failure (retryable for connection trouble)."""
        limits = self.limits
        os_error = e.os_error if isinstance(e, aiohttp.ClientConnectorError) else e
        if isinstance(os_error, Refused):
            return os_error.failure
        if isinstance(e, aiohttp.ConnectionTimeoutError):
            return Failure(f"connect timed out after {limits.connect_timeout:g} s", retry=True)
        if isinstance(e, TimeoutError):
            return Failure(f"timed out after {limits.read_timeout:g} s")
        if isinstance(e, aiohttp.ClientConnectorCertificateError):
            error = e.certificate_error
            why = error.verify_message if isinstance(error, ssl.SSLCertVerificationError) else error
            return Failure(f"TLS certificate not accepted: {why}")
        if isinstance(e, aiohttp.ClientConnectorSSLError | ssl.SSLError):
            return Failure(f"TLS error: {getattr(os_error, 'reason', None) or os_error}")
        if isinstance(os_error, ConnectionRefusedError):
            return Failure("connection refused", retry=True)
        if isinstance(e, aiohttp.ClientPayloadError):
            return Failure("connection closed before the end of the body", retry=True)
        if isinstance(e, aiohttp.ServerDisconnectedError | ConnectionError):
            return Failure("connection closed by the server", retry=True)
        if isinstance(e, aiohttp.InvalidURL | ValueError):
            return Failure(f"not a URL ({e})")
        if isinstance(e, aiohttp.ClientResponseError):
            return Failure(f"bad HTTP response ({e.message})")
        if isinstance(os_error, OSError):
            return Failure(f"cannot connect: {os_error.strerror or os_error}", retry=True)
        return Failure(f"HTTP error: {type(e).__name__}: {e}")


async def _placed(tmp_path: str, dest: Destination, kind: str) -> str:
    """The rename into place, on the executor. A cancel that comes meanwhile waits for it: the
    file is then in place whatever happens, and its URL is reported done, not pending."""
    loop = asyncio.get_running_loop()
    renaming = loop.run_in_executor(None, place, tmp_path, dest, kind)
    try:
        return await asyncio.shield(renaming)
    except asyncio.CancelledError:
        return await renaming


def _redirect(url: str, response: aiohttp.ClientResponse) -> str | Failure:
    location = response.headers.get("Location")
    if not location:
        return Failure(f"HTTP {response.status} redirect without a Location")
    return _redirect_target(url, location, response.status)


# -- helpers ----------------------------------------------------------------------------------


def _status_failure(response: aiohttp.ClientResponse) -> Failure:
    status = response.status
    try:
        phrase = f" ({HTTPStatus(status).phrase})"
    except ValueError:
        phrase = ""
    retry = status == 429 or 500 <= status <= 599
    after = retry_after(response.headers.get("Retry-After")) if retry else None
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
    bytes are UTF-8 (aiohttp decodes header bytes so), and spaces are percent-encoded."""
    location = location.strip()
    location = location.replace(" ", "%20")
    try:
        return urljoin(url, location)
    except ValueError as e:
        shown = "".join(c if c.isprintable() else "?" for c in location)[:200]
        return Failure(f"HTTP {status} redirect to a bad URL ({shown!r}: {e})")


def _encoding(response: aiohttp.ClientResponse) -> str:
    """`, Content-Encoding xz` when the server encoded the body in a way aiohttp does not undo
    (it decodes gzip, deflate and br): that is why its bytes are not an image's."""
    value = (response.headers.get("Content-Encoding") or "").strip().lower()
    shown = "".join(c for c in value if c.isprintable())[:30]
    return f", Content-Encoding {shown}" if shown and shown not in DECODED else ""


def _content_type(response: aiohttp.ClientResponse) -> str:
    value = (response.headers.get("Content-Type") or "").split(";", 1)[0].strip()
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
