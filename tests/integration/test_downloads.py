"""URL manifests against the real daemon and real HTTP servers on 127.0.0.x.

The servers count what they see on their side of the wire (requests, connections, the most open
at once), so "never fetched again" and "never more than max_per_host" are measured, not assumed.
Since the default configuration refuses 127.0.0.1, tests that download set
`allow_private_addresses = true`; the safety tests keep the default and use the test-only
resolver override (THUMBD_TEST_RESOLVE / THUMBD_TEST_PUBLIC) to give 127.0.0.x public names.
"""

from __future__ import annotations

import io
import os
import signal
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from tests.conftest import Daemon, all_files, thumbd, wait_until
from tests.httpserver import (
    Body,
    Endless,
    Gate,
    Redirect,
    Server,
    Silent,
    Slow,
    Steps,
    Trickle,
    serving,
    status,
)
from tests.images import natural
from thumbd import __version__
from thumbd.downloads.fetch import size_text
from thumbd.downloads.manifest import url_hash

FAST = {"connect_timeout": 2.0, "read_timeout": 5.0}
ALLOW: dict[str, dict[str, Any]] = {"download": {"allow_private_addresses": True, **FAST}}


def jpeg(size: tuple[int, int] = (320, 240), seed: int = 1) -> bytes:
    buf = io.BytesIO()
    natural(size, seed).save(buf, "JPEG", quality=85)
    return buf.getvalue()


def write_manifest(daemon: Daemon, rel: str, lines: list[str]) -> Path:
    """Write a manifest the way a careful writer does: a temporary name, then a rename."""
    final = daemon.incoming / rel
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.tmp")
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    os.replace(tmp, final)
    return final


def url_rows(daemon: Daemon) -> dict[str, tuple[str, str | None, str | None, int]]:
    """url -> (status, reason, file, bytes), straight from the state database."""
    db = sqlite3.connect(f"file:{daemon.tmp / '.thumbd' / 'thumbd.db'}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT url, status, reason, file, bytes FROM urls").fetchall()
    except sqlite3.OperationalError:
        return {}
    finally:
        db.close()
    return {u: (s, r, f, b) for u, s, r, f, b in rows}


def url_count(daemon: Daemon) -> int:
    """How many (manifest, URL) pairs have an outcome."""
    db = sqlite3.connect(f"file:{daemon.tmp / '.thumbd' / 'thumbd.db'}?mode=ro", uri=True)
    try:
        return int(db.execute("SELECT count(*) FROM urls").fetchone()[0])
    except sqlite3.OperationalError:
        return 0
    finally:
        db.close()


def reasons(daemon: Daemon) -> dict[str, str]:
    """url -> reason, for every failed URL in `status --json`."""
    return {f["url"]: f["reason"] for f in daemon.status()["failures"] if "url" in f}


def downloads(daemon: Daemon, folder: str) -> list[Path]:
    return [p for p in all_files(daemon.incoming / folder)]


@pytest.fixture
def server() -> Iterator[Server]:
    with serving("127.0.0.1") as s:
        yield s


# -- 1. good images -------------------------------------------------------------------------


