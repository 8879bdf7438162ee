"""Fetching one URL, in process, against real servers on 127.0.0.x (HTTP and HTTPS)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import gzip
import io
import ipaddress
import shutil
import socket
import ssl
import subprocess
import threading
from collections.abc import Coroutine, Iterator
from email.utils import formatdate
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from tests.conftest import wait_until
from tests.httpserver import Body, Redirect, Server, Silent, Trickle, serving
from tests.images import natural
from thumbd.downloads.fetch import Fetcher, HostSlot, retry_after
from thumbd.downloads.files import Destination, sniff
from thumbd.downloads.outcomes import Cancelled, Downloaded, Failure, Limits, Result
from thumbd.downloads.policy import AddressPolicy, system_resolver

LOOPBACK = ipaddress.ip_address("127.0.0.1")
STAND_IN = ipaddress.ip_address("127.0.0.2")  # treated as public by these tests' policies


def jpeg(size: tuple[int, int] = (120, 90)) -> bytes:
    buf = io.BytesIO()
    natural(size).save(buf, "JPEG")
    return buf.getvalue()


class Harness:
    """A Fetcher writing into tmp/incoming/got/, on an event loop of its own (in a thread, as
    the downloader runs it)."""

    def __init__(
        self,
        root: Path,
        policy: AddressPolicy,
        limits: Limits | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.root = root
        (root / "incoming").mkdir(exist_ok=True)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.task: asyncio.Task[Result] | None = None
        limits = limits or Limits(connect_timeout=2, read_timeout=5)

        async def make() -> Fetcher:
            return Fetcher(limits, policy, str(root / "incoming"), tls=tls)

        self.fetcher = self.call(make())

    def call(self, coro: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(120)

    def start(self, url: str, stem: str = "x") -> concurrent.futures.Future[Result]:
        return asyncio.run_coroutine_threadsafe(self._fetch(url, stem), self.loop)

    def fetch(self, url: str, stem: str = "x") -> Result:
        return self.start(url, stem).result(120)

    async def _fetch(self, url: str, stem: str) -> Result:
        self.task = asyncio.current_task()  # type: ignore[assignment]

        async def acquire(host: str) -> bool:
            return True

        slot = HostSlot("h", acquire, lambda host: None)
        dest = Destination(str(self.root / "incoming"), "got", stem)
        try:
            return await self.fetcher.fetch(url, dest, slot)
        except asyncio.CancelledError:
            return Cancelled()

    def cancel(self) -> None:
        assert self.task is not None
        self.loop.call_soon_threadsafe(self.task.cancel)

    def idle(self) -> int:
        async def count() -> int:
            return self.fetcher.session.connector.idle()  # type: ignore[union-attr]

        return int(self.call(count()))

    def close(self) -> None:
        if self.loop.is_closed():
            return
        self.call(self.fetcher.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(30)
        self.loop.close()


@pytest.fixture
def allow_all(tmp_path: Path) -> Iterator[Harness]:
    h = Harness(tmp_path, AddressPolicy(allow_private=True))
    yield h
    h.close()


# -- addresses ------------------------------------------------------------------------------


def test_dns_rebinding_cannot_swap_the_checked_address(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The name resolves to an allowed address first and to 127.0.0.1 on any later lookup:
    only a client that connects to the address it checked stays on the allowed server."""
    public, loopback = _servers_on_one_port()
    with public, loopback:
        public.routes["/x.jpg"] = Body(jpeg())
        loopback.routes["/x.jpg"] = Body(jpeg((50, 50)))
        real = socket.getaddrinfo
        lookups: list[str] = []

        def rebinding(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
            if host != "rebind.example":
                return real(host, port, *args, **kwargs)
            lookups.append(host)
            ip = "127.0.0.2" if len(lookups) == 1 else "127.0.0.1"
            return real(ip, port, *args, **kwargs)

        monkeypatch.setattr(socket, "getaddrinfo", rebinding)
        policy = AddressPolicy(
            allow_private=False, resolver=system_resolver, treat_as_public=frozenset({STAND_IN})
        )
        h = Harness(tmp_path, policy)
        try:
            result = h.fetch(f"http://rebind.example:{public.port}/x.jpg")
        finally:
            h.close()
        assert isinstance(result, Downloaded), result
        assert public.counts["/x.jpg"] == 1
        assert loopback.connections == 0
        assert public.hosts == [f"rebind.example:{public.port}"]


def _servers_on_one_port() -> tuple[Server, Server]:
    for _ in range(20):
        public = Server("127.0.0.2")
        try:
            return public, Server("127.0.0.1", port=public.port)
        except OSError:
            public.server_close()
    pytest.fail("no port free on both 127.0.0.1 and 127.0.0.2")


# -- TLS ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip(reason="openssl is not installed: cannot make a test certificate")
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    command = "openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=photos.example"
    names = "subjectAltName=DNS:photos.example"
    subprocess.run(
        [*command.split(), "-keyout", str(key), "-out", str(cert), "-addext", names],
        check=True,
        capture_output=True,
    )
    return cert, key


def test_https_connects_to_the_pinned_address_with_the_name_for_sni_and_certificate(
    tmp_path: Path, certificate: tuple[Path, Path]
) -> None:
    cert, key = certificate
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)
    client_ctx = ssl.create_default_context(cafile=str(cert))
    names = {"photos.example": ["127.0.0.1"], "other.example": ["127.0.0.1"]}
    policy = AddressPolicy(allow_private=True, resolver=lambda host, port: names[host])
    with serving("127.0.0.1", tls=server_ctx) as server:
        server.routes["/x.jpg"] = Body(jpeg())
        h = Harness(tmp_path, policy, tls=client_ctx)
        try:
            good = h.fetch(server.url("/x.jpg", "photos.example"))
            wrong = h.fetch(server.url("/x.jpg", "other.example"), stem="y")
        finally:
            h.close()
    assert isinstance(good, Downloaded), good
    assert "photos.example" in server.server_names
    assert server.hosts == [f"photos.example:{server.port}"]
    assert isinstance(wrong, Failure) and "TLS certificate not accepted" in wrong.reason
    assert not wrong.retry


