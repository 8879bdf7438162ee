"""Running as a service: systemd's notify protocol and watchdog, start/status/stop with a pidfile,
live reload on SIGHUP, live status, metrics and logs; the real daemon, real sockets, signals."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Daemon, _env, temp_files, thumbd, wait_until
from tests.integration.test_core import jpeg_bytes, photo
from tests.integration.test_robustness import source_open_in, workers_of

OLD_WIDTHS = (200, 64, 32)


def png_bytes(size: tuple[int, int]) -> bytes:
    """A large PNG: no draft decoding, so a render takes a noticeable fraction of a second."""
    buf = io.BytesIO()
    photo(size).save(buf, "PNG")
    return buf.getvalue()


def drop(daemon: Daemon, names: list[str], data: bytes) -> None:
    """Write each file beside incoming/ and rename it in: it arrives complete. Each gets its
    name after the image's end (decoders never read there), so that each is rendered: copies
    of one file would be given one render's thumbnails (output/reuse.py)."""
    for name in names:
        staged = daemon.tmp / f".staged-{name}"
        staged.write_bytes(data + name.encode())
        os.rename(staged, daemon.incoming / name)


class NotifySocket:
    """A unix datagram socket standing in for systemd's $NOTIFY_SOCKET."""

    def __init__(self) -> None:
        # sun_path holds 107 bytes; pytest's tmp_path can be longer than that.
        self.dir = tempfile.mkdtemp(prefix="thumbd-notify-", dir="/tmp")
        self.path = os.path.join(self.dir, "notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.seen: list[str] = []

    def receive(self, timeout: float) -> str | None:
        self.sock.settimeout(timeout)
        try:
            message = self.sock.recv(4096).decode()
        except (TimeoutError, BlockingIOError):  # settimeout(0) makes it non-blocking
            return None
        self.seen.append(message)
        return message

    def wait_for(self, predicate: Callable[[str], bool], timeout: float, what: str) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            message = self.receive(0.2)
            if message is not None and predicate(message):
                return message
        pytest.fail(f"timed out after {timeout} s waiting for {what}; got {self.seen[-10:]}")

    def drain(self) -> None:
        while self.receive(0.0) is not None:
            pass

    def collect(self, seconds: float) -> list[str]:
        got: list[str] = []
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            message = self.receive(left)
            if message is not None:
                got.append(message)
        return got

    def close(self) -> None:
        self.sock.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def notify_socket() -> Iterator[NotifySocket]:
    s = NotifySocket()
    yield s
    s.close()


def lines(message: str) -> list[str]:
    return message.split("\n")


# -- 1. the notify protocol and the watchdog ----------------------------------------------------


def test_notify_ready_status_reload_stop_and_watchdog_follows_health(
    daemon: Daemon, notify_socket: NotifySocket
) -> None:
    daemon.start(
        env={
            "NOTIFY_SOCKET": notify_socket.path,
            "WATCHDOG_USEC": "1000000",
            "THUMBD_TEST_HOOKS": "1",
        }
    )
    notify_socket.wait_for(lambda m: "READY=1" in lines(m), 30, "READY=1")
    drop(daemon, ["a.jpg"], jpeg_bytes())
    status = notify_socket.wait_for(lambda m: "STATUS=1 done" in m, 30, "a STATUS= with 1 done")
    assert re.search(r"STATUS=1 done, 0 failed, \d+ queued, \d+ in flight, [\d.]+ files/s", status)
    notify_socket.wait_for(lambda m: m == "WATCHDOG=1", 30, "a watchdog ping")

    # The observer dies and cannot come back (its folder is gone): the pings stop.
    away = daemon.tmp / "incoming.away"
    os.rename(daemon.incoming, away)
    daemon.send(signal.SIGUSR2)
    wait_until(
        lambda: "unhealthy: the observer thread is dead" in daemon.read_log(), 30, "unhealthy"
    )
    notify_socket.drain()  # anything sent before the daemon logged that
    quiet = notify_socket.collect(3.0)  # six ping intervals
    assert "WATCHDOG=1" not in quiet
    assert any("unhealthy: the observer thread is dead" in m for m in quiet), quiet

    # The folder is back: the observer restarts, and so do the pings.
    os.rename(away, daemon.incoming)
    notify_socket.wait_for(lambda m: m == "WATCHDOG=1", 60, "pings after the observer is back")
    assert "healthy again" in daemon.read_log()
    drop(daemon, ["b.jpg"], jpeg_bytes(seed=2))
    wait_until(lambda: daemon.done("b.jpg"), 30, "a file after the observer restarted")

    daemon.send(signal.SIGHUP)
    reloading = notify_socket.wait_for(lambda m: "RELOADING=1" in lines(m), 30, "RELOADING=1")
    assert re.search(r"^MONOTONIC_USEC=\d+$", reloading, re.M), reloading
    notify_socket.wait_for(lambda m: "READY=1" in lines(m), 30, "READY=1 after the reload")

    daemon.send(signal.SIGTERM)
    stopping = notify_socket.wait_for(lambda m: "STOPPING=1" in lines(m), 30, "STOPPING=1")
    # shutdown_timeout (20 s here) plus a margin, whatever the unit's TimeoutStopSec= says
    assert "EXTEND_TIMEOUT_USEC=50000000" in lines(stopping), stopping
    assert daemon.proc is not None and daemon.proc.wait(timeout=60) == 0


def test_a_notify_socket_that_is_gone_is_logged_once_and_changes_nothing(daemon: Daemon) -> None:
    daemon.start(env={"NOTIFY_SOCKET": "/nonexistent/notify", "WATCHDOG_USEC": "1000000"})
    drop(daemon, ["a.jpg"], jpeg_bytes())
    wait_until(lambda: daemon.done("a.jpg"), 30, "a thumbnail")
    assert daemon.stop() == 0
    assert daemon.read_log().count("cannot notify systemd at /nonexistent/notify") == 1


# -- 3. start / status / stop with a pidfile ----------------------------------------------------


def run_start(config: Path) -> subprocess.CompletedProcess[str]:
    """`thumbd start -c NAME` from the config's folder (a relative path, as people type it),
    under umask 077: the daemon must set its own (022) so that thumbnails stay readable."""
    command = f'umask 077; exec "{sys.executable}" -m thumbd start -c "{config.name}"'
    return subprocess.run(
        ["sh", "-c", command],
        cwd=config.parent,
        capture_output=True,
        text=True,
        timeout=120,
        env=_env(),
    )


def read_pid(path: Path) -> int:
    return int(path.read_text().strip())


def lock_free(daemon: Daemon) -> bool:
    return "thumbd: not running" in thumbd("status", "-c", str(daemon.config)).stdout


@pytest.fixture
def background(tmp_path: Path) -> Iterator[tuple[Daemon, list[int]]]:
    """A daemon's folders for `thumbd start`; every pid recorded is killed (group and all)."""
    d = Daemon(tmp_path)
    pids: list[int] = []
    yield d, pids
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)