def test_a_manifest_of_good_images_becomes_thumbnails_with_byte_totals(
    daemon: Daemon, server: Server
) -> None:
    sizes = [(640, 480), (480, 640), (150, 100), (1024, 300), (200, 200), (800, 533)]
    bodies = {f"/img/p{i}.jpg": jpeg(size, seed=i) for i, size in enumerate(sizes)}
    for path, body in bodies.items():
        server.routes[path] = Body(body)
    late = Gate(Body(jpeg((400, 300), seed=99)))
    server.routes["/img/late.jpg"] = late
    daemon.write_config(ALLOW)
    daemon.start()
    urls = [server.url(p) for p in bodies] + [server.url("/img/late.jpg")]
    write_manifest(daemon, "shop/spring.urls", urls)

    firsts = [f"shop/spring/p{i}.jpg" for i in range(len(sizes))]
    wait_until(lambda: all(daemon.done(r) for r in firsts), 60, "the first thumbnails")
    # Downloads overlap with resizing: these thumbnails exist while a later URL is still out.
    assert server.counts["/img/late.jpg"] == 1
    assert not daemon.done("shop/spring/late.jpg")
    late.opened.set()
    wait_until(lambda: daemon.done("shop/spring/late.jpg"), 30, "the late image")

    for rel, size in zip(firsts, sizes, strict=True):
        for width, thumb in zip((200, 64, 32), daemon.thumbs(rel), strict=True):
            w = min(width, size[0])
            with Image.open(thumb) as im:
                assert im.size == (w, max(1, round(size[1] * w / size[0]))), thumb
    files = downloads(daemon, "shop/spring")
    assert sorted(p.name for p in files) == sorted([*(Path(r).name for r in firsts), "late.jpg"])
    downloaded = sum(p.stat().st_size for p in files)
    assert downloaded == sum(map(len, bodies.values())) + len(jpeg((400, 300), seed=99))
    thumbs = sum(p.stat().st_size for p in all_files(daemon.outgoing / "shop" / "spring"))

    wait_until(lambda: "manifest shop/spring.urls: 7 URLs done" in daemon.read_log(), 30, "totals")
    status = daemon.status()
    assert status["manifests"] == [
        {
            "manifest": "shop/spring.urls",
            "done": 7,
            "failed": 0,
            "bytes_downloaded": downloaded,
            "bytes_out": thumbs,
        }
    ]
    assert status["bytes_downloaded"] == downloaded and status["bytes_out"] == thumbs
    assert status["done"] == 7 and status["failed"] == 0 and status["pending"] == 0
    line = f"downloaded {size_text(downloaded)}, thumbnails {size_text(thumbs)}"
    assert line in daemon.read_log()
    assert not list((daemon.incoming / ".thumbd-downloads").glob("*"))


# -- 2. everything that can go wrong --------------------------------------------------------


