"""Scale out: the real daemon rendering on a real Dask cluster on 127.0.0.1.

The cluster runs in processes of its own: `python -m tests.dask_cluster` (a LocalCluster with two
worker processes of one thread each, plus a scheduler plugin that measures back-pressure) or the
`dask scheduler` / `dask worker` commands the README documents, so that the scheduler can be
stopped and started again on the same port.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import random
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests import images, media
from tests.conftest import ROOT, Daemon, _env, _reap_group, all_files, thumbd, wait_until
from tests.integration.test_names import BLUE, RED, drop, shows
from tests.render.test_raw import make_dng, preview_jpeg

DASK = Path(sys.executable).with_name("dask")  # the console script next to this interpreter


@dataclass
class Cluster:
    address: str
    workers: dict[str, int]  # worker address -> pid
    probe: Path  # the scheduler plugin's {daemon run: {"most": unfinished at once, "seen"}}

    def runs(self) -> dict[str, dict[str, int]]:
        return json.loads(self.probe.read_text()) if self.probe.exists() else {}


def _start(
    args: list[str], log: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            args,
            cwd=ROOT,
            env={**_env(), **(env or {})},
            stdout=out,
            stderr=out,
            start_new_session=True,
        )


def _stop(proc: subprocess.Popen[bytes], signum: int = signal.SIGTERM) -> None:
    """Stop a process and everything it started (its own process group)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signum)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=20)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)
    _reap_group(proc.pid)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """One cluster for the tests that leave it as they found it (a killed worker is restarted
    by its nanny): starting one takes seconds. Its workers take a second over a source carrying
    the slow marker."""
    env = {"THUMBD_TEST_SLOW_MARKER": SLOW}
    yield from _cluster(tmp_path_factory.mktemp("cluster"), env=env)


SLOW = "THUMBD-TEST-SLOW-MARKER"


def _cluster(
    tmp_path: Path,
    *options: str,
    env: dict[str, str] | None = None,
    prefix: tuple[str, ...] = (),
) -> Iterator[Cluster]:
    """`prefix`: a command to run the cluster under (unshare)."""
    info = tmp_path / "cluster.json"
    log = tmp_path / "cluster.log"
    args = [*prefix, sys.executable, "-m", "tests.dask_cluster", str(info), *options]
    proc = _start(args, log, env)
    try:
        wait_until(lambda: info.exists() or proc.poll() is not None, 90, "the Dask cluster")
        assert proc.poll() is None, log.read_text(errors="replace")
        data = json.loads(info.read_text())
        yield Cluster(data["address"], data["workers"], Path(f"{info}.probe"))
    finally:
        _stop(proc)


def dask_settings(address: str, **extra: Any) -> dict[str, dict[str, Any]]:
    return {"executor": {"kind": "dask", "address": address, **extra}}


def make_sources(
    folder: Path, n: int, size: tuple[int, int] = (640, 480), tail: str = ""
) -> list[str]:
    """n JPEGs, four different pictures in turn (making a big picture takes a while), each
    with its path after the JPEG's end (copies would share one render, output/reuse.py), and
    `tail` after that (a test marker)."""
    folder.mkdir(parents=True, exist_ok=True)
    pictures = []
    for seed in range(min(n, 4)):
        buf = io.BytesIO()
        images.natural(size, seed).save(buf, "JPEG", quality=90)
        pictures.append(buf.getvalue())
    rels = [f"s{i:03d}.jpg" for i in range(n)]
    for i, rel in enumerate(rels):
        (folder / rel).write_bytes(pictures[i % len(pictures)] + f"{folder / rel}{tail}".encode())
    return rels


def done_count(daemon: Daemon, rels: list[str]) -> int:
    return sum(daemon.done(rel) for rel in rels)


def start_burst(daemon: Daemon, n: int, timeout: float) -> list[str]:
    """n large JPEGs renamed into incoming/ at once; returns once five are done."""
    staged = daemon.tmp / "staged"
    rels = make_sources(staged, n, (1600, 1200))
    for rel in rels:
        os.rename(staged / rel, daemon.incoming / rel)
    wait_until(lambda: done_count(daemon, rels) >= 5, timeout, "the burst to get going")
    return rels


# -- 1. the same thumbnails ------------------------------------------------------------------