def test_start_refuses_twice_survives_a_stale_pidfile_and_stop_drains(
    background: tuple[Daemon, list[int]],
) -> None:
    d, pids = background
    state = d.tmp / ".thumbd"
    first = run_start(d.config)
    assert first.returncode == 0, first.stderr
    pid = read_pid(state / "thumbd.pid")
    pids.append(pid)
    assert f"started (pid {pid})" in first.stdout
    assert os.readlink(f"/proc/{pid}/cwd") == "/"

    second = run_start(d.config)
    assert second.returncode == 2
    assert f"already running (pid {pid})" in second.stderr

    drop(d, ["a.jpg"], jpeg_bytes())
    wait_until(lambda: d.done("a.jpg"), 30, "a thumbnail from the background daemon")
    assert all(t.stat().st_mode & 0o777 == 0o644 for t in d.thumbs("a.jpg"))
    assert f"running (pid {pid})" in thumbd("status", "-c", str(d.config)).stdout

    # kill -9: the pidfile stays behind, naming a dead process.
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: lock_free(d), 30, "the killed daemon's lock to go")
    assert read_pid(state / "thumbd.pid") == pid

    third = run_start(d.config)
    assert third.returncode == 0, third.stderr
    new_pid = read_pid(state / "thumbd.pid")
    pids.append(new_pid)
    assert new_pid != pid
    log = (state / "thumbd.log").read_text()
    assert f"replaced the stale pidfile {state / 'thumbd.pid'} (pid {pid})" in log

    # The daemon's working directory is /: SIGHUP still finds the file named relative to ours.
    d.write_config({"thumbnails": {"widths": [300]}})
    os.kill(new_pid, signal.SIGHUP)
    wait_until(lambda: "changed [thumbnails] widths" in (state / "thumbd.log").read_text(), 30)

    drop(d, [f"b{i}.png" for i in range(6)], png_bytes((3200, 2400)))
    wait_until(lambda: "done b" in (state / "thumbd.log").read_text(), 60, "the burst to start")
    stopped = thumbd("stop", "-c", str(d.config))
    assert stopped.returncode == 0, stopped.stderr
    assert f"stopped (pid {new_pid})" in stopped.stdout
    log = (state / "thumbd.log").read_text()
    assert "stopped (SIGTERM)" in log.splitlines()[-1]
    assert not (state / "thumbd.pid").exists()
    assert not (state / "status.json").exists()
    assert temp_files(d.outgoing) == []
    assert "thumbd: not running" in thumbd("status", "-c", str(d.config)).stdout
    again = thumbd("stop", "-c", str(d.config))
    assert again.returncode == 0 and "not running" in again.stdout