def test_every_bad_url_fails_with_its_reason_and_the_daemon_goes_on(
    daemon: Daemon, server: Server
) -> None:
    img = jpeg((200, 150))
    r = server.routes
    r["/flaky.jpg"] = Steps([status(500), Body(img)])
    r["/busy.jpg"] = Steps([status(503, **{"Retry-After": "2"}), Body(img)])
    r["/down.jpg"] = status(502)
    r["/chain1"] = Redirect("/chain2", 301)
    r["/chain2"] = Redirect(server.url("/chain3"), 307)
    r["/chain3"] = Redirect("final.jpg", 302)
    r["/final.jpg"] = Body(img)
    r["/loop-a"] = Redirect("/loop-b")
    r["/loop-b"] = Redirect("/loop-a")
    r["/slow.jpg"] = Slow(img, parts=8, pause=0.3)  # 2.4 s in all, never 1.5 s without a byte
    r["/endless.jpg"] = Endless()
    r["/silent.jpg"] = Silent()
    r["/drip.jpg"] = Trickle(pause=0.2)  # never 1.5 s without a byte, never the end
    r["/x.jpg"] = Body(b"<!doctype html><p>not found, but 200</p>" * 20, "text/html")
    r["/good.jpg"] = Body(img)
    r["/labelled-text.jpg"] = Body(img, "text/plain")  # the bytes decide, not the label
    closed_port = _unused_port()
    daemon.write_config(
        {
            "download": {
                "allow_private_addresses": True,
                "connect_timeout": 2.0,
                "read_timeout": 1.5,
                "total_timeout": 5.0,
                "max_bytes": 300_000,
                "retries": 2,
                "max_redirects": 3,
            }
        }
    )
    daemon.start()
    u = server.url
    urls = {
        "missing": u("/missing.jpg"),
        "flaky": u("/flaky.jpg"),
        "busy": u("/busy.jpg"),
        "down": u("/down.jpg"),
        "chain": u("/chain1"),
        "loop": u("/loop-a"),
        "slow": u("/slow.jpg"),
        "endless": u("/endless.jpg"),
        "silent": u("/silent.jpg"),
        "drip": u("/drip.jpg"),
        "html": u("/x.jpg"),
        "refused": f"http://127.0.0.1:{closed_port}/y.jpg",
        "file": "file:///etc/passwd",
        "ftp": "ftp://127.0.0.1/x.jpg",
        "garbage": "garbage",
        "good": u("/good.jpg"),
        "labelled": u("/labelled-text.jpg"),
    }
    write_manifest(daemon, "bad.urls", ["# every way to fail", "", *urls.values()])
    (daemon.incoming / "latin.urls").write_bytes(b"http://example.com/caf\xe9.jpg\n")

    done = ["flaky", "busy", "chain", "slow", "good", "labelled"]
    failed = [k for k in urls if k not in done]
    wait_until(lambda: len(url_rows(daemon)) == len(urls), 60, "an outcome for every URL")
    rows = url_rows(daemon)
    assert {k for k in urls if rows[urls[k]][0] == "done"} == set(done)
    why = reasons(daemon)
    assert set(why) == {urls[k] for k in failed}
    expect = {
        "missing": "HTTP 404",
        "down": "HTTP 502",
        "loop": "redirect loop",
        "endless": "larger than 300 KB",
        "silent": "timed out after 1.5 s",
        "drip": "timed out: not complete within total_timeout (5 s)",
        "html": "not an image (text/html)",
        "refused": "connection refused",
        "file": "unsupported scheme: file",
        "ftp": "unsupported scheme: ftp",
        "garbage": "not a URL",
    }
    for key, text in expect.items():
        assert text in why[urls[key]], (key, why[urls[key]])
    assert all(f["source"] == "bad.urls" for f in daemon.status()["failures"] if "url" in f)
    assert {"source": "latin.urls", "reason": "not UTF-8 text (line 1)"} in (
        daemon.status()["failures"]
    )

    c = server.counts
    assert c["/missing.jpg"] == 1  # a 404 is not retried
    assert c["/flaky.jpg"] == 2  # 500, then 200
    assert c["/down.jpg"] == 3  # one try and two retries
    assert "3 attempts" in why[urls["down"]] and "3 attempts" in why[urls["refused"]]
    assert c["/silent.jpg"] == 1  # a read timeout is not retried
    assert c["/drip.jpg"] == 1  # nor the total one
    assert c["/chain1"] == c["/chain2"] == c["/chain3"] == c["/final.jpg"] == 1
    first, second = server.times["/busy.jpg"]
    assert second - first >= 2.0  # Retry-After: 2 was honoured (a lower bound only)
    for key in done:
        name = Path(rows[urls[key]][2] or "").name
        assert daemon.done(f"bad/{name}"), key
    assert daemon.proc is not None and daemon.proc.poll() is None


def _unused_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- 3. safety with the default configuration -----------------------------------------------


