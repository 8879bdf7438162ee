"""The download stage's aiohttp client, built so that every connection goes to a checked address.

Two guards, because neither is enough alone:

- `CheckedResolver` resolves a host name (on the event loop's executor, or through the tests'
  overrides) and refuses the whole name if any of its addresses is not public. aiohttp connects
  to exactly the addresses it returns: a DNS answer that changes later changes nothing.
- `guarded_socket` is aiohttp's `socket_factory`: it sees the address of every connection aiohttp
  is about to open, IP literals included (aiohttp never asks a resolver about `127.0.0.1` or
  `[::ffff:127.0.0.1]`), and refuses it before a socket exists.

Both raise `policy.Refused`, an OSError, which aiohttp wraps in its connector errors; the
fetcher unwraps it into the Failure it carries.

`Connector` bounds the idle keep-alive connections in total (aiohttp bounds only those in use):
a manifest spread over a thousand hosts must not keep thousands of sockets open afterwards.
No proxy is ever taken from the environment (`trust_env=False`): a proxy would connect for
us, and the address checks would mean nothing.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from thumbd.downloads.files import CHUNK
from thumbd.downloads.outcomes import Failure, Limits, Stop
from thumbd.downloads.policy import AddressPolicy, Refused

IDLE_SECONDS = 15.0  # an idle keep-alive connection older than this is closed, not reused


class CheckedResolver(AbstractResolver):
    """aiohttp's resolver: only names whose every address the policy accepts resolve."""

    def __init__(self, policy: AddressPolicy) -> None:
        self.policy = policy

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        loop = asyncio.get_running_loop()
        try:  # getaddrinfo blocks: on the executor, as aiohttp's own resolver does
            found = await loop.run_in_executor(None, self.policy.addresses, host, port)
        except Stop as stop:
            assert isinstance(stop.result, Failure)  # the policy only ever stops with one
            raise Refused(stop.result) from None
        return [
            {
                "hostname": host,
                "host": str(ip),
                "port": port,
                "family": socket.AF_INET6 if ip.version == 6 else socket.AF_INET,
                "proto": 0,
                "flags": socket.AI_NUMERICHOST,
            }
            for ip in found
        ]

    async def close(self) -> None:
        pass


def guarded_socket(policy: AddressPolicy) -> Any:
    """A socket factory that refuses any address the policy refuses (checked at connect time)."""

    def factory(addr_info: tuple[Any, ...]) -> socket.socket:
        family, kind, proto, _, address = addr_info
        failure = policy.refusal(str(address[0]))
        if failure is not None:
            raise Refused(failure)
        return socket.socket(family, kind, proto)

    return factory


class Connector(aiohttp.TCPConnector):
    """A TCPConnector that keeps at most `max_idle` idle connections in all (oldest go first)."""

    def __init__(self, *, max_idle: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.max_idle = max_idle

    def _release(self, key: Any, protocol: Any, *, should_close: bool = False) -> None:
        super()._release(key, protocol, should_close=should_close)
        idle = self._conns  # aiohttp's idle connections: key -> deque of (protocol, since)
        while sum(len(q) for q in idle.values()) > self.max_idle:
            oldest = min((k for k in idle if idle[k]), key=lambda k: idle[k][0][1])
            stale, _ = idle[oldest].popleft()
            if not idle[oldest]:
                del idle[oldest]
            stale.close()

    def idle(self) -> int:
        return sum(len(q) for q in self._conns.values())


def tls_context() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.set_alpn_protocols(["http/1.1"])
    return context


def session(
    limits: Limits,
    policy: AddressPolicy,
    *,
    max_idle: int,
    tls: ssl.SSLContext | None = None,
) -> aiohttp.ClientSession:
    """The one session of a downloader: checked connections, no cookies, no environment proxy.

    The body is decompressed by aiohttp if the server compresses it although thumbd asks for
    `identity`: the fetcher counts `max_bytes` on the bytes it writes, after that.
    """
    connector = Connector(
        max_idle=max_idle,
        limit=0,  # the downloader bounds requests in flight (concurrency, max_per_host)
        resolver=CheckedResolver(policy),
        socket_factory=guarded_socket(policy),
        ssl=tls or tls_context(),
        keepalive_timeout=IDLE_SECONDS,
    )
    timeout = aiohttp.ClientTimeout(
        total=None,  # the fetcher's own deadline covers every hop together (total_timeout)
        sock_connect=limits.connect_timeout,
        sock_read=limits.read_timeout,
    )
    headers = {"User-Agent": limits.user_agent, "Accept": "image/*", "Accept-Encoding": "identity"}
    return aiohttp.ClientSession(
        connector=connector,
        timeout=timeout,
        headers=headers,
        trust_env=False,
        cookie_jar=aiohttp.DummyCookieJar(),
        read_bufsize=CHUNK,
    )