def test_start_reports_why_the_daemon_could_not_start(tmp_path: Path) -> None:
    cfg = tmp_path / "thumbd.toml"
    cfg.write_text('[paths]\nincoming = "nowhere"\n')
    r = run_start(cfg)
    assert r.returncode == 2
    assert "nowhere" in r.stderr and "does not exist" in r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / ".thumbd" / "thumbd.pid").exists()
    (tmp_path / "incoming").mkdir()
    cfg.write_text('[log]\nfile = "/proc/no-such-folder/thumbd.log"\n')
    r = run_start(cfg)
    assert r.returncode == 2
    assert "cannot open the log file /proc/no-such-folder/thumbd.log" in r.stderr


# -- 4. reload on SIGHUP ------------------------------------------------------------------------


def widths_present(daemon: Daemon, rel: str) -> set[int]:
    return {w for w in (*OLD_WIDTHS, 300) if daemon.thumbs(rel, (w,))[0].exists()}


def test_sighup_applies_new_widths_to_new_work_and_a_broken_file_keeps_the_old(
    daemon: Daemon,
) -> None:
    daemon.write_config({"resize": {"workers": 1}})
    daemon.start()
    burst = [f"burst{i:02d}.png" for i in range(16)]
    drop(daemon, burst, png_bytes((3200, 2400)))
    wait_until(lambda: "done burst" in daemon.read_log(), 60, "the burst to start")

    daemon.write_config({"resize": {"workers": 2}, "thumbnails": {"widths": [300]}})
    daemon.send(signal.SIGHUP)
    reloaded = wait_until(
        lambda: re.search(r"reloaded .*: changed (.*) \((\d+) in flight", daemon.read_log()),
        30,
        "the reload",
    )
    assert "[thumbnails] widths" in reloaded[1] and "[resize] workers" in reloaded[1]
    assert int(reloaded[2]) > 0, "the burst was over before the reload; nothing was in flight"

    after = ["after0.jpg", "after1.jpg"]
    drop(daemon, after, jpeg_bytes((900, 600)))
    wait_until(lambda: all(daemon.done(a, (300,)) for a in after), 60, "files dropped after")
    wait_until(lambda: daemon.status()["done"] == len(burst) + len(after), 120, "the whole burst")
    for a in after:
        assert widths_present(daemon, a) == {300}
    sets = [widths_present(daemon, b) for b in burst]
    assert all(s in ({200, 64, 32}, {300}) for s in sets), sets
    assert set(OLD_WIDTHS) in sets  # rendered or in flight before the reload: old widths
    status = daemon.status()
    assert status["failed"] == 0 and status["pending"] == 0

    daemon.write_config({"resize": {"workers": 2}, "thumbnails": {"widths": "big"}})
    daemon.send(signal.SIGHUP)
    failed = wait_until(
        lambda: re.search(r".*reload failed, keeping the current.*", daemon.read_log()),
        30,
        "the failed reload",
    )
    assert str(daemon.config) in failed[0]
    assert "[thumbnails] widths" in failed[0]
    drop(daemon, ["late.jpg"], jpeg_bytes((900, 600)))
    wait_until(lambda: daemon.done("late.jpg", (300,)), 30, "a file after the failed reload")
    assert widths_present(daemon, "late.jpg") == {300}
    assert daemon.proc is not None and daemon.proc.poll() is None
    assert daemon.stop() == 0