def make_mixed(src: Path) -> int:
    """54 sources of every kind the renderer treats differently; returns how many."""
    for o in range(1, 9):
        images.make_orientation_probe(_at(src, f"probe/o{o}.jpg"), o)
    for i in range(30):
        size = (160 + 53 * i, 120 + 31 * (i % 7))
        images.make_jpeg(_at(src, f"photo/p{i:02d}.jpg"), size, image=images.natural(size, i))
    images.make_orientation_probe(_at(src, "probe/png6.png"), 6, "PNG")
    images.make_png_alpha(_at(src, "alpha/a.png"))
    images.make_png_alpha(_at(src, "alpha/opaque.png"), opaque=True)
    images.make_palette_gif(_at(src, "gif/g.gif"))
    images.make_cmyk_jpeg(_at(src, "print/cmyk.jpg"))
    images.make_png16(_at(src, "sci/g16.png"))
    images.make_mpo(_at(src, "stereo/m.jpg"))
    images.make_animated_webp(_at(src, "anim/w.webp"))
    images.make_image(_at(src, "grey/l.tif"), "L", "TIFF")
    images.make_image(_at(src, "grey/rgba.webp"), "RGBA", "WEBP")
    images.make_empty(_at(src, "bad/empty.jpg"))
    images.make_garbage(_at(src, "bad/garbage.jpg"))
    # Over Pillow's own bomb limit (89.5 MP), under max_pixels (100 MP): both executors must
    # get past the header and find the pixel data missing.
    images.make_png_header(_at(src, "bad/90mp.png"), (10000, 9000))
    # A camera roll's others: a clip (its poster), a RAW with a preview and one without.
    media.clip(_at(src, "video/clip.mp4"), black_until=0.6)
    make_dng(_at(src, "raw/preview.dng"), preview=preview_jpeg((640, 480)), orientation=6)
    make_dng(_at(src, "raw/sensor.dng"), thumbnail=False)
    return len(all_files(src))


def _at(root: Path, rel: str) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def render_all(root: Path, src: Path, settings: dict[str, dict[str, Any]]) -> Rendered:
    """`thumbd once` over a copy of src: every output's bytes, and the failures."""
    root.mkdir()
    run = Daemon(root, settings)
    shutil.rmtree(run.incoming)
    shutil.copytree(src, run.incoming)
    r = thumbd("once", "-c", str(run.config))
    assert r.returncode == 1, r.stderr  # 1: the three bad files failed, as they should
    executor = settings.get("executor")
    if executor is None:
        assert "Dask" not in r.stderr, r.stderr
    else:
        shared = executor.get("shared_storage", False)
        mode = "shared storage" if shared else "sources shipped"
        assert f"rendering on the Dask cluster at {executor['address']} ({mode}" in r.stderr
    outputs = {str(p.relative_to(run.outgoing)): p.read_bytes() for p in all_files(run.outgoing)}
    status = run.status()
    assert (status["done"], status["failed"]) == (51, 3), status
    return Rendered(outputs, sorted((f["source"], f["reason"]) for f in status["failures"]))


@dataclass
class Rendered:
    outputs: dict[str, bytes]
    failures: list[tuple[str, str]]


def test_local_pool_and_dask_make_identical_thumbnails(tmp_path: Path, cluster: Cluster) -> None:
    src = tmp_path / "src"
    assert make_mixed(src) == 54
    local = render_all(tmp_path / "local", src, {})
    assert len(local.outputs) == 51 * 3
    shipped = render_all(tmp_path / "dask", src, dask_settings(cluster.address))
    shared = render_all(
        tmp_path / "shared", src, dask_settings(cluster.address, shared_storage=True)
    )
    for dask in (shipped, shared):
        assert dask.outputs.keys() == local.outputs.keys()
        assert [rel for rel, data in local.outputs.items() if dask.outputs[rel] != data] == []
        assert dask.failures == local.failures


# -- 2. a worker killed mid-burst ------------------------------------------------------------


def test_a_dask_worker_killed_mid_burst_loses_nothing(tmp_path: Path, cluster: Cluster) -> None:
    daemon = Daemon(tmp_path, dask_settings(cluster.address, max_in_flight=8))
    daemon.start()
    try:
        rels = start_burst(daemon, 40, 60)
        assert done_count(daemon, rels) < len(rels)
        victim = sorted(cluster.workers.values())[0]
        os.kill(victim, signal.SIGKILL)
        wait_until(lambda: done_count(daemon, rels) == len(rels), 120, "every file")
        daemon.recorded(done=40, failed=0)
        assert daemon.proc is not None and daemon.proc.poll() is None
    finally:
        daemon.stop()
        daemon.kill_group()


