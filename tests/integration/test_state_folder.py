"""Odd things done to the state folder and to the daemon's processes while thumbd runs.

Real daemons, real files, real signals: a lock file or database removed under a running daemon,
a damaged database met by `status`, `retry` and `redo`, a stop of the whole process group
(Ctrl-Z, a frozen cgroup) longer than the render timeout, and a daemon killed while a worker
hangs.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from PIL import Image

from tests.conftest import ROOT, Daemon, _env, _live_members, thumbd, wait_until
from tests.integration.test_robustness import drop, holds_open, jpeg_bytes
from thumbd.render.spec import Signature
from thumbd.store.state import State


def test_a_removed_lock_or_database_lets_no_second_daemon_start(daemon: Daemon) -> None:
    daemon.start()
    state = daemon.tmp / ".thumbd"
    (state / "daemon.lock").unlink()
    r = thumbd("run", "-c", str(daemon.config), timeout=60)
    assert r.returncode == 2 and "another thumbd" in r.stderr, r.stderr
    wait_until(lambda: "daemon.lock was removed; made it again" in daemon.read_log(), 30, "")
    assert daemon.proc is not None
    assert daemon.status()["daemon"]["pid"] == daemon.proc.pid

    drop(daemon.incoming, ["a.jpg"], jpeg_bytes((300, 200)))
    wait_until(lambda: daemon.status()["done"] == 1, 30, "a.jpg recorded")
    for suffix in ("", "-wal", "-shm"):
        Path(f"{state / 'thumbd.db'}{suffix}").unlink(missing_ok=True)
    wait_until(lambda: "was removed or replaced; opening it again" in daemon.read_log(), 30, "")
    drop(daemon.incoming, ["b.jpg"], jpeg_bytes((300, 200), seed=1))
    # The new database knows both: a.jpg kept (its thumbnails are there), b.jpg rendered.
    wait_until(lambda: daemon.status()["done"] == 2, 30, "both in the new database")
    status = daemon.status()
    assert status == {**status, "failed": 0, "pending": 0}
    log = daemon.read_log()
    assert "kept a.jpg" in log and log.count("done a.jpg") == 1 and "Traceback" not in log
    assert daemon.stop() == 0


def test_a_damaged_database_is_a_clear_error_for_status_and_redo(tmp_path: Path) -> None:
    d = Daemon(tmp_path)
    db = tmp_path / ".thumbd" / "thumbd.db"
    state = State(db)
    sig: Signature = (1, 2, 3)
    with state.transaction():
        for i in range(400):
            state.record_done(f"folder/{i:04d}-{'x' * 60}.jpg", sig, ["a_200.jpg"], 1, 1)
    state.close()
    # A leaf of the table, not of its index: the file opens and counts its rows (from the
    # index), and only a query that reads the rows meets the damage.
    conn = sqlite3.connect(db)
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    (page,) = conn.execute(
        "SELECT max(pageno) FROM dbstat WHERE name = 'sources' AND pagetype = 'leaf'"
    ).fetchone()
    conn.close()
    with db.open("r+b") as f:
        f.seek((page - 1) * page_size)
        f.write(random.Random(3).randbytes(page_size))
    # (`retry --all` reads only the index of failures here: it finds none, rightly.)
    for args in (["status"], ["status", "--json"], ["redo", "--all"]):
        r = thumbd(*args, "-c", str(d.config))
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        assert "Traceback" not in r.stderr
        assert f"state database {db} is damaged" in r.stderr, (args, r.stderr)
        assert "moves it aside and rebuilds it" in r.stderr


def test_a_stop_of_the_whole_pool_longer_than_the_timeout_fails_nothing(tmp_path: Path) -> None:
    # Ctrl-Z of `thumbd run`, `systemctl freeze`, `docker pause`: the pool's supervisor and its
    # workers stop together. The time stopped is no task's fault.
    script = textwrap.dedent(
        """
        import time
        from tests import workers
        from thumbd.executors.process_pool import ProcessPool
        pool = ProcessPool(1, timeout=2.0)
        future = pool.submit(workers.sleep, 0.5)
        while not future.running():
            time.sleep(0.01)
        print("running", flush=True)
        try:
            print("result", future.result(timeout=60), flush=True)
        except Exception as e:
            print("error", type(e).__name__, e, flush=True)
        pool.shutdown()
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env=_env(),
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "running\n"
        os.killpg(proc.pid, signal.SIGSTOP)
        try:
            wait_until(lambda: _stopped(proc.pid), 10, "the group to stop")
            time.sleep(3.0)  # longer than the timeout: the stop itself is what is tested
        finally:
            os.killpg(proc.pid, signal.SIGCONT)
        out = proc.stdout.readline()
        assert out.startswith("result"), out
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _stopped(pid: int) -> bool:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "T"


