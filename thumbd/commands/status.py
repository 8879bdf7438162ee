"""What is done, failed and pending: read from the state and a walk of incoming/.

Works whether or not a daemon runs (SQLite WAL lets a reader in beside the writer). When one
runs (it holds the flock on state/daemon.lock), its live figures come from state/status.json,
which it rewrites every couple of seconds.

URL manifests add their failed URLs to `failures` (with the manifest as `source` and the `url`),
and per-manifest totals under `manifests`.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections import Counter
from dataclasses import asdict
from typing import Any

from thumbd.commands.control import running_pid
from thumbd.config import Config
from thumbd.intake import scanner
from thumbd.render.fingerprint import fingerprint
from thumbd.service.monitor import read_status
from thumbd.store.state import State, damaged, is_damage
from thumbd.text import plural

LIVE_KEYS = (
    "started",
    "queue",
    "settling",
    "ready",
    "in_flight",
    "rate",
    "eta",
    "done",
    "failed",
    "bytes_in",
    "bytes_out",
    "workers",
    "pool_restarts",
    "problem",
    "waiting",
    "sandbox",
    "moved",
    "reused",
    "hashed",
)


def show(config: Config, *, as_json: bool) -> None:
    """`thumbd status`: print collect()'s report as JSON, or as text."""
    report = collect(config)
    if as_json:
        print(json.dumps(report, indent=2))
        return
    print(_daemon_line(report["daemon"]))
    print(f"done:    {report['done']}")
    print(f"failed:  {report['failed']}")
    print(f"pending: {report['pending']}")
    if report["stale"]:
        print(
            f"stale:   {report['stale']} (thumbnails made with older settings:"
            " `thumbd redo --stale` renders them again)"
        )
    if report["ignored"]:
        by_ext = report["ignored_by_extension"].items()
        kinds = ", ".join(f"{ext or '(no extension)'} {n}" for ext, n in by_ext)
        print(f"ignored: {report['ignored']} ({kinds}): not images thumbd takes")
    for m in report["manifests"]:
        print(
            f"manifest {m['manifest']}: {plural(m['done'], 'URL')} done, {m['failed']} failed,"
            f" downloaded {plural(m['bytes_downloaded'], 'byte')},"
            f" thumbnails {plural(m['bytes_out'], 'byte')}"
        )
    for f in report["failures"]:
        where = f"{f['source']} {f['url']}" if "url" in f else f["source"]
        print(f"  {where}: {f['reason']}")


def _daemon_line(d: dict[str, Any]) -> str:
    if not d["running"]:
        return "thumbd: not running"
    head = f"thumbd: running (pid {d['pid'] or '?'})"
    if "uptime" not in d:
        return head + ", no live figures yet"
    lines = [
        f"{head}, up {_duration(d['uptime'])}"
        + ("" if d["healthy"] else f"; {d['problem']}")
        + (f"; waiting for {d['waiting']}" if d.get("waiting") else ""),
        f"  queue:     {d['queue']} ({d['settling']} settling, {d['ready']} ready)",
        f"  in flight: {d['in_flight']}",
        f"  rate:      {d['rate']:.1f} files/s over the last minute"
        + (f", about {_duration(d['eta'])} left" if d.get("eta") else ""),
        f"  this run:  {d['done']} done, {d['failed']} failed"
        + (f" ({d['moved']} moved, {d['reused']} reused, not rendered)" if "moved" in d else ""),
    ]
    if d.get("sandbox"):
        lines.append(f"  sandbox:   {d['sandbox']}")
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    """3m 05s, 2h 03m, 4d 2h 03m."""
    s = int(seconds)
    days, hours, minutes = s // 86400, s // 3600 % 24, s // 60 % 60
    if days:
        return f"{days}d {hours}h {minutes:02d}m"
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m {s % 60:02d}s"


def failed_counts(config: Config) -> tuple[int, int]:
    """(failed sources, failed URLs of manifests) the state records; (0, 0) without a state."""
    if not config.state_db.exists():
        return 0, 0
    state = State(config.state_db, readonly=True)
    try:
        return state.totals().failed, len(state.url_failures())
    finally:
        state.close()


def collect(config: Config) -> dict[str, Any]:
    recorded: dict[str, Any] = {}
    failures: list[dict[str, str]] = []
    manifests: list[dict[str, Any]] = []
    done = failed = bytes_in = bytes_out = 0
    stale: int | None = 0
    daemon = daemon_status(config)
    since = daemon.get("started")  # Unix time: a running daemon's records since count as its
    if config.state_db.exists():
        state = State(config.state_db, readonly=True)
        try:
            recorded = state.signatures()
            totals, done_since, failed_since = state.totals_since(since)
            done, failed = totals.done, totals.failed
            if since is not None:  # in the same read as the totals: the two always agree
                daemon["done"], daemon["failed"] = done_since, failed_since
            bytes_in, bytes_out = totals.bytes_in, totals.bytes_out
            failures = [{"source": r.path, "reason": r.reason or ""} for r in state.failures()]
            url_failures = state.url_failures()
            failed += len(url_failures)
            failures += [
                {"source": u.manifest, "url": u.url, "reason": u.reason or ""} for u in url_failures
            ]
            manifests = [asdict(t) for t in state.manifest_totals()]
            stale = state.stale(fingerprint(config.thumbnails))
        except sqlite3.DatabaseError as e:  # damage in a page the open did not read
            if not is_damage(e):
                raise
            raise damaged(config.state_db, e) from None
        finally:
            state.close()
    root = str(config.paths.incoming)
    ignored: Counter[str] = Counter()
    pending = sum(1 for _ in scanner.pending(root, recorded, config.watch.ignore, ignored))
    return {
        "done": done,
        "failed": failed,
        "pending": pending,
        "stale": stale,  # None: a database a daemon of this version has not opened yet
        "ignored": sum(ignored.values()),
        "ignored_by_extension": dict(sorted(ignored.items(), key=lambda kv: (-kv[1], kv[0]))),
        "failures": failures,
        "bytes_in": bytes_in,
        "bytes_out": bytes_out,
        "daemon": daemon,
        "bytes_downloaded": sum(m["bytes_downloaded"] for m in manifests),
        "manifests": manifests,
    }


def daemon_status(config: Config) -> dict[str, Any]:
    """{"running": false}, or the running daemon's pid and live figures (this run's counts)."""
    pid = running_pid(config)
    if pid is None:
        return {"running": False}
    info: dict[str, Any] = {"running": True, "pid": pid or None}
    live = read_status(config.paths.state)
    if live is not None and live.get("pid") == pid:
        info.update({k: live[k] for k in LIVE_KEYS if k in live})
        info["uptime"] = round(time.time() - float(live["started"]), 1)
        info["healthy"] = live.get("problem") is None
    return info