# -- sources of one stem: written by the daemon, so named as with the local pool --------------


def test_same_stem_sources_rendered_on_dask_keep_their_own_thumbnails(
    tmp_path: Path, cluster: Cluster
) -> None:
    settings = {**dask_settings(cluster.address), "thumbnails": {"index": True}}
    daemon = Daemon(tmp_path, settings)
    daemon.start()
    try:
        drop(daemon, "x.jpg", RED, "JPEG")
        wait_until(lambda: shows(daemon, "x", "red"), 60, "x.jpg's thumbnails")
        drop(daemon, "x.png", BLUE, "PNG")
        wait_until(lambda: shows(daemon, "x.png", "blue"), 60, "x.png's own thumbnails")
        assert shows(daemon, "x", "red")
        index = json.loads((daemon.outgoing / "x.png.json").read_bytes())
        assert [t["file"] for t in index["thumbnails"]] == [f"x.png_{w}.jpg" for w in (200, 64, 32)]
        assert "rendering on the Dask cluster" in daemon.read_log()
        assert "widths 200, 64, 32, on Dask" in daemon.read_log()  # not the local pool's workers
    finally:
        daemon.stop()
        daemon.kill_group()


# -- reload: from the local pool to the cluster and back -------------------------------------


def test_a_reload_moves_new_work_to_the_cluster_and_back(tmp_path: Path, cluster: Cluster) -> None:
    daemon = Daemon(tmp_path)
    daemon.start()
    try:
        before = cluster.runs()
        render_batch(daemon, "local")
        wait_until(lambda: local_workers(daemon) == 2, 30, "status: two local workers")
        reload(daemon, dask_settings(cluster.address), reloads=1)
        render_batch(daemon, "dask")
        wait_until(lambda: local_workers(daemon) == 0, 30, "status: no local workers")
        reload(daemon, {"executor": {"kind": "local", "address": ""}}, reloads=2)
        render_batch(daemon, "again")
        wait_until(lambda: local_workers(daemon) == 2, 30, "status: two local workers again")
        [run] = [run for key, run in cluster.runs().items() if key not in before]
        assert run["seen"] == 3  # the "dask" batch, and only that one
        assert daemon.stop() == 0
        assert daemon.status()["failed"] == 0
    finally:
        daemon.kill_group()


def local_workers(daemon: Daemon) -> int:
    workers: int = daemon.status()["daemon"]["workers"]
    return workers


def reload(daemon: Daemon, settings: dict[str, dict[str, Any]], *, reloads: int) -> None:
    daemon.write_config(settings)
    daemon.send(signal.SIGHUP)
    wait_until(lambda: daemon.read_log().count("changed [executor] ") == reloads, 30, "reload")


def render_batch(daemon: Daemon, name: str) -> None:
    rels = [f"{name}/{rel}" for rel in make_sources(daemon.incoming / name, 3)]
    wait_until(lambda: done_count(daemon, rels) == 3, 60, f"the {name} files")
    on_dask = "rendering on the Dask cluster" in daemon.read_log()
    assert on_dask == (name != "local"), daemon.read_log()


# -- a source that kills every worker that renders it -----------------------------------------


@pytest.fixture
def small_cluster(tmp_path: Path) -> Iterator[Cluster]:
    """Workers restarted by their nanny past 95% of 400 MB; Dask gives up after one death."""
    yield from _cluster(tmp_path, "--memory-limit", "400MB", "--allowed-failures", "0")


def make_memory_hog_png(path: Path, size: tuple[int, int] = (8000, 8000)) -> Path:
    """A 300 KB PNG that decodes to 256 MB of RGBA: under Pillow's bomb limit and max_pixels,
    over a 400 MB worker (Pillow and Dask take 100 MB or more before it). Made row by row."""
    w, h = size
    z = zlib.compressobj(9)
    row = b"\x00" * (1 + 4 * w)  # filter byte + transparent black pixels
    idat = b"".join(z.compress(row) for _ in range(h)) + z.flush()

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body)
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", w, h, 8, 6, 0, 0, 0)  # 8-bit RGBA
    data = chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + data)
    return path