# -- limits, cancelling, reuse --------------------------------------------------------------


def test_a_declared_length_over_max_bytes_is_refused_unread(tmp_path: Path) -> None:
    h = Harness(tmp_path, AddressPolicy(allow_private=True), Limits(max_bytes=10_000))
    with serving() as server:
        server.routes["/big.jpg"] = Body(jpeg((800, 600)))
        try:
            result = h.fetch(server.url("/big.jpg"))
        finally:
            h.close()
    assert result == Failure("larger than 10 KB")
    assert list((tmp_path / "incoming").rglob("*")) == []  # no temporary file was even made
    assert not (tmp_path / "incoming" / "got").exists()


@pytest.mark.parametrize("stall", ["headers", "body"])
def test_cancel_wakes_a_read_that_would_wait_for_its_timeout(tmp_path: Path, stall: str) -> None:
    h = Harness(tmp_path, AddressPolicy(allow_private=True), Limits(read_timeout=600))
    results: list[Result] = []
    with serving() as server:
        server.routes["/hang.jpg"] = Silent() if stall == "headers" else Trickle(pause=600)
        t = threading.Thread(target=lambda: results.append(h.fetch(server.url("/hang.jpg"))))
        t.start()
        wait_until(lambda: server.counts["/hang.jpg"] == 1, 10, "the request")
        h.cancel()
        t.join(timeout=30)
        alive = t.is_alive()
        h.close()
    assert not alive, "cancel did not end the blocked read"
    assert results == [Cancelled()]


@pytest.mark.parametrize("in_headers", [False, True], ids=["body", "headers"])
def test_a_server_that_trickles_bytes_is_cut_off_at_total_timeout(
    tmp_path: Path, in_headers: bool
) -> None:
    # A byte every 0.1 s never trips the 30 s read timeout: only the total deadline ends it.
    limits = Limits(read_timeout=30, total_timeout=1.5)
    h = Harness(tmp_path, AddressPolicy(allow_private=True), limits)
    results: list[Result] = []
    with serving() as server:
        server.routes["/drip.jpg"] = Trickle(pause=0.1, in_headers=in_headers)
        t = threading.Thread(target=lambda: results.append(h.fetch(server.url("/drip.jpg"))))
        t.start()
        t.join(timeout=60)
        alive = t.is_alive()
        h.cancel()  # let a hung fetch go, so that the test ends either way
        t.join(timeout=30)
        idle = h.idle()
        h.close()
    assert not alive, "the fetch went on past total_timeout"
    assert results == [Failure("timed out: not complete within total_timeout (1.5 s)")]
    assert list((tmp_path / "incoming").rglob("*.jpg")) == []  # nothing under a final name
    assert idle == 0  # the cut connection is not kept for reuse


def test_redirect_locations_are_read_as_browsers_read_them(allow_all: Harness) -> None:
    with serving() as server:
        img = jpeg()
        server.routes["/caf%C3%A9.jpg"] = Body(img)
        server.routes["/my%20photo.jpg"] = Body(img)
        # Raw UTF-8 bytes on the wire (send_header writes Latin-1), as many servers send them.
        server.routes["/utf8"] = Redirect("/café.jpg".encode().decode("latin-1"))
        server.routes["/space"] = Redirect("/my photo.jpg")
        server.routes["/broken"] = Redirect("http://[::1/x.jpg")
        assert isinstance(allow_all.fetch(server.url("/utf8"), "a"), Downloaded)
        assert isinstance(allow_all.fetch(server.url("/space"), "b"), Downloaded)
        broken = allow_all.fetch(server.url("/broken"), "c")
    assert server.counts["/caf%C3%A9.jpg"] == 1 and server.counts["/my%20photo.jpg"] == 1
    assert isinstance(broken, Failure) and not broken.retry
    assert broken.reason.startswith("HTTP 302 redirect to a bad URL ('http://[::1/x.jpg'"), broken