def test_private_addresses_are_refused_before_any_connection(
    daemon: Daemon, server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    with serving("127.0.0.2") as public:
        monkeypatch.setenv("THUMBD_TEST_RESOLVE", "photos.example=127.0.0.1;cdn.example=127.0.0.2")
        monkeypatch.setenv("THUMBD_TEST_PUBLIC", "127.0.0.2")  # stands in for a public host
        img = jpeg((200, 150))
        server.routes["/secret.jpg"] = Body(img)
        public.routes["/ok.jpg"] = Body(img)
        public.routes["/to-loopback"] = Redirect(server.url("/secret.jpg"))
        public.routes["/to-name"] = Redirect(server.url("/secret.jpg", "photos.example"))
        daemon.write_config({"download": FAST})  # allow_private_addresses stays false
        daemon.start()
        p = server.port
        refused = {
            "loopback": server.url("/secret.jpg"),
            "name": f"http://photos.example:{p}/secret.jpg",
            "localhost": f"http://localhost:{p}/secret.jpg",
            "ipv6": f"http://[::1]:{p}/secret.jpg",
            "metadata": "http://169.254.169.254/latest/meta-data/",
            "private": "http://10.11.12.13/x.jpg",
            "redirect": public.url("/to-loopback", "cdn.example"),
            "rebound": public.url("/to-name", "cdn.example"),
        }
        ok = public.url("/ok.jpg", "cdn.example")
        write_manifest(daemon, "safe.urls", [*refused.values(), ok])
        wait_until(lambda: len(url_rows(daemon)) == len(refused) + 1, 60, "every outcome")

        why = reasons(daemon)
        assert set(why) == set(refused.values())
        for key, url in refused.items():
            assert why[url].startswith("refused: private address"), (key, why[url])
        assert "photos.example is 127.0.0.1" in why[refused["name"]]
        assert f"(redirected to {server.url('/secret.jpg')})" in why[refused["redirect"]]
        assert server.connections == 0 and server.total_requests() == 0  # not even a connect
        assert public.counts["/to-loopback"] == 1 and public.counts["/to-name"] == 1
        wait_until(lambda: daemon.done("safe/ok.jpg"), 30, "the public image")
        assert f"cdn.example:{public.port}" in public.hosts  # Host: the name, not the address
        assert public.agents == {f"thumbd/{__version__}"}


# -- 4. the per-host limit ------------------------------------------------------------------


@pytest.mark.slow
def test_500_urls_on_one_host_never_exceed_max_per_host(daemon: Daemon) -> None:
    with serving("127.0.0.1", hold=0.02) as server:
        tiny = jpeg((40, 30))
        for i in range(500):
            server.routes[f"/t/{i:03d}.jpg"] = Body(tiny)
        daemon.write_config(
            {
                "download": {"allow_private_addresses": True, "concurrency": 6, "max_per_host": 3},
                "thumbnails": {"widths": [32]},
            }
        )
        daemon.start()
        write_manifest(daemon, "many.urls", [server.url(f"/t/{i:03d}.jpg") for i in range(500)])
        out = daemon.outgoing / "many"
        pid = daemon.proc.pid if daemon.proc else 0
        threads: list[int] = []

        def finished() -> bool:
            threads.append(len(os.listdir(f"/proc/{pid}/task")))
            return out.is_dir() and len(list(out.iterdir())) == 500

        wait_until(finished, 120, "500 thumbnails")
        assert max(threads) < 30  # a bounded set of threads, not one per URL
        wait_until(lambda: len(url_rows(daemon)) == 500, 30, "500 URL records")
        assert {s for s, *_ in url_rows(daemon).values()} == {"done"}
        assert server.total_requests() == 500
        assert server.max_active == 3  # reached, and never more: six at once, three per host
        assert server.max_open <= 3
        assert server.connections < 50  # keep-alive: connections are reused, not one per URL
        assert daemon.status()["manifests"][0]["done"] == 500


# -- 5. names -------------------------------------------------------------------------------


def test_names_are_distinct_safe_and_stay_in_the_manifest_folder(
    daemon: Daemon, server: Server, tmp_path: Path
) -> None:
    paths = [
        "/a/photo.jpg",
        "/b/photo.jpg",
        "/dl/..%2F..%2Fetc%2Fx.jpg",
        "/a/b/../../etc/x.jpg",
        "/c/%2E%2E",
        "/d/.hidden%0A%01.png",
        "/e/" + "long" * 100 + ".jpg",
    ]
    for i, path in enumerate(paths):
        server.routes[path] = Body(jpeg((120, 90), seed=i))
    outside = tmp_path / "outside"
    outside.mkdir()
    (daemon.incoming / "evil").symlink_to(outside)
    daemon.write_config(ALLOW)
    daemon.start()
    urls = [server.url(p) for p in paths]
    write_manifest(daemon, "names.urls", urls)
    write_manifest(daemon, "again.urls", list(reversed(urls)))  # same URLs, other order
    write_manifest(daemon, "evil.urls", [server.url("/a/photo.jpg")])
    wait_until(lambda: url_count(daemon) == 2 * len(urls) + 1, 60, "every outcome")

    names = sorted(p.name for p in downloads(daemon, "names"))
    assert len(names) == len(set(names)) == len(paths)
    assert all(not n.startswith(".") and n.isprintable() for n in names), names
    assert all(len(n.encode()) < 200 for n in names), names
    photos = [n for n in names if n.startswith("photo")]
    assert len(photos) == 2 and all(n.endswith(".jpg") for n in photos)
    assert sorted(p.name for p in downloads(daemon, "again")) == names  # from the URL alone
    tops = {p.relative_to(daemon.incoming).parts[0] for p in all_files(daemon.incoming)}
    assert tops == {"names.urls", "names", "again.urls", "again", "evil.urls"}
    assert list(outside.iterdir()) == []
    assert not (tmp_path / "etc").exists()
    why = reasons(daemon)
    assert "leads outside" in why[server.url("/a/photo.jpg")]


# -- 6. SIGTERM, kill -9, restart -----------------------------------------------------------


def test_sigterm_and_kill_leave_no_partial_file_and_restarts_fetch_only_the_rest(
    daemon: Daemon,
) -> None:
    body = jpeg((160, 120))
    with serving("127.0.0.1") as server:
        paths = [f"/s/{i:03d}.jpg" for i in range(200)]
        for p in paths:
            server.routes[p] = Slow(body, parts=2, pause=0.1)
        daemon.write_config(
            {"download": {"allow_private_addresses": True, "concurrency": 8, "max_per_host": 8}}
        )
        write_manifest(daemon, "batch.urls", [server.url(p) for p in paths])

        daemon.start()
        wait_until(lambda: len(downloads(daemon, "batch")) >= 20, 60, "some downloads")
        assert daemon.stop(signal.SIGTERM) == 0
        _assert_complete(daemon, body)
        assert "stopped (SIGTERM)" in daemon.read_log().splitlines()[-1]
        done_first = _done_paths(daemon)
        assert 0 < len(done_first) < 200

        daemon.start()
        wait_until(lambda: len(_done_paths(daemon)) >= len(done_first) + 20, 60, "more")
        daemon.kill_group()
        _assert_complete(daemon, body)  # a killed download never has its final name
        done_second = _done_paths(daemon)
        before = dict(server.counts)

        daemon.start()
        wait_until(lambda: len(_done_paths(daemon)) == 200, 90, "the rest after restart")
        wait_until(lambda: all(daemon.done(f"batch/{i:03d}.jpg") for i in range(200)), 60, "all")
        for path in done_second:
            assert server.counts[path] == before[path], path  # done URLs are not fetched again
        assert all(server.counts[p] >= 1 for p in paths)
        assert all(server.counts[p] == 1 for p in done_first)
        assert daemon.stop() == 0
        _assert_complete(daemon, body)
        assert not (daemon.incoming / ".thumbd-downloads").exists()


def _done_paths(daemon: Daemon) -> set[str]:
    from urllib.parse import urlsplit

    return {urlsplit(u).path for u, row in url_rows(daemon).items() if row[0] == "done"}


def _assert_complete(daemon: Daemon, body: bytes) -> None:
    """Every file under a final name in the manifest's folder is the whole body."""
    for p in downloads(daemon, "batch"):
        assert p.read_bytes() == body, f"{p} is partial ({p.stat().st_size} bytes)"


def test_sigterm_cancels_a_download_that_would_outlast_shutdown_timeout(
    daemon: Daemon, server: Server
) -> None:
    server.routes["/hang.jpg"] = Silent()
    server.routes["/ok.jpg"] = Body(jpeg((100, 80)))
    daemon.write_config(
        {
            "download": {"allow_private_addresses": True, "read_timeout": 120.0},
            "daemon": {"shutdown_timeout": 2},
        }
    )
    daemon.start()
    write_manifest(daemon, "hang.urls", [server.url("/hang.jpg"), server.url("/ok.jpg")])
    wait_until(lambda: server.counts["/hang.jpg"] == 1, 30, "the request that hangs")
    wait_until(lambda: daemon.done("hang/ok.jpg"), 30, "the other URL")
    # Far less than read_timeout: the download was cancelled, not waited for.
    assert daemon.stop(signal.SIGTERM, timeout=60) == 0
    log = daemon.read_log()
    assert "1 download still running after 2 s; cancelling them" in log
    assert "still busy at exit" not in log  # the cancel woke the thread from its read
    assert server.url("/hang.jpg") not in url_rows(daemon)  # still pending, not failed
    assert daemon.status()["pending"] == 1  # the manifest
    daemon.start()
    wait_until(lambda: server.counts["/hang.jpg"] == 2, 30, "the retry after restart")
    assert server.counts["/ok.jpg"] == 1


# -- adding lines, restarts, once -----------------------------------------------------------


def test_a_restart_names_an_unfinished_url_as_one_run_would(daemon: Daemon, server: Server) -> None:
    img = jpeg((120, 90))
    server.routes["/a/photo.jpg"] = Body(img)
    server.routes["/b/photo.jpg"] = Silent()  # still out when the daemon stops
    daemon.write_config(
        {
            "download": {"allow_private_addresses": True, "read_timeout": 120.0},
            "daemon": {"shutdown_timeout": 1},
        }
    )
    daemon.start()
    a, b = server.url("/a/photo.jpg"), server.url("/b/photo.jpg")
    write_manifest(daemon, "m.urls", [a, b])
    wait_until(lambda: a in url_rows(daemon) and server.counts["/b/photo.jpg"] == 1, 30, "a, b")
    assert daemon.stop(signal.SIGTERM) == 0
    assert b not in url_rows(daemon)  # pending

    server.routes["/b/photo.jpg"] = Body(img)
    daemon.start()
    wait_until(lambda: b in url_rows(daemon), 30, "b after the restart")
    names = {url: Path(row[2] or "").name for url, row in url_rows(daemon).items()}
    # The names one uninterrupted run gives: both hashed, since their plain names clash.
    assert names == {a: f"photo-{url_hash(a)}.jpg", b: f"photo-{url_hash(b)}.jpg"}
    wait_until(lambda: daemon.done(f"m/photo-{url_hash(b)}"), 30, "b's thumbnails")
    assert sorted(p.name for p in downloads(daemon, "m")) == sorted(names.values())


def test_urls_taken_out_of_a_manifest_while_it_downloads_are_not_fetched(
    daemon: Daemon, server: Server
) -> None:
    first = Gate(Body(jpeg((120, 90), seed=1)))
    server.routes["/first.jpg"] = first
    server.routes["/new.jpg"] = Body(jpeg((120, 90), seed=2))
    old = [f"/old/{i}.jpg" for i in range(5)]
    for i, path in enumerate(old):
        server.routes[path] = Body(jpeg((120, 90), seed=10 + i))
    daemon.write_config(
        {
            "download": {
                "allow_private_addresses": True,
                "read_timeout": 120.0,
                "concurrency": 1,  # the first URL holds the only slot: the others wait in line
                "max_per_host": 1,
            }
        }
    )
    daemon.start()
    write_manifest(daemon, "m.urls", [server.url("/first.jpg"), *map(server.url, old)])
    wait_until(lambda: server.counts["/first.jpg"] == 1, 30, "the first request")
    write_manifest(daemon, "m.urls", [server.url("/first.jpg"), server.url("/new.jpg")])
    wait_until(lambda: "5 queued URLs are no longer listed" in daemon.read_log(), 30, "the drop")
    first.opened.set()
    wait_until(lambda: daemon.done("m/first.jpg") and daemon.done("m/new.jpg"), 60, "the two")
    assert all(server.counts[path] == 0 for path in old)
    assert sorted(p.name for p in downloads(daemon, "m")) == ["first.jpg", "new.jpg"]
    wait_until(lambda: "manifest m.urls: 2 URLs done, 0 failed" in daemon.read_log(), 30, "totals")


def test_adding_lines_fetches_only_the_new_urls(daemon: Daemon, server: Server) -> None:
    for i in range(5):
        server.routes[f"/n/{i}.jpg"] = Body(jpeg((100, 80), seed=i))
    daemon.write_config(ALLOW)
    daemon.start()
    first = [server.url(f"/n/{i}.jpg") for i in range(3)]
    gone = server.url("/n/gone.jpg")  # a 404 for now
    write_manifest(daemon, "grow.urls", [*first, gone])
    wait_until(lambda: all(daemon.done(f"grow/{i}.jpg") for i in range(3)), 30, "the first 3")
    wait_until(lambda: gone in reasons(daemon), 30, "the 404")

    server.routes["/n/gone.jpg"] = Body(jpeg((100, 80), seed=9))
    more = [server.url(f"/n/{i}.jpg") for i in (3, 4)]
    write_manifest(daemon, "grow.urls", [*first, gone, *more])
    wait_until(lambda: all(daemon.done(f"grow/{i}.jpg") for i in range(5)), 30, "the new 2")
    assert all(server.counts[f"/n/{i}.jpg"] == 1 for i in range(5))
    assert server.counts["/n/gone.jpg"] == 1  # a failure is not retried while it is listed

    write_manifest(daemon, "grow.urls", [*first, *more])  # taken out ...
    wait_until(lambda: gone not in reasons(daemon), 30, "the failure forgotten")
    write_manifest(daemon, "grow.urls", [*first, *more, gone])  # ... and put back: tried again
    wait_until(lambda: daemon.done("grow/gone.jpg"), 30, "the second try")
    assert server.counts["/n/gone.jpg"] == 2

    assert daemon.stop() == 0
    requests = server.total_requests()
    daemon.start()
    wait_until(lambda: "scan of" in daemon.read_log().split("thumbd started")[-1], 30, "the scan")
    wait_until(lambda: daemon.status()["pending"] == 0, 30, "nothing pending")
    assert server.total_requests() == requests  # a restart fetches nothing that is done


def test_once_downloads_and_renders_a_manifest(tmp_path: Path, server: Server) -> None:
    server.routes["/o/a.jpg"] = Body(jpeg((300, 200)))
    d = Daemon(tmp_path, ALLOW)
    (d.incoming / "o.urls").write_text(server.url("/o/a.jpg") + "\n")
    ok = thumbd("once", "-c", str(d.config))
    assert ok.returncode == 0, ok.stderr
    assert d.done("o/a.jpg")
    (d.incoming / "p.urls").write_text(server.url("/o/missing.jpg") + "\n")
    bad = thumbd("once", "-c", str(d.config))
    assert bad.returncode == 1, bad.stderr
    assert "HTTP 404" in bad.stderr
    text = thumbd("status", "-c", str(d.config))
    assert f"p.urls {server.url('/o/missing.jpg')}: HTTP 404" in text.stdout


# -- a reload ---------------------------------------------------------------------------------


def test_a_reload_to_a_new_incoming_folder_reads_manifests_there_with_new_settings(
    daemon: Daemon, server: Server
) -> None:
    daemon.write_config(ALLOW)
    daemon.start()
    moved = daemon.tmp / "incoming2"
    moved.mkdir()
    reload_and_fetch(daemon, server, "first", {}, daemon.incoming)
    # A new incoming/ (and user agent): manifests are read there, downloads land there.
    reload_and_fetch(daemon, server, "second", {"paths": {"incoming": str(moved)}}, moved)
    assert not (daemon.incoming / "second").exists()
    assert "cannot read manifest" not in daemon.read_log()
    # [download] alone: the next download after the reload uses the new settings.
    reload_and_fetch(daemon, server, "third", {"paths": {"incoming": str(moved)}}, moved)
    assert server.agents == {"agent-first", "agent-second", "agent-third"}
    assert daemon.stop() == 0


def reload_and_fetch(
    daemon: Daemon, server: Server, name: str, settings: dict[str, Any], incoming: Path
) -> None:
    """Reload with `settings` and the user agent `agent-<name>`, then download one image through
    `<incoming>/<name>.urls`."""
    body = jpeg((300, 200), seed=len(name))
    server.routes[f"/r/{name}.jpg"] = Body(body)
    reloads = daemon.read_log().count("reloaded ")
    download = {**ALLOW["download"], "user_agent": f"agent-{name}"}
    daemon.write_config({**settings, "download": download})
    daemon.send(signal.SIGHUP)
    wait_until(lambda: daemon.read_log().count("reloaded ") > reloads, 30, "the reload")
    tmp = incoming / f".{name}.urls.tmp"
    tmp.write_text(server.url(f"/r/{name}.jpg") + "\n")
    os.replace(tmp, incoming / f"{name}.urls")
    wait_until(lambda: daemon.done(f"{name}/{name}.jpg"), 30, f"the download of {name}.jpg")
    assert (incoming / name / f"{name}.jpg").read_bytes() == body
