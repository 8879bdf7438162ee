"""Shared fixtures: a real daemon as a subprocess on real temporary folders."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
SENTINELS = "looked"  # the folder below incoming/ (and outgoing/) of Daemon.looked()'s pictures


def wait_until(predicate: Callable[[], Any], timeout: float = 30.0, what: str = "") -> Any:
    """Poll until predicate() is truthy; fail the test with `what` after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what or predicate}")
        time.sleep(0.05)


def thumbd(
    *args: str, cwd: Path | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run the thumbd command line to completion."""
    return subprocess.run(
        [sys.executable, "-m", "thumbd", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=_env(),
    )


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("NOTIFY_SOCKET", None)
    return env


class Daemon:
    """`thumbd run` in its own process group, with its log in a file."""

    def __init__(self, tmp: Path, settings: dict[str, dict[str, Any]] | None = None) -> None:
        self.tmp = tmp
        self.incoming = tmp / "incoming"
        self.outgoing = tmp / "outgoing"
        self.incoming.mkdir(exist_ok=True)
        self.config = tmp / "thumbd.toml"
        self.log = tmp / "thumbd.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.prefix: list[str] = []  # a command to run the daemon under (unshare, setpriv)
        self._sentinels = 0  # pictures looked() has linked in
        self.write_config(settings or {})

    def write_config(self, settings: dict[str, dict[str, Any]]) -> None:
        merged: dict[str, dict[str, Any]] = {
            "resize": {"workers": 2},
            "watch": {"settle_seconds": 0.1, "quiet_seconds": 1.0},
            "daemon": {"shutdown_timeout": 20},
        }
        for section, values in settings.items():
            merged.setdefault(section, {}).update(values)
        lines = []
        for section, values in merged.items():
            lines.append(f"[{section}]")
            lines += [f"{k} = {json.dumps(v)}" for k, v in values.items()]
        self.config.write_text("\n".join(lines) + "\n")

    def start(self, *, ready: bool = True, env: dict[str, str] | None = None) -> Daemon:
        """`env` adds variables (NOTIFY_SOCKET, say) to the daemon's environment."""
        starts = self.read_log().count("thumbd started")  # the log is kept across restarts
        _STARTED.append(self)  # killed after the test, whether or not it stopped it
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [*self.prefix, sys.executable, "-m", "thumbd", "run", "-c", str(self.config)],
                stdout=log,
                stderr=log,
                env={**_env(), **(env or {})},
                start_new_session=True,
            )
        if ready:
            wait_until(
                lambda: (
                    self.read_log().count("thumbd started") > starts or self.proc.poll() is not None
                ),
                30,
                "the daemon to start",
            )
            assert self.proc.poll() is None, self.read_log()
        return self

    def read_log(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def send(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 60) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signum)
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            self.kill_group()

    def kill_group(self) -> None:
        """SIGKILL the daemon and everything in its process group (what systemd does last)."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)
        _reap_group(self.proc.pid)

    def status(self) -> dict[str, Any]:
        r = thumbd("status", "-c", str(self.config), "--json")
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)  # type: ignore[no-any-return]

    def recorded(self, **counts: int) -> dict[str, Any]:
        """status() once its `counts` (done=3, failed=0, pending=0) are reached. A record
        follows its thumbnails (its commit may wait for others in flight), so thumbnails on
        disk do not yet mean the state counts them."""

        def reached() -> dict[str, Any] | None:
            status = self.status()
            return status if all(status[k] == v for k, v in counts.items()) else None

        found: dict[str, Any] = wait_until(reached, 30, f"status to show {counts}")
        return found

    def record(self, rel: str) -> str | None:
        """The status ("done", "failed") of rel's row in the state, or None: read directly,
        without the walk of incoming/ that status() makes."""
        db = self.tmp / ".thumbd" / "thumbd.db"
        if not db.exists():
            return None
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
        try:
            row = conn.execute("SELECT status FROM sources WHERE path = ?", (rel,)).fetchone()
        except sqlite3.OperationalError:  # the schema not made yet
            return None
        finally:
            conn.close()
        return None if row is None else str(row[0])

    def looked(self) -> str:
        """Wait until the daemon has taken in everything done to incoming/ before this call,
        and finished whatever it decided to do about it; return the sentinel's path.

        A "nothing happens" test does the thing that could wrongly start work, then calls this
        and only then asserts that nothing was done. A new picture (the sentinel) is linked into
        incoming/looked/: a hard link makes no close event, so the sentinel waits out
        quiet_seconds as an event-less touch does, and the main loop takes events in order, so
        nothing seen before it settles later than it. Its record proves the daemon got that
        far; then the live status, written after that record, must show nothing settling,
        ready or in flight, so a job wrongly started meanwhile has ended too."""
        self._sentinels += 1
        made = self.tmp / "sentinels" / f"s{self._sentinels}.jpg"
        made.parent.mkdir(exist_ok=True)
        buf = io.BytesIO()
        Image.new("RGB", (48, 32), (40, 90, 160)).save(buf, "JPEG")
        made.write_bytes(buf.getvalue())
        rel = f"{SENTINELS}/{made.name}"
        (self.incoming / SENTINELS).mkdir(exist_ok=True)
        os.link(made, self.incoming / rel)
        wait_until(lambda: self.record(rel) is not None, 30, f"the sentinel {rel}'s record")
        self.idle()
        return rel

    def idle(self, queues: tuple[str, ...] = ("settling", "ready", "in_flight")) -> None:
        """Wait for a live status written after this call that shows nothing settling, ready
        or in flight (or in the `queues` named): whatever the daemon took before has been
        rendered and written. While outgoing/ is full the dispatcher holds its ready jobs back:
        ("settling", "in_flight") then means all were taken and nothing is being rendered."""
        since = time.time()
        status = self.tmp / ".thumbd" / "status.json"

        def idle() -> bool:
            try:
                live = json.loads(status.read_text())
            except (OSError, ValueError):
                return False
            quiet = all(live.get(k) == 0 for k in queues)
            return bool(live.get("updated", 0) > since and quiet)

        wait_until(idle, 30, "the daemon to be idle")

    def thumbs(
        self, rel: str, widths: tuple[int, ...] = (200, 64, 32), ext: str = "jpg"
    ) -> list[Path]:
        p = Path(rel)
        return [self.outgoing / p.parent / f"{p.stem}_{w}.{ext}" for w in widths]

    def done(self, rel: str, widths: tuple[int, ...] = (200, 64, 32), ext: str = "jpg") -> bool:
        return all(t.exists() for t in self.thumbs(rel, widths, ext))

    def delete_state(self) -> None:
        """Delete the state database with its WAL and shared-memory files, as a careless
        `rm` would (the daemon is stopped)."""
        db = self.tmp / ".thumbd" / "thumbd.db"
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                Path(f"{db}{suffix}").unlink()


def _reap_group(pgid: int) -> None:
    """Wait until nothing of the group runs. Its orphans (the fork server) are reaped by init,
    which may take a second or more; a zombie runs nothing, so it does not count."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        if not _live_members(pgid):
            return
        time.sleep(0.05)


