"""The event-loop download stage against the real daemon and real servers on 127.0.0.x: how
many requests are in flight, the connect-time address check on every hop, bodies that inflate,
stall or break off, very large manifests and lines, and what thumbd takes from its environment.

As in test_downloads.py, the safety tests keep the default configuration and give 127.0.0.x
public names through the test-only resolver override (THUMBD_TEST_RESOLVE / THUMBD_TEST_PUBLIC).
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Daemon, wait_until
from tests.httpserver import (
    Body,
    CutBody,
    HeadersOnly,
    Redirect,
    Server,
    Tally,
    gzip_bomb,
    serving,
)
from tests.images import natural
from tests.integration.test_downloads import downloads, reasons, url_rows, write_manifest

FAST = {"connect_timeout": 2.0, "read_timeout": 1.5, "total_timeout": 20.0}


def jpeg(size: tuple[int, int] = (120, 90), seed: int = 1) -> bytes:
    buf = io.BytesIO()
    natural(size, seed).save(buf, "JPEG", quality=85)
    return buf.getvalue()


def status_of(pid: int, key: str) -> int:
    """A kB figure of /proc/<pid>/status (VmRSS, VmHWM)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise AssertionError(f"no {key} in /proc/{pid}/status")


def pid_of(daemon: Daemon) -> int:
    assert daemon.proc is not None
    return daemon.proc.pid


# -- concurrency ----------------------------------------------------------------------------


def test_requests_in_flight_are_bounded_in_all_and_per_host_and_hosts_take_turns(
    daemon: Daemon,
) -> None:
    tally = Tally()
    hosts = [f"127.0.0.{i}" for i in range(2, 8)]  # six hosts
    servers = [Server(h, hold=0.2, tally=tally) for h in hosts]
    try:
        for s in servers:
            s.__enter__()
            for i in range(12):
                s.routes[f"/c/{i}.jpg"] = Body(jpeg((40, 30), seed=i))
        daemon.write_config(
            {
                "download": {"allow_private_addresses": True, "concurrency": 8, "max_per_host": 2},
                "thumbnails": {"widths": [32]},
            }
        )
        daemon.start()
        # Host by host in the file: fairness must come from the stage, not from the order.
        urls = [s.url(f"/c/{i}.jpg") for s in servers for i in range(12)]
        write_manifest(daemon, "wide.urls", urls)
        wait_until(lambda: len(url_rows(daemon)) == len(urls), 90, "every outcome")
        assert {row[0] for row in url_rows(daemon).values()} == {"done"}
        assert tally.max_active == 8  # reached, never more
        assert all(s.max_active <= 2 for s in servers)
        assert all(s.total_requests() == 12 for s in servers)
        # The first requests went to several hosts, although the file lists one host first.
        firsts = sorted((min(t for ts in s.times.values() for t in ts), s.host) for s in servers)
        last_host_start = firsts[-1][0]
        first_host_done = max(t for ts in servers[0].times.values() for t in ts)
        assert last_host_start < first_host_done  # the last host did not wait for the first
    finally:
        for s in servers:
            s.close()


# -- the connect-time check: every hop, IP literals too --------------------------------------