def test_a_compressed_body_is_not_asked_for_and_is_decoded(allow_all: Harness) -> None:
    """aiohttp undoes a gzip encoding the server sent although thumbd asked for identity: the
    file is the image itself."""
    img = jpeg()
    with serving() as server:
        server.routes["/z.jpg"] = Body(gzip.compress(img), headers={"Content-Encoding": "gzip"})
        result = allow_all.fetch(server.url("/z.jpg"))
    assert result == Downloaded("got/x.jpg", len(img), "jpg")
    assert (allow_all.root / "incoming" / "got" / "x.jpg").read_bytes() == img
    assert server.encodings == ["identity"]


def test_an_unknown_encoding_is_named_in_the_refusal(allow_all: Harness) -> None:
    with serving() as server:
        server.routes["/z.jpg"] = Body(b"\xfd7zXZ\0" * 10, headers={"Content-Encoding": "xz"})
        result = allow_all.fetch(server.url("/z.jpg"))
    assert result == Failure("not an image (image/jpeg, Content-Encoding xz)")


def test_a_keep_alive_connection_closed_by_the_server_is_replaced_without_a_failure(
    allow_all: Harness,
) -> None:
    with Server(idle_timeout=0.2) as server:
        server.routes["/a.jpg"] = Body(jpeg())
        server.routes["/b.jpg"] = Body(jpeg())
        assert isinstance(allow_all.fetch(server.url("/a.jpg"), "a"), Downloaded)
        wait_until(lambda: server.connections == 1 and not server.open, 10, "the idle close")
        assert isinstance(allow_all.fetch(server.url("/b.jpg"), "b"), Downloaded)
        assert server.connections == 2
        assert server.counts["/b.jpg"] == 1


def test_connections_are_reused(allow_all: Harness) -> None:
    with serving() as server:
        for i in range(5):
            server.routes[f"/{i}.jpg"] = Body(jpeg())
        for i in range(5):
            assert isinstance(allow_all.fetch(server.url(f"/{i}.jpg"), str(i)), Downloaded)
        assert server.connections == 1


# -- small parts ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "ext"),
    [
        ("JPEG", "jpg"),
        ("PNG", "png"),
        ("GIF", "gif"),
        ("WEBP", "webp"),
        ("TIFF", "tif"),
        ("BMP", "bmp"),
    ],
)
def test_images_sniff_as_their_type(fmt: str, ext: str) -> None:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, fmt)
    assert sniff(buf.getvalue()[:32]) == ext


@pytest.mark.parametrize(
    "head", [b"", b"<!doctype html>", b"BM is a band", b"GIF", b"RIFF\0\0\0\0WAVE", b"\xff\xd8"]
)
def test_other_bytes_are_not_images(head: bytes) -> None:
    assert sniff(head) is None


def test_iso_media_brands() -> None:
    assert sniff(b"\0\0\0\x1cftypavif\0\0\0\0avifmif1") == "avif"
    assert sniff(b"\0\0\0\x18ftypheic\0\0\0\0mif1heic") == "heic"
    assert sniff(b"\0\0\0\x18ftypisom\0\0\0\0isomiso2") is None  # an MP4


def test_retry_after_takes_seconds_or_a_date() -> None:
    assert retry_after("7") == 7.0
    assert retry_after(None) is None and retry_after("soon") is None
    assert retry_after(formatdate(1_000_030, usegmt=True), now=1_000_000) == 30.0
    assert retry_after(formatdate(999_000, usegmt=True), now=1_000_000) == 0.0


def test_idle_connections_are_bounded_in_total(tmp_path: Path) -> None:
    policy = AddressPolicy(allow_private=True, resolver=lambda host, port: ["127.0.0.1"])
    h = Harness(tmp_path, policy)
    h.fetcher.session.connector.max_idle = 2  # type: ignore[union-attr]
    with serving() as server:
        server.routes["/x.jpg"] = Body(jpeg())
        for i, host in enumerate(["a.example", "b.example", "c.example"]):  # three keys
            assert isinstance(h.fetch(server.url("/x.jpg", host), str(i)), Downloaded)
        assert h.idle() == 2
        wait_until(lambda: len(server.open) == 2, 10, "the oldest idle connection closed")
        h.close()


def test_no_connection_is_left_open_after_failures(allow_all: Harness) -> None:
    with Server(idle_timeout=120) as server:  # only the client can close them in time
        server.routes["/page.jpg"] = Body(b"<html>" * 100, "text/html")
        server.routes["/ok.jpg"] = Body(jpeg())
        for i, path in enumerate(["/missing.jpg", "/page.jpg", "/missing.jpg"]):
            assert isinstance(allow_all.fetch(server.url(path), str(i)), Failure)
        wait_until(lambda: not server.open, 8, "every failed connection closed")
        assert isinstance(allow_all.fetch(server.url("/ok.jpg")), Downloaded)
        assert len(server.open) == 1 and allow_all.idle() == 1  # kept for reuse
        allow_all.close()
        wait_until(lambda: not server.open, 8, "the idle connection closed")