def test_a_source_that_kills_its_workers_ends_failed(
    tmp_path: Path, small_cluster: Cluster
) -> None:
    # Alone on the cluster while it kills workers: with allowed-failures = 0, Dask also gives up
    # on any other task that was queued on the same worker (each gets the daemon's second try,
    # but two unlucky deaths in a row would fail an innocent file).
    daemon = Daemon(tmp_path, dask_settings(small_cluster.address, retries=0))
    daemon.start()
    try:
        before = make_sources(daemon.incoming / "before", 5)
        wait_until(lambda: done_count(daemon, [f"before/{r}" for r in before]) == 5, 60, "5")
        make_memory_hog_png(daemon.tmp / "hog.png")
        os.rename(daemon.tmp / "hog.png", daemon.incoming / "hog.png")
        wait_until(lambda: "failed hog.png" in daemon.read_log(), 90, "the hog to be failed")
        [failure] = daemon.status()["failures"]
        assert failure["source"] == "hog.png"
        assert failure["reason"].startswith("worker crashed ("), failure
        assert "hog.png: worker crashed" in daemon.read_log()  # the first crash, tried again
        after = make_sources(daemon.incoming / "after", 5)
        wait_until(lambda: done_count(daemon, [f"after/{r}" for r in after]) == 5, 60, "5 more")
        assert daemon.stop() == 0
    finally:
        daemon.kill_group()


# -- workers elsewhere: they do not see the watched folder ------------------------------------

HANG = "THUMBD-TEST-HANG-MARKER"


@dataclass
class Remote:
    cluster: Cluster
    hidden: Path  # the daemons' folders go here: the workers see an empty folder instead


