"""The world of one chaos run: real folders, the real daemon as a subprocess (in its own
process group, as tests/conftest.py's Daemon runs it), a loopback HTTP server for manifests,
and outgoing/ on a small tmpfs when we may mount one (root)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.chaos.model import Model
from tests.chaos.ops import Writer
from tests.conftest import Daemon
from tests.httpserver import Body, Server
from thumbd.commands.status import collect
from thumbd.config import Config, load_config
from thumbd.render.pipeline import render, spec_from_config
from thumbd.render.spec import RenderResult

HOST = "photos.example"  # resolved to the server by THUMBD_TEST_RESOLVE, public by _PUBLIC
TMPFS_BYTES = 4 * 1024 * 1024
QUIET_TIMEOUT = 60.0


class Break(Exception):
    """An invariant does not hold: says which and how."""


def can_mount() -> str | None:
    """Why outgoing/ cannot be a tmpfs here, or None."""
    if os.geteuid() != 0:
        return "not root: outgoing/ stays on the disk and the full-disk operations do nothing"
    return None


class World:
    def __init__(self, tmp: Path, on_delete: str = "remove") -> None:
        self.tmp = tmp
        self.model = Model(on_delete=on_delete)
        self.incoming = tmp / "incoming"
        self.outside = tmp / "outside"
        self.outside.mkdir(parents=True, exist_ok=True)
        self.server = Server("127.0.0.1")
        self.server.__enter__()
        self.daemon = Daemon(tmp, self._settings())
        self.outgoing = self.daemon.outgoing
        self.outgoing.mkdir(exist_ok=True)
        self.tmpfs = False
        if can_mount() is None:
            subprocess.run(
                ["mount", "-t", "tmpfs", "-o", f"size={TMPFS_BYTES}", "tmpfs", str(self.outgoing)],
                check=True,
            )
            self.tmpfs = True
        self.filler = self.outgoing / ".chaos-fill"
        self.has_rsync = shutil.which("rsync") is not None
        self.writers: list[Writer] = []
        self.log_offset = 0
        self.quiet_points = 0
        self.verbose = os.environ.get("CHAOS_VERBOSE") == "1"
        self.reference: dict[tuple[str, int, int], RenderResult] = {}
        self.config: Config = load_config(self.daemon.config)
        self.spec = spec_from_config(self.config)
        self.env = {
            "THUMBD_TEST_RESOLVE": f"{HOST}=127.0.0.1",
            "THUMBD_TEST_PUBLIC": "127.0.0.1",
        }

    def _settings(self) -> dict[str, dict[str, Any]]:
        return {
            "thumbnails": {"on_delete": self.model.on_delete},
            "download": {"connect_timeout": 2.0, "read_timeout": 5.0},
        }

    def close(self) -> None:
        for wr in self.writers:
            wr.fh.close()
        with contextlib.suppress(Exception):
            if self.daemon.proc is not None:
                self.daemon.kill_group()
        self.server.close()
        if self.tmpfs:
            subprocess.run(["umount", "-l", str(self.outgoing)], check=False)

    # -- the daemon ------------------------------------------------------------------------

    def start(self) -> None:
        starts = self.daemon.read_log().count("thumbd started")
        self.daemon.start(ready=False, env=self.env)
        proc = self.daemon.proc
        assert proc is not None
        self._wait(
            lambda: (
                self.daemon.read_log().count("thumbd started") > starts or proc.poll() is not None
            ),
            30,
            "the daemon to start",
        )
        if proc.poll() is not None:
            raise Break(f"the daemon exited at start with {proc.returncode}")
        self.model.running = True

    def stop(self) -> None:
        proc = self.daemon.proc
        assert proc is not None
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            raise Break("SIGTERM: the daemon did not exit within 60 s") from None
        finally:
            self.daemon.kill_group()
        self.model.running = False
        if code != 0:
            raise Break(f"SIGTERM: the daemon exited with {code}, not 0")

    def kill_group(self) -> None:
        self.daemon.kill_group()
        self.model.running = False

    def reload(self) -> None:
        before = self.daemon.read_log().count("reloaded ")
        self.daemon.write_config(self._settings())
        self.config = load_config(self.daemon.config)
        self.daemon.send(signal.SIGHUP)
        self._wait(
            lambda: self.daemon.read_log().count("reloaded ") > before,
            30,
            "the daemon to log its reload",
        )

    def workers(self) -> list[int]:
        """The pool's worker processes: children of the fork server, itself the daemon's."""
        proc = self.daemon.proc
        if proc is None or proc.poll() is not None:
            return []
        children: dict[int, list[int]] = {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            children.setdefault(int(fields[1]), []).append(int(entry))
        found = []
        for child in children.get(proc.pid, []):
            try:
                cmd = Path(f"/proc/{child}/cmdline").read_bytes()
            except OSError:
                continue
            if b"forkserver" in cmd:
                found += children.get(child, [])
        return sorted(found)

    # -- the HTTP server -------------------------------------------------------------------

    def serve(self, path: str, data: bytes) -> str:
        self.server.routes[path] = Body(data)
        return f"http://{HOST}:{self.server.port}{path}"

    # -- references ------------------------------------------------------------------------

    def render_of(self, rel: str) -> RenderResult | None:
        path = self.incoming / rel
        try:
            st = path.stat()
        except FileNotFoundError:
            return None
        key = (rel, st.st_size, st.st_mtime_ns)
        if key not in self.reference:
            self.reference[key] = render(str(path), self.spec)
        return self.reference[key]

    def thumb_names(self, rel: str) -> set[str]:
        """The thumbnails rel has or should have, relative to outgoing/."""
        result = self.render_of(rel)
        if result is not None and result.failure is None:
            return set(expected_names(rel, result))
        return set(stale_names(self.outgoing, rel))

    # -- quiet points ----------------------------------------------------------------------

    def _wait(self, predicate: Any, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise Break(f"timed out after {timeout:.0f} s waiting for {what}")
            time.sleep(0.05)

    def quiet_point(self) -> None:
        """Finish held writers, free the disk, start a stopped daemon; wait until it is idle
        and its counts are stable; then check every invariant."""
        from tests.chaos.invariants import check_all

        while self.writers:
            from tests.chaos.ops import release

            release(self, 0)
        self.filler.unlink(missing_ok=True)
        if not self.model.running:
            self.start()
        self.wait_idle()
        check_all(self)
        self.model.quiet()
        self.quiet_points += 1
        if self.verbose:
            print(f"  quiet point {self.quiet_points}: {self.model.expected_counts()}", flush=True)

    def wait_idle(self) -> None:
        since = time.time()
        deadline = time.monotonic() + QUIET_TIMEOUT
        last: dict[str, int] | None = None
        while True:
            proc = self.daemon.proc
            if proc is None or proc.poll() is not None:
                code = None if proc is None else proc.returncode
                raise Break(f"the daemon died (exit {code}) while it should run")
            counts = self._idle_counts(since)
            if counts is not None:
                self.note_downloads()
                if counts == self.model.expected_counts() and counts == last:
                    return
                last = counts
            if time.monotonic() > deadline:
                raise Break(
                    f"not idle with the model's counts after {QUIET_TIMEOUT:.0f} s:"
                    f" status {last}, model {self.model.expected_counts()},"
                    f" live {self.live_status()}; {self.differences()}"
                )
            time.sleep(0.3)

    def differences(self) -> str:
        """Where the state's rows and the model part: for a break's message."""
        from thumbd.store.state import State

        state = State(self.config.state_db, readonly=True)
        try:
            rows = {path: status for path, (_sig, status) in state.signatures().items()}
            reasons = {r.path: r.reason for r in state.failures()}
        finally:
            state.close()
        model = {r: "done" if s.good else "failed" for r, s in self.model.sources.items()}
        diff = sorted(
            (p, rows.get(p, "-"), model.get(p, "-"))
            for p in rows.keys() | model.keys()
            if rows.get(p) != model.get(p)
        )
        where = {
            p: ("in incoming/" if (self.incoming / p).exists() else "not in incoming/")
            + ("" if p not in reasons else f", failed: {reasons[p]}")
            for p, *_ in diff
        }
        return "(path, state, model): " + ", ".join(f"{d} {where[d[0]]}" for d in diff)

    def live_status(self) -> dict[str, Any] | None:
        try:
            data = json.loads((self.config.paths.state / "status.json").read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def _idle_counts(self, since: float) -> dict[str, int] | None:
        """status --json's counts once the daemon wrote, after `since` plus a settle, that
        nothing is queued or in flight and every URL has an outcome; else None."""
        live = self.live_status()
        if live is None or live.get("pid") != self.daemon.proc.pid:  # type: ignore[union-attr]
            return None
        if float(live["updated"]) < since + self.config.watch.quiet_seconds + 0.5:
            return None
        if live["queue"] or live["in_flight"]:
            return None
        if self.url_outcomes() < sum(len(u) for u in self.model.manifests.values()):
            return None
        report = collect(self.config)
        return {k: report[k] for k in ("done", "failed", "pending")}

    def _urls(self) -> list[tuple[str, str, str | None]]:
        db = self.config.state_db
        if not db.exists():
            return []
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            return con.execute("SELECT url, status, file FROM urls").fetchall()
        except sqlite3.OperationalError:
            return []
        finally:
            con.close()

    def url_outcomes(self) -> int:
        return len(self._urls())

    def note_downloads(self) -> None:
        """A URL done is a source in its manifest's folder (it renders once)."""
        for url, status, file in self._urls():
            if url in self.model.downloads or status != "done" or not file:
                continue
            rel = file
            self.model.downloads[url] = rel
            self.model.arrived(rel, self.model.sources.get(rel) or _good())

    def new_log(self) -> str:
        text = self.daemon.read_log()
        chunk, self.log_offset = text[self.log_offset :], len(text)
        return chunk


def _good() -> Any:
    from tests.chaos.model import Source

    return Source(True)


def expected_names(rel: str, result: RenderResult) -> list[str]:
    p = Path(rel)
    return [str(p.parent / f"{p.stem}_{t.label or t.width}.{t.ext}") for t in result.thumbnails]


def stale_names(outgoing: Path, rel: str) -> list[str]:
    """Thumbnails on disk in rel's plain names (what an earlier version of it may have left)."""
    p = Path(rel)
    folder = outgoing / p.parent
    pattern = re.compile(re.escape(p.stem) + r"_\d+\.[a-z]+$")
    if not folder.is_dir():
        return []
    return [str(p.parent / n.name) for n in folder.iterdir() if pattern.match(n.name)]


def python() -> str:
    return sys.executable