def test_sighup_reopens_the_log_file_and_json_lines(daemon: Daemon) -> None:
    daemon.write_config({"log": {"format": "json", "file": "logs/thumbd.log"}})
    log_file = daemon.tmp / "logs" / "thumbd.log"
    daemon.start(ready=False)
    wait_until(lambda: log_file.exists() and "thumbd started" in log_file.read_text(), 30, "start")
    drop(daemon, ["a.jpg"], jpeg_bytes())
    wait_until(lambda: daemon.done("a.jpg"), 30, "a thumbnail")
    wait_until(lambda: '"source": "a.jpg"' in log_file.read_text(), 30, "the done line")

    rotated = log_file.with_name("thumbd.log.1")
    os.rename(log_file, rotated)  # what logrotate does before it signals
    daemon.send(signal.SIGHUP)
    wait_until(lambda: log_file.exists() and "reloaded" in log_file.read_text(), 30, "new file")
    assert "reloaded" not in rotated.read_text()
    assert daemon.stop() == 0

    entries = [json.loads(line) for line in rotated.read_text().splitlines()]
    assert entries and all(
        {"time", "level", "thread", "logger", "message"} <= set(e) for e in entries
    )
    done = next(e for e in entries if e["message"].startswith("done a.jpg"))
    assert done["source"] == "a.jpg" and done["level"] == "info" and done["thread"] == "main"
    assert done["bytes_out"] > 0
    assert daemon.read_log() == ""  # nothing went to stderr


# -- live status ------------------------------------------------------------------------------


def test_status_shows_live_figures_of_a_running_daemon(daemon: Daemon) -> None:
    # A source that hangs its worker holds the daemon still, mid-burst: one file done, two in
    # flight (the hung one and one in hand) and three queued, however fast or loaded the machine.
    hang = "THUMBD-TEST-HANG-MARKER"

    def stuck(live: dict[str, Any]) -> bool:  # status.json lags by up to 2 s: done tells
        return (live.get("done"), live.get("in_flight")) == (1, 1)

    daemon.write_config({"resize": {"workers": 1}, "daemon": {"shutdown_timeout": 1.0}})
    daemon.start(env={"THUMBD_TEST_HANG_MARKER": hang})
    drop(daemon, ["first.jpg"], jpeg_bytes())
    wait_until(lambda: daemon.done("first.jpg"), 30, "the first file")
    drop(daemon, ["stuck.jpg"], jpeg_bytes() + hang.encode())  # after the JPEG's end marker
    wait_until(lambda: stuck(daemon.status()["daemon"]), 30, "the stuck file in flight")
    drop(daemon, [f"s{i}.jpg" for i in range(4)], jpeg_bytes(seed=2))

    def held() -> dict[str, Any] | None:  # each file settles on its own: wait for the last
        live: dict[str, Any] = daemon.status()["daemon"]
        return live if (live.get("in_flight"), live.get("ready")) == (2, 3) else None

    live = wait_until(held, 60, "live figures mid-burst")
    assert daemon.proc is not None
    assert live["running"] is True and live["pid"] == daemon.proc.pid
    assert live["uptime"] > 0 and live["healthy"] is True and live["done"] == 1
    assert (live["queue"], live["settling"]) == (3, 0)
    text = thumbd("status", "-c", str(daemon.config)).stdout
    assert f"thumbd: running (pid {daemon.proc.pid}), up " in text
    for label in ("queue:", "in flight:", "files/s over the last minute", "this run:"):
        assert label in text
    assert "done:" in text and "pending:" in text
    wait_until(lambda: daemon.status()["daemon"].get("rate", 0) > 0, 30, "a rate")
    # With a rate, the time the queue and what is in flight take at that rate (5 files left).
    live = daemon.status()["daemon"]
    assert live["eta"] == pytest.approx(5 / live["rate"], rel=0.01, abs=0.1), live
    assert ", about " in thumbd("status", "-c", str(daemon.config)).stdout
    assert daemon.stop() == 0  # the stuck worker is stopped after shutdown_timeout
    after = daemon.status()
    assert after["daemon"] == {"running": False}
    assert {"done", "failed", "pending", "failures"} <= set(after)
    assert after["done"] == 1 and after["pending"] == 5