@pytest.fixture(scope="module")
def remote(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Remote]:
    """A cluster as if on other machines: in a mount namespace of its own, where `hidden` is an
    empty tmpfs. Its workers also hang on a source carrying the test marker (a hung decoder)."""
    if shutil.which("unshare") is None:
        pytest.skip(reason="unshare (util-linux) is not installed")
    hidden = tmp_path_factory.mktemp("hidden")
    mount = shlex.join(["mount", "-t", "tmpfs", "thumbd-test", str(hidden)])
    unshare = ("unshare", "--mount", "--propagation", "private", "sh", "-c")
    probe = subprocess.run([*unshare, mount], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(reason=f"cannot mount in a mount namespace here: {probe.stderr.strip()}")
    hide = (*unshare, f'{mount} && exec "$@"', "sh")
    env = {"THUMBD_TEST_HANG_MARKER": HANG}
    for cluster in _cluster(tmp_path_factory.mktemp("remote"), env=env, prefix=hide):
        yield Remote(cluster, hidden)


def test_shared_storage_a_worker_cannot_see_gets_the_bytes(remote: Remote) -> None:
    settings = dask_settings(remote.cluster.address, shared_storage=True)
    daemon = Daemon(_mkdir(remote.hidden / "shared"), settings)
    rels = make_sources(daemon.incoming, 6)
    daemon.start()
    try:
        wait_until(lambda: done_count(daemon, rels) == 6, 60, "every file")
        assert daemon.status()["failed"] == 0
        log = daemon.read_log()
        assert "cannot open" in log and "sending the sources it cannot open" in log, log
        assert daemon.stop() == 0
    finally:
        daemon.kill_group()


def _mkdir(path: Path) -> Path:
    path.mkdir()
    return path


def test_a_hung_task_times_out_and_its_worker_is_freed(remote: Remote) -> None:
    settings = {**dask_settings(remote.cluster.address, max_in_flight=4), "resize": {"timeout": 3}}
    daemon = Daemon(_mkdir(remote.hidden / "hang"), settings)
    daemon.start()
    try:
        buf = io.BytesIO()
        images.natural((300, 200), 0).save(buf, "JPEG", comment=HANG.encode())
        (daemon.tmp / "stuck.jpg").write_bytes(buf.getvalue())
        os.rename(daemon.tmp / "stuck.jpg", daemon.incoming / "stuck.jpg")
        wait_until(lambda: "failed stuck.jpg" in daemon.read_log(), 60, "stuck.jpg to fail")
        [failure] = daemon.recorded(failed=1)["failures"]  # logged first, then committed
        assert failure == {**failure, "source": "stuck.jpg", "reason": "timed out after 3 s"}
        # Its worker was restarted: a thread stuck in a decoder cannot be stopped otherwise,
        # and every task Dask queued behind it would wait forever.
        rels = [f"after/{rel}" for rel in make_sources(daemon.incoming / "after", 12)]
        wait_until(lambda: done_count(daemon, rels) == 12, 90, "the files after it")
        assert "restarting that worker" in daemon.read_log()
        assert daemon.status()["failed"] == 1
        assert daemon.stop() == 0
    finally:
        daemon.kill_group()


# -- 3. the scheduler stopped and started again ----------------------------------------------


def _free_port() -> int:
    """A port free now, below the kernel's ephemeral range: the scheduler is stopped and started
    again on it, and in between no connection or bind(0) of a test running beside this one can
    be given it, as it could a port of that range."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    for port in random.sample(range(max(1024, low - 10_000), low), 200):
        with socket.socket() as s, contextlib.suppress(OSError):
            s.bind(("127.0.0.1", port))
            return port
    pytest.fail("no free port below the ephemeral range")


class CliCluster:
    """`dask scheduler` and `dask worker` as a user starts them (README, "Scale out")."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.port = _free_port()
        self.file = tmp / "scheduler.json"
        self.scheduler: subprocess.Popen[bytes] | None = None
        self.workers: subprocess.Popen[bytes] | None = None

    def start_scheduler(self) -> None:
        self.file.unlink(missing_ok=True)
        args = ["scheduler", "--host", "127.0.0.1", "--port", str(self.port), "--no-dashboard"]
        self.scheduler = _start(
            [str(DASK), *args, "--scheduler-file", str(self.file)], self.tmp / "scheduler.log"
        )
        wait_until(self.file.exists, 60, "the scheduler file")

    def start_workers(self) -> None:
        self.workers = _start(
            [
                str(DASK),
                "worker",
                f"tcp://127.0.0.1:{self.port}",
                *("--nworkers", "2", "--nthreads", "1", "--no-dashboard", "--host", "127.0.0.1"),
            ],
            self.tmp / "workers.log",
        )

    def stop(self) -> None:
        for proc in (self.workers, self.scheduler):
            if proc is not None:
                _stop(proc)


@pytest.fixture
def cli_cluster(tmp_path: Path) -> Iterator[CliCluster]:
    c = CliCluster(tmp_path)
    try:
        yield c
    finally:
        c.stop()


def test_the_scheduler_stopped_for_10_s_mid_burst_loses_nothing(
    tmp_path: Path, cli_cluster: CliCluster
) -> None:
    cli_cluster.start_scheduler()
    cli_cluster.start_workers()
    daemon = Daemon(
        tmp_path,
        {"executor": {"kind": "dask", "scheduler_file": str(cli_cluster.file), "max_in_flight": 6}},
    )
    daemon.start()
    try:
        rels = start_burst(daemon, 60, 90)
        assert cli_cluster.scheduler is not None and cli_cluster.workers is not None
        _stop(cli_cluster.scheduler, signal.SIGKILL)
        # Dask workers exit when their scheduler is gone; systemd (Restart=always) starts them
        # again, and they wait for the scheduler. Do the same.
        cli_cluster.workers.wait(timeout=60)
        cli_cluster.start_workers()
        stopped_at = done_count(daemon, rels)
        assert stopped_at < len(rels)
        wait_until(lambda: "files wait (nothing is failed)" in daemon.read_log(), 30, "a log")
        time.sleep(10)  # the outage itself: this is not waiting for a result
        assert daemon.proc is not None and daemon.proc.poll() is None
        live = daemon.status()["daemon"]
        assert (live["failed"], live["healthy"]) == (0, True), live  # waiting is not stuck
        assert live["waiting"].startswith(f"the Dask cluster at {cli_cluster.file} ("), live
        r = thumbd("status", "-c", str(daemon.config))
        assert f"; waiting for the Dask cluster at {cli_cluster.file} (" in r.stdout, r.stdout
        cli_cluster.start_scheduler()
        wait_until(lambda: done_count(daemon, rels) == len(rels), 120, "every file")
        daemon.recorded(done=60, failed=0)
        assert "takes work again" in daemon.read_log()
        wait_until(lambda: daemon.status()["daemon"]["waiting"] is None, 30, "status: not waiting")
        assert daemon.stop() == 0
    finally:
        daemon.kill_group()


# -- 4. back-pressure ------------------------------------------------------------------------


def test_max_in_flight_holds_on_the_scheduler(tmp_path: Path, cluster: Cluster) -> None:
    # [resize] workers = 2 would allow 4 in flight with the local pool: 3 must win.
    daemon = Daemon(tmp_path, dask_settings(cluster.address, max_in_flight=3))
    rels = make_sources(daemon.incoming, 40, (1200, 900))
    before = cluster.runs()
    r = thumbd("once", "-c", str(daemon.config))
    assert r.returncode == 0, r.stderr
    assert done_count(daemon, rels) == 40
    [run] = [run for key, run in cluster.runs().items() if key not in before]
    assert run["seen"] == 40
    assert run["most"] == 3


# -- the local default needs no Dask ---------------------------------------------------------


def _python(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_local_pool_never_imports_dask(tmp_path: Path) -> None:
    run = Daemon(tmp_path)
    make_sources(run.incoming, 2)
    r = _python(
        "import sys\n"
        "from thumbd.cli import main\n"
        "rc = main(['once', '-c', sys.argv[1]])\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed')))\n"
        "sys.exit(rc)\n",
        str(run.config),
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"
    assert run.done("s000.jpg") and run.done("s001.jpg")


def test_kind_dask_without_dask_installed_says_what_to_install(tmp_path: Path) -> None:
    run = Daemon(tmp_path, dask_settings("tcp://127.0.0.1:9"))
    r = _python(
        "import sys\n"
        "sys.modules['distributed'] = None  # what an install without thumbd[dask] looks like\n"
        "from thumbd.cli import main\n"
        "sys.exit(main(['once', '-c', sys.argv[1]]))\n",
        str(run.config),
    )
    assert r.returncode == 2, r.stderr
    assert 'kind = "dask" needs Dask' in r.stderr
    assert 'pip install "thumbd[dask]"' in r.stderr
    assert "Traceback" not in r.stderr


def test_once_with_no_scheduler_says_so_and_exits(tmp_path: Path) -> None:
    # `run` waits for a scheduler that is not up yet (the scheduler test shows it catches up);
    # a batch run has nobody to wait for it.
    address = f"tcp://127.0.0.1:{_free_port()}"
    run = Daemon(tmp_path, dask_settings(address))
    make_sources(run.incoming, 2)
    r = thumbd("once", "-c", str(run.config))
    assert r.returncode == 2, r.stderr
    assert f"thumbd: cannot reach the Dask scheduler {address}: " in r.stderr
    assert "Traceback" not in r.stderr
    assert run.status()["pending"] == 2


def test_new_files_go_ahead_of_the_backlog_on_the_cluster_too(
    tmp_path: Path, cluster: Cluster
) -> None:
    """A backlog the start-up scan finds, all of it handed to the cluster (max_in_flight 64),
    and a file that arrives meanwhile: it is submitted with a higher priority, and done long
    before the backlog is. Each backlog render takes a second (the slow marker): the backlog
    lasts half a minute on the two workers whatever the machine's load, so the new file's
    settling does not race it."""
    settings = dask_settings(cluster.address, shared_storage=True, max_in_flight=64)
    daemon = Daemon(tmp_path, settings)
    rels = make_sources(daemon.incoming / "old", 60, tail=SLOW)  # all on the cluster at once
    daemon.start()
    backlog = [f"old/{rel}" for rel in rels]
    wait_until(lambda: done_count(daemon, backlog) >= 2, 120, "the backlog to get going")
    images.make_jpeg(daemon.incoming / "new.jpg", (640, 480))
    wait_until(lambda: daemon.done("new.jpg"), 120, "the new file")
    done_before = done_count(daemon, backlog)
    wait_until(lambda: done_count(daemon, backlog) == len(backlog), 300, "the backlog")
    # It waited for what was running (a task per worker) and what had started meanwhile, not
    # for the 40-odd queued on the scheduler before it.
    assert done_before < len(backlog) - 20, done_before
    assert daemon.stop() == 0