def _live_members(pgid: int) -> list[int]:
    live = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":  # state, ppid, pgrp, ...
            live.append(int(entry))
    return live


# Skips CI may take, by test id prefix, each with why. CI (`.ci/run`, CI=true) runs as root after
# `make system-deps`, so any other skip there is a test that should have run and did not: it
# fails instead. On a developer's machine (no root, no rsync) skips stay skips, each saying why.
CI_MAY_SKIP: dict[str, str] = {}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()  # type: ignore[attr-defined]
    if not report.skipped or os.environ.get("CI", "").lower() not in ("true", "1"):
        return
    if any(item.nodeid.startswith(prefix) for prefix in CI_MAY_SKIP):
        return
    longrepr = report.longrepr
    reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
    report.outcome = "failed"
    report.longrepr = (
        f"skipped in CI ({reason}): CI runs as root after `make system-deps` and must run "
        "this test; fix the machine or the test, or list it in CI_MAY_SKIP (tests/conftest.py) "
        "with the reason"
    )


_STARTED: list[Daemon] = []  # every Daemon a test started, also those it made itself


@pytest.fixture(autouse=True)
def no_daemon_left() -> Iterator[None]:
    """A test that fails before it stops its daemon leaves no process group behind to load
    the machine for the tests after it."""
    yield
    while _STARTED:
        d = _STARTED.pop()
        if d.proc is not None and d.proc.poll() is None:
            d.kill_group()


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    d = Daemon(tmp_path)
    yield d
    if d.proc is not None and d.proc.poll() is None:
        d.stop()
    d.kill_group()


@pytest.fixture(autouse=True)
def no_thread_leaks() -> Iterator[None]:
    """A test that starts threads in this process must stop them."""
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        leaked = [t for t in threading.enumerate() if t not in before and t.is_alive()]
        if not leaked:
            return
        time.sleep(0.05)
    pytest.fail(f"threads leaked: {leaked}")


def all_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def made(root: Path) -> list[Path]:
    """all_files(outgoing/) but Daemon.looked()'s sentinels' thumbnails."""
    return [p for p in all_files(root) if p.relative_to(root).parts[0] != SENTINELS]


def temp_files(root: Path) -> list[Path]:
    """Anything in outgoing/ that is not a finished thumbnail."""
    return [
        p for p in all_files(root) if p.suffix not in (".jpg", ".png") or ".thumbd-tmp" in p.parts
    ]