def test_a_daemon_killed_while_a_worker_hangs_leaves_no_process_behind(daemon: Daemon) -> None:
    hang = "THUMBD-TEST-HANG-MARKER"
    daemon.write_config({"resize": {"workers": 1}})
    daemon.start(env={"THUMBD_TEST_HANG_MARKER": hang})
    drop(daemon.incoming, ["stuck.jpg"], jpeg_bytes((300, 200)) + hang.encode())
    wait_until(lambda: holds_open(daemon, "stuck.jpg"), 30, "the worker to hang on it")
    assert daemon.proc is not None
    pgid = daemon.proc.pid
    daemon.proc.kill()  # the daemon only, as the OOM killer or `kill -9 PID` would
    daemon.proc.wait(timeout=30)
    # The hung worker, the fork server and the resource tracker all go with it.
    wait_until(lambda: not _live_members(pgid), 30, "every process of the daemon to exit")
    assert "Traceback" not in daemon.read_log()


def test_outgoing_removed_under_a_running_daemon_is_made_again(daemon: Daemon) -> None:
    daemon.start()
    drop(daemon.incoming, ["a.jpg"], jpeg_bytes((300, 200)))
    wait_until(lambda: daemon.done("a.jpg"), 30, "a.jpg")
    shutil.rmtree(daemon.outgoing)  # its temporary folder too
    drop(daemon.incoming, ["b.jpg"], jpeg_bytes((300, 200), seed=1))
    wait_until(lambda: daemon.status()["done"] + daemon.status()["failed"] == 2, 30, "b.jpg")
    assert daemon.done("b.jpg"), daemon.read_log()
    assert daemon.status()["failed"] == 0
    assert "was removed; making it again" in daemon.read_log()


def test_after_the_machine_restarts_thumbnails_a_power_loss_took_are_made_again(
    daemon: Daemon,
) -> None:
    names = ["gone.jpg", "empty.jpg", "zeros.jpg", "whole.jpg"]
    daemon.start(env={"THUMBD_TEST_BOOT_ID": "boot-1"})
    for i, name in enumerate(names):  # four pictures: copies would share thumbnail files
        drop(daemon.incoming, [name], jpeg_bytes((300, 200), seed=i))
    wait_until(lambda: daemon.status()["done"] == 4, 30, "the four recorded")
    daemon.kill_group()  # the machine goes down...
    # ... and what the kernel had not written back is lost: one thumbnail gone, one empty, one
    # of the right size but zeros (XFS after a crash), one set whole.
    daemon.thumbs("gone.jpg")[0].unlink()
    os.truncate(daemon.thumbs("empty.jpg")[1], 0)
    zeros = daemon.thumbs("zeros.jpg")[2]
    zeros.write_bytes(bytes(zeros.stat().st_size))
    whole = [t.stat().st_ino for t in daemon.thumbs("whole.jpg")]

    daemon.start(env={"THUMBD_TEST_BOOT_ID": "boot-2"})
    again = names[:3]
    wait_until(lambda: all(daemon.read_log().count(f"done {n}:") == 2 for n in again), 60, "")
    log = daemon.read_log()
    assert "the machine restarted since the last run: 3 of the 4 sources" in log
    for name in again:
        assert [width(t) for t in daemon.thumbs(name)] == [200, 64, 32]
    assert [t.stat().st_ino for t in daemon.thumbs("whole.jpg")] == whole  # not rendered again
    assert daemon.stop() == 0
    assert daemon.status()["pending"] == 0


def width(path: Path) -> int:
    with Image.open(path) as im:
        im.load()
        return im.width