def test_redirects_to_ip_literals_and_mixed_names_are_refused_at_connect_time(
    daemon: Daemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    with serving("127.0.0.1") as private, serving("127.0.0.2") as public:
        monkeypatch.setenv(
            "THUMBD_TEST_RESOLVE", "cdn.example=127.0.0.2;mixed.example=127.0.0.2,127.0.0.1"
        )
        monkeypatch.setenv("THUMBD_TEST_PUBLIC", "127.0.0.2")
        private.routes["/secret.jpg"] = Body(jpeg())
        public.routes["/ok.jpg"] = Body(jpeg())
        p = private.port
        targets = {
            "loopback": f"http://127.0.0.1:{p}/secret.jpg",
            "mapped": f"http://[::ffff:127.0.0.1]:{p}/secret.jpg",
            "metadata": "http://169.254.169.254/latest/meta-data/",
        }
        for key, location in targets.items():
            public.routes[f"/to-{key}"] = Redirect(location)
        daemon.write_config({"download": FAST})  # allow_private_addresses stays false
        daemon.start()
        redirects = {k: public.url(f"/to-{k}", "cdn.example") for k in targets}
        mixed = f"http://mixed.example:{public.port}/m.jpg"
        ok = public.url("/ok.jpg", "cdn.example")
        write_manifest(daemon, "hops.urls", [*redirects.values(), mixed, ok])
        wait_until(lambda: len(url_rows(daemon)) == len(redirects) + 2, 60, "every outcome")

        why = reasons(daemon)
        assert set(why) == {*redirects.values(), mixed}
        kinds = {"loopback": "loopback", "mapped": "loopback", "metadata": "link-local"}
        for key, url in redirects.items():
            assert why[url].startswith("refused: private address"), (key, why[url])
            assert f"{kinds[key]})" in why[url] and "(redirected to " in why[url], why[url]
        assert "mixed.example is 127.0.0.1" in why[mixed]
        assert private.connections == 0  # not even a connect
        assert all(public.counts[f"/to-{k}"] == 1 for k in targets)
        wait_until(lambda: daemon.done("hops/ok.jpg"), 30, "the public image")


# -- bodies that inflate, stall, break off --------------------------------------------------


def test_a_gzip_bomb_stops_at_max_bytes_of_inflated_data_with_flat_memory(
    daemon: Daemon, server_pair: tuple[Server, bytes]
) -> None:
    server, bomb = server_pair
    server.routes["/bomb.jpg"] = Body(bomb, headers={"Content-Encoding": "gzip"})
    server.routes["/ok.jpg"] = Body(jpeg())
    daemon.write_config(
        {"download": {"allow_private_addresses": True, **FAST, "max_bytes": 2_000_000}}
    )
    daemon.start()
    write_manifest(daemon, "warm.urls", [server.url("/ok.jpg")])  # the loop, aiohttp loaded
    wait_until(lambda: daemon.done("warm/ok.jpg"), 30, "the first download")
    before = status_of(pid_of(daemon), "VmHWM")
    write_manifest(daemon, "bomb.urls", [server.url("/bomb.jpg")])
    wait_until(lambda: server.url("/bomb.jpg") in reasons(daemon), 60, "the bomb's outcome")
    assert reasons(daemon)[server.url("/bomb.jpg")] == "larger than 2 MB"
    growth_mb = (status_of(pid_of(daemon), "VmHWM") - before) / 1024
    assert growth_mb < 30, f"peak memory grew by {growth_mb:.0f} MB for a 200 MB inflation"
    assert len(bomb) < 400_000
    assert downloads(daemon, "bomb") == []
    assert not list((daemon.incoming / ".thumbd-downloads").glob("*"))


@pytest.fixture(scope="module")
def bomb() -> bytes:
    return gzip_bomb(200 << 20)


@pytest.fixture
def server_pair(bomb: bytes) -> Iterator[tuple[Server, bytes]]:
    with serving("127.0.0.1") as s:
        yield s, bomb


def test_headers_then_nothing_and_a_body_cut_short_fail_with_their_reasons(
    daemon: Daemon,
) -> None:
    with serving("127.0.0.1") as server:
        server.routes["/stalled.jpg"] = HeadersOnly()
        server.routes["/cut.jpg"] = CutBody(jpeg((400, 300)), sent=2000)
        daemon.write_config({"download": {"allow_private_addresses": True, **FAST, "retries": 1}})
        daemon.start()
        urls = [server.url("/stalled.jpg"), server.url("/cut.jpg")]
        write_manifest(daemon, "broken.urls", urls)
        wait_until(lambda: len(url_rows(daemon)) == 2, 60, "both outcomes")
        why = reasons(daemon)
        assert why[urls[0]] == "timed out after 1.5 s"
        assert why[urls[1]] == "connection closed before the end of the body, 2 attempts"
        assert server.counts["/stalled.jpg"] == 1 and server.counts["/cut.jpg"] == 2
        assert downloads(daemon, "broken") == []


# -- very large manifests and lines ---------------------------------------------------------


def test_a_url_line_of_a_megabyte_fails_alone(daemon: Daemon) -> None:
    with serving("127.0.0.1") as server:
        server.routes["/fine.jpg"] = Body(jpeg())
        daemon.write_config({"download": {"allow_private_addresses": True, **FAST}})
        daemon.start()
        huge = server.url("/" + "a" * 1_000_000 + ".jpg")
        write_manifest(daemon, "long.urls", [huge, server.url("/fine.jpg")])
        wait_until(lambda: daemon.done("long/fine.jpg"), 60, "the other line")
        wait_until(lambda: huge in reasons(daemon), 30, "the long line's outcome")
        assert reasons(daemon)[huge] == "not a URL (longer than 8192 characters)"
        assert server.total_requests() == 1
        assert len(daemon.read_log()) < 200_000  # the line is not logged whole


@pytest.mark.slow
def test_ten_thousand_urls_keep_memory_flat_and_show_progress(daemon: Daemon) -> None:
    count = 10_000
    with serving("127.0.0.1") as server:
        tiny = jpeg((16, 12))
        for i in range(count):
            server.routes[f"/t/{i:05d}.jpg"] = Body(tiny)
        daemon.write_config(
            {
                "download": {"allow_private_addresses": True, "max_per_host": 16},
                "thumbnails": {"widths": [8]},
            }
        )
        daemon.start()
        write_manifest(daemon, "warm.urls", [server.url("/t/00000.jpg")])
        wait_until(lambda: daemon.done("warm/00000.jpg", (8,)), 30, "the first download")
        pid = pid_of(daemon)
        before = status_of(pid, "VmRSS")
        write_manifest(daemon, "big.urls", [server.url(f"/t/{i:05d}.jpg") for i in range(count)])
        seen: list[int] = []
        peak = [before]

        def progress() -> bool:
            peak[0] = max(peak[0], status_of(pid, "VmRSS"))
            rows = [m for m in daemon.status()["manifests"] if m["manifest"] == "big.urls"]
            done = rows[0]["done"] if rows else 0
            seen.append(done)
            return done == count

        wait_until(progress, 600, "10,000 downloads")
        assert any(0 < d < count for d in seen)  # status showed progress on the way
        growth_mb = (peak[0] - before) / 1024
        assert growth_mb <= 30, f"RSS grew by {growth_mb:.0f} MB"
        assert server.total_requests() == count + 1


# -- what thumbd takes from its environment and the system ---------------------------------


def test_no_proxy_from_the_environment_idna_2008_names_and_the_umask(
    daemon: Daemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    with serving("127.0.0.1") as server, serving("127.0.0.3") as proxy:
        monkeypatch.setenv("THUMBD_TEST_RESOLVE", "xn--fa-hia.de=127.0.0.1;fass.de=127.0.0.3")
        body = jpeg()
        server.routes["/p.jpg"] = Body(body)
        proxy.routes["/p.jpg"] = Body(jpeg(seed=5))
        daemon.write_config({"download": {"allow_private_addresses": True, **FAST}})
        env = {k: proxy.url("/") for k in ("http_proxy", "HTTP_PROXY", "all_proxy")}
        old = os.umask(0o027)
        try:
            daemon.start(env=env)
        finally:
            os.umask(old)
        write_manifest(daemon, "idn.urls", [f"http://faß.de:{server.port}/p.jpg"])
        wait_until(lambda: daemon.done("idn/p.jpg"), 30, "the download")
        assert server.hosts == [f"xn--fa-hia.de:{server.port}"]  # UTS 46, not fass.de
        assert proxy.connections == 0
        got = daemon.incoming / "idn" / "p.jpg"
        assert got.read_bytes() == body
        assert got.stat().st_mode & 0o777 == 0o640  # 0666 less the daemon's umask 027


def test_an_old_threads_setting_names_its_replacement(tmp_path: Path) -> None:
    from tests.conftest import thumbd

    config = tmp_path / "thumbd.toml"
    config.write_text("[download]\nthreads = 4\n")
    result = thumbd("check-config", "-c", str(config))
    assert result.returncode != 0
    assert "[download] threads: it is gone" in result.stderr
    assert "concurrency" in result.stderr