# -- 5. metrics -------------------------------------------------------------------------------


def scrape(url: str) -> dict[str, float]:
    with urllib.request.urlopen(url, timeout=10) as r:
        text = r.read().decode()
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


def test_metrics_endpoint_counters_move_during_a_burst(daemon: Daemon) -> None:
    daemon.write_config({"resize": {"workers": 1}, "metrics": {"listen": "127.0.0.1:0"}})
    daemon.start()
    port = int(re.search(r"metrics on http://127\.0\.0\.1:(\d+)/metrics", daemon.read_log())[1])
    url = f"http://127.0.0.1:{port}/metrics"
    first = scrape(url)
    assert first["thumbd_files_done_total"] == 0
    assert first['thumbd_files_failed_total{reason="corrupt"}'] == 0

    total = 12
    drop(daemon, [f"m{i:02d}.png" for i in range(total)], png_bytes((3200, 2400)))
    truncated = jpeg_bytes()
    drop(daemon, ["truncated.jpg"], truncated[: len(truncated) // 2])
    samples: list[dict[str, float]] = []

    def finished() -> bool:
        samples.append(scrape(url))
        return samples[-1]["thumbd_files_done_total"] >= total

    wait_until(finished, 120, "the burst in the metrics")
    done = [s["thumbd_files_done_total"] for s in samples]
    assert done == sorted(done)
    assert any(0 < n < total for n in done), f"never saw the burst mid-way: {done}"
    assert any(s["thumbd_queue_depth"] + s["thumbd_in_flight"] > 0 for s in samples)
    wait_until(
        lambda: scrape(url)['thumbd_files_failed_total{reason="corrupt"}'] == 1, 30, "a failure"
    )
    last = scrape(url)
    assert last["thumbd_bytes_in_total"] > 0 and last["thumbd_bytes_out_total"] > 0
    assert last["thumbd_render_seconds_count"] == total
    assert last["thumbd_healthy"] == 1
    assert daemon.stop() == 0


def test_metrics_address_in_use_is_a_clear_startup_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        d = Daemon(tmp_path, {"metrics": {"listen": f"127.0.0.1:{port}"}})
        r = thumbd("run", "-c", str(d.config), timeout=60)
    assert r.returncode == 2
    assert "[metrics] listen" in r.stderr and str(port) in r.stderr
    assert "Traceback" not in r.stderr


def test_signals_to_the_whole_process_group_leave_the_workers_to_the_daemon(
    daemon: Daemon,
) -> None:
    """A hang-up or a SIGTERM sent to the daemon's process group (a terminal closing, `kill
    -TERM -PGID`, `timeout`, dumb-init, KillMode=control-group) reaches the fork server and the
    workers too. They must leave it to the daemon: a hang-up is a reload, after which files are
    still rendered; a SIGTERM drains the files in flight, none of them counted as crashed."""
    daemon.write_config({"resize": {"workers": 1, "max_tasks_per_child": 2}})
    daemon.start()
    assert daemon.proc is not None
    drop(daemon, ["first.jpg"], jpeg_bytes())
    wait_until(lambda: daemon.done("first.jpg"), 30, "the first file")

    os.killpg(daemon.proc.pid, signal.SIGHUP)
    wait_until(lambda: "reloaded" in daemon.read_log(), 30, "the reload")
    after = [f"after{i}.jpg" for i in range(4)]  # more than max_tasks_per_child: a new worker
    drop(daemon, after, jpeg_bytes())
    wait_until(lambda: all(daemon.done(a) for a in after), 30, "files after the hang-up")

    burst = [f"burst{i:02d}.png" for i in range(8)]
    drop(daemon, burst, png_bytes((3200, 2400)))
    # A worker frozen mid-render keeps that file in flight when the SIGTERM comes, however fast
    # the machine; it goes on (and meets the SIGTERM, were it not ignored) once thawed.
    worker = wait_until(lambda: _stopped_mid_render(daemon, "burst"), 60, "a worker on the burst")
    try:
        os.killpg(daemon.proc.pid, signal.SIGTERM)
        wait_until(logged(daemon, "SIGTERM: draining ("), 30, "the drain to start")
    finally:
        os.kill(worker, signal.SIGCONT)
    assert daemon.proc.wait(timeout=60) == 0
    log = daemon.read_log()
    assert "SIGTERM: draining (1 in flight)" in log or "SIGTERM: draining (2 in flight)" in log
    assert "died" not in log and "crashed" not in log and "Traceback" not in log, log
    assert log.count("done burst") >= 1 and "still running after" not in log, log


def _stopped_mid_render(daemon: Daemon, prefix: str) -> int | None:
    """SIGSTOP a worker that has a source named `prefix`... open, and return its pid; None
    (and the worker left running) if none is rendering such a file right now."""
    for pid in workers_of(daemon):
        if (source_open_in(pid) or "").startswith(prefix):
            os.kill(pid, signal.SIGSTOP)
            if (source_open_in(pid) or "").startswith(prefix):  # not finished in between
                return pid
            os.kill(pid, signal.SIGCONT)
    return None


def test_folders_and_log_files_that_cannot_be_made_name_the_key(tmp_path: Path) -> None:
    """A state folder, an outgoing folder or a log file that cannot be created is a clear
    start-up error naming the file and the key, not a traceback; `start` says the same."""
    (tmp_path / "incoming").mkdir()
    (tmp_path / "plain").write_text("a file where a folder should be")
    cfg = tmp_path / "thumbd.toml"
    for key, text in [
        ("[paths] state", '[paths]\nstate = "plain/state"\n'),
        ("[paths] outgoing", '[paths]\noutgoing = "plain/out"\n'),
        ("[log] file", '[log]\nfile = "plain/thumbd.log"\n'),
    ]:
        cfg.write_text(text)
        r = thumbd("once", "-c", str(cfg))
        assert r.returncode == 2, r.stderr
        assert f"thumbd: {cfg}: {key}: cannot " in r.stderr and "plain" in r.stderr, r.stderr
        assert "Traceback" not in r.stderr, r.stderr
    cfg.write_text('[paths]\nstate = "plain/state"\n')
    r = run_start(cfg)
    assert r.returncode == 2 and f"{cfg}: [paths] state: cannot create" in r.stderr, r.stderr


def logged(daemon: Daemon, text: str) -> Callable[[], bool]:
    return lambda: text in daemon.read_log()


def test_a_reload_to_an_outgoing_or_log_file_that_cannot_be_made_keeps_the_old(
    daemon: Daemon,
) -> None:
    daemon.start()
    (daemon.tmp / "plain").write_text("a file where a folder should be")
    for key, settings in [
        ("[paths] outgoing", {"paths": {"outgoing": "plain/out"}}),
        ("[log] file", {"log": {"file": "plain/thumbd.log"}}),
    ]:
        daemon.write_config(settings)
        daemon.send(signal.SIGHUP)
        failed = f"reload failed, keeping the current configuration: {daemon.config}: {key}: cannot"
        wait_until(logged(daemon, failed), 30, f"the failed reload ({key})")
    drop(daemon, ["after.jpg"], jpeg_bytes())
    wait_until(lambda: daemon.done("after.jpg"), 30, "a file after the failed reloads")
    assert daemon.stop() == 0
    assert "Traceback" not in daemon.read_log()


def test_a_reload_to_a_metrics_address_in_use_keeps_the_endpoint(daemon: Daemon) -> None:
    daemon.write_config({"metrics": {"listen": "127.0.0.1:0"}})
    daemon.start()
    found = wait_until(
        lambda: re.search(r"metrics on http://127\.0\.0\.1:(\d+)/metrics", daemon.read_log()),
        30,
        "the metrics address",
    )
    url = f"http://127.0.0.1:{found[1]}/metrics"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        daemon.write_config({"metrics": {"listen": f"127.0.0.1:{port}"}})
        daemon.send(signal.SIGHUP)
        failed = f"reload failed, keeping the current configuration: {daemon.config}: [metrics]"
        wait_until(logged(daemon, failed), 30, "the failed reload")
    assert "Address already in use" in daemon.read_log()
    with urllib.request.urlopen(url, timeout=10) as r:  # still served where it was
        assert b"thumbd_files_done_total" in r.read()
    daemon.send(signal.SIGHUP)  # the same file again: tried again, and now the port is free
    wait_until(logged(daemon, "changed [metrics] listen"), 30, "the second reload")
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        assert b"thumbd_files_done_total" in r.read()
    assert daemon.stop() == 0


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root, as the service's installation does")
def test_root_refuses_to_work_on_the_service_users_folders(tmp_path: Path) -> None:
    """`thumbd once` typed as root on the service's state or outgoing folder would leave a
    root-owned database and thumbnail folders behind, which the daemon (User=thumbd) then
    cannot write: root is told whose they are instead, and creates nothing. (Before the state
    folder exists, outgoing/ tells whose it is.)"""
    (tmp_path / "incoming").mkdir()
    (tmp_path / "incoming" / "a").mkdir()
    (tmp_path / "incoming" / "a" / "x.jpg").write_bytes(jpeg_bytes())
    cfg = tmp_path / "thumbd.toml"
    cfg.write_text('[paths]\nstate = "state"\noutgoing = "outgoing"\n')
    nobody = 65534
    for folder in ("state", "outgoing"):
        shutil.rmtree(tmp_path / "state", ignore_errors=True)
        shutil.rmtree(tmp_path / "outgoing", ignore_errors=True)
        (tmp_path / folder).mkdir()
        os.chown(tmp_path / folder, nobody, nobody)
        r = thumbd("once", "-c", str(cfg))
        assert r.returncode == 2, r.stderr
        assert f"{tmp_path / folder} belongs to user " in r.stderr, r.stderr
        assert "runuser -u " in r.stderr and "Traceback" not in r.stderr, r.stderr
        assert list((tmp_path / folder).iterdir()) == []
    (tmp_path / "state").mkdir()  # root's own state: root runs thumbd here, outgoing/ is
    assert thumbd("once", "-c", str(cfg)).returncode == 0  # another user's (a web server's)


def test_status_into_a_pipe_its_reader_closed_exits_without_a_traceback(daemon: Daemon) -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)  # `thumbd status | head -1` once head has its line
    try:
        r = subprocess.run(
            [sys.executable, "-m", "thumbd", "status", "-c", str(daemon.config)],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            env=_env(),
            timeout=60,
        )
    finally:
        os.close(write_end)
    assert r.returncode == 1 and r.stderr == ""
