"""The status page: `/` (HTML) and `/status.json` on the `[metrics] listen` address.

What it shows is what `thumbd status --json` shows (commands/status.py `collect()`: the state
database opened read-only, a walk of incoming/, the live figures of state/status.json), plus
the files per minute of the last hour (the monitor's history in status.json), the executor and
the latest failures. It is gathered on the metrics server's thread, never the main loop's; an
answer is served again for a few seconds (longer when gathering it was slow), so a page left
open, or many, costs the daemon next to nothing.

Everything that comes from a file name, a URL or a failure's reason is escaped. The page is one
self-contained document: inline CSS, an inline SVG chart and a few lines of inline script that
fetch the page again every few seconds (without script, a meta refresh does it). The response's
Content-Security-Policy allows that one script (by its hash) and nothing from anywhere else.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from html import escape
from typing import Any

from thumbd import __version__
from thumbd.commands.status import collect
from thumbd.config import Config
from thumbd.output.publish import size_text
from thumbd.service.metrics import Response
from thumbd.service.monitor import HISTORY_MINUTES, read_status
from thumbd.store.state import State, StateError

log = logging.getLogger("thumbd.metrics")

RECENT_FAILURES = 20  # failures listed, newest first (the state may hold any number)
MIN_REUSE = 2.0  # seconds an answer is served again at least...
REUSE_FACTOR = 10  # ...or this many times what gathering it took: at most a tenth of a core
REFRESH_SECONDS = 5

_SCRIPT = f"""
setInterval(async () => {{
  try {{
    const r = await fetch(location.pathname, {{cache: "no-store"}});
    if (!r.ok) throw new Error(r.status);
    const page = new DOMParser().parseFromString(await r.text(), "text/html");
    document.body.replaceWith(page.body);
    document.title = page.title;
  }} catch (e) {{
    document.body.classList.add("stale");
  }}
}}, {REFRESH_SECONDS * 1000});
"""
_SCRIPT_HASH = base64.b64encode(hashlib.sha256(_SCRIPT.encode()).digest()).decode()
CSP = (
    f"default-src 'none'; script-src 'sha256-{_SCRIPT_HASH}'; style-src 'unsafe-inline'; "
    "connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'"
)


class StatusPage:
    """Answers the status page's paths for the configuration in force (`config()`)."""

    def __init__(
        self,
        config: Callable[[], Config],
        *,
        min_reuse: float = MIN_REUSE,
        reuse_factor: float = REUSE_FACTOR,
    ) -> None:
        self.config = config
        self.min_reuse, self.reuse_factor = min_reuse, reuse_factor
        self._lock = threading.Lock()  # one request gathers; the others wait and reuse it
        self._cached: tuple[float, dict[str, Any]] | None = None  # (reuse until, data)

    def respond(self, path: str) -> Response | None:
        if path not in ("/", "/index.html", "/status.json"):
            return None
        try:
            data = self.data()
        except (StateError, sqlite3.Error, OSError) as e:
            log.warning("status page: cannot read the state: %s", e)
            data = {"error": f"cannot read the state: {e}"}
        status = "503 Service Unavailable" if "error" in data else "200 OK"
        if path == "/status.json":
            body = (json.dumps(data, indent=2) + "\n").encode()
            return status, [("Content-Type", "application/json")], body
        html_type = ("Content-Type", "text/html; charset=utf-8")
        return status, [html_type, ("Content-Security-Policy", CSP)], render(data).encode()

    def data(self) -> dict[str, Any]:
        """What the page shows, gathered at most every `min_reuse` seconds."""
        with self._lock:
            now = time.monotonic()
            if self._cached is not None and now < self._cached[0]:
                return self._cached[1]
            data = gather(self.config())
            took = time.monotonic() - now
            self._cached = (now + max(self.min_reuse, self.reuse_factor * took), data)
            return data


def gather(config: Config) -> dict[str, Any]:
    """`thumbd status --json`'s report, with the latest failures instead of all of them, the
    files per minute of the last hour, the executor and the estimated time to finish."""
    report = collect(config)
    report.pop("failures")  # every one of them: the page lists the latest few
    now = time.time()
    daemon = report["daemon"]
    report["recent_failures"] = recent_failures(config)
    report["history"] = history(config, daemon.get("pid"), now)
    report["executor"] = executor(config)
    report["gallery"] = config.thumbnails.gallery
    report["backlog"] = max(report["pending"], int(daemon.get("queue", 0)))
    rate = float(daemon.get("rate", 0.0))
    report["eta_seconds"] = round(report["backlog"] / rate) if rate > 0 else None
    report["generated"] = now
    report["version"] = __version__
    return report


def recent_failures(config: Config) -> list[dict[str, Any]]:
    if not config.state_db.exists():
        return []
    state = State(config.state_db, readonly=True)
    try:
        rows = state.recent_failures(RECENT_FAILURES)
    finally:
        state.close()
    failures = []
    for source, url, reason, when in rows:
        failure: dict[str, Any] = {"source": source, "reason": reason, "time": when}
        if url is not None:
            failure["url"] = url
        failures.append(failure)
    return failures


def history(config: Config, pid: int | None, now: float) -> list[list[int]]:
    """[minute, files] for each of the last HISTORY_MINUTES minutes, oldest first; 0 where the
    running daemon counted nothing (or did not run)."""
    live = read_status(config.paths.state) if pid else None
    counted: dict[int, int] = {}
    if live is not None and live.get("pid") == pid:
        for entry in live.get("history", []):
            if isinstance(entry, list) and len(entry) == 2:
                counted[int(entry[0])] = int(entry[1])
    last = int(now // 60) * 60
    minutes = range(last - 60 * (HISTORY_MINUTES - 1), last + 1, 60)
    return [[m, counted.get(m, 0)] for m in minutes]


def executor(config: Config) -> dict[str, str]:
    e = config.executor
    where = e.address or (str(e.scheduler_file) if e.scheduler_file is not None else "")
    return {"kind": e.kind, "address": where} if e.kind == "dask" else {"kind": e.kind}


# -- the HTML --------------------------------------------------------------------------------


def render(data: dict[str, Any]) -> str:
    """The whole page for `data` (what gather() returns, or {"error": ...})."""
    if "error" in data:
        body = f'<p class="bad">{text(data["error"])}</p>'
        return _document("thumbd: status unavailable", body)
    daemon = data["daemon"]
    parts = [
        _header(daemon, data["version"]),
        _figures(data),
        "<section><h2>Files per minute, last hour</h2>",
        chart(data["history"]),
        "</section>",
        _failures(data["recent_failures"], data["failed"]),
        _ignored(data["ignored"], data["ignored_by_extension"]),
        _manifests(data["manifests"]),
        '<footer>Updated <span id="updated">'
        f"{text(_clock(data['generated']))}</span> · "
        '<a href="/status.json">status.json</a> · <a href="/metrics">metrics</a></footer>',
    ]
    state = _state_word(daemon)
    return _document(f"thumbd: {state}, {data['backlog']} to do", "\n".join(parts))


def _document(title: str, body: str) -> str:
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f'<noscript><meta http-equiv="refresh" content="{REFRESH_SECONDS}"></noscript>\n'
        f"<title>{text(title)}</title>\n<style>{_STYLE}</style>\n"
        f"<script>{_SCRIPT}</script>\n</head>\n<body>\n{body}\n</body></html>\n"
    )


def _state_word(daemon: dict[str, Any]) -> str:
    if not daemon.get("running"):
        return "not running"
    if daemon.get("problem"):
        return "unhealthy"
    return "waiting" if daemon.get("waiting") else "running"


def _header(daemon: dict[str, Any], version: str) -> str:
    word = _state_word(daemon)
    css = {"running": "good", "waiting": "warn"}.get(word, "bad")
    detail = []
    if daemon.get("running"):
        detail.append(f"pid {daemon.get('pid') or '?'}")
        if "uptime" in daemon:
            detail.append(f"up {duration(float(daemon['uptime']))}")
    for key in ("problem", "waiting"):
        if daemon.get(key):
            detail.append(f"{key}: {daemon[key]}")
    return (
        f"<header><h1>thumbd <small>{text(version)}</small></h1>"
        f'<span id="state" class="badge {css}">{text(word)}</span>'
        f' <span class="detail">{text(" · ".join(detail))}</span></header>'
    )


def _figures(data: dict[str, Any]) -> str:
    d = data["daemon"]
    eta = data["eta_seconds"]
    if data["backlog"] == 0:
        eta_text = "nothing to do"
    else:
        eta_text = duration(eta) if eta is not None else "unknown (no recent progress)"
    executor = data["executor"]
    where = f"{executor['kind']}" + (f" ({executor['address']})" if executor.get("address") else "")
    rows = [
        ("backlog", f"{data['backlog']}", "files not done yet (incoming/ and the queue)"),
        ("queue", f"{d.get('queue', 0)}", f"{d.get('settling', 0)} settling, "
         f"{d.get('ready', 0)} ready, {d.get('in_flight', 0)} in flight"),
        ("eta", eta_text, "at the rate of the last minute"),
        ("rate", f"{float(d.get('rate', 0.0)):.1f}/s", "files per second, last minute"),
        ("done", f"{data['done']}", f"{d.get('done', 0)} this run · "
         f"{size_text(data['bytes_in'])} read, {size_text(data['bytes_out'])} written"),
        ("failed", f"{data['failed']}", f"{d.get('failed', 0)} this run"),
        ("workers", f"{d.get('workers', 0)}", f"{d.get('pool_restarts', 0)} restarts"),
        ("executor", where, "where thumbnails are rendered"),
        ("ignored", f"{data['ignored']}", "files of types thumbd does not take"),
    ]  # fmt: skip
    cells = [
        f'<div class="figure" id="{key}"><div class="label">{key}</div>'
        f'<div class="value">{text(value)}</div><div class="note">{text(note)}</div></div>'
        for key, value, note in rows
    ]
    return f'<section class="figures">{"".join(cells)}</section>'


def _failures(failures: list[dict[str, Any]], total: int) -> str:
    if not failures:
        return '<section><h2>Failures</h2><p class="none">None.</p></section>'
    rows = []
    for f in failures:
        where = text(f["source"])
        if "url" in f:
            where += f'<br><span class="url">{text(f["url"])}</span>'
        rows.append(
            f"<tr><td class='when'>{text(_clock(f['time']))}</td><td class='source'>{where}</td>"
            f"<td class='reason'>{text(f['reason'])}</td></tr>"
        )
    shown = f"the latest {len(failures)} of {total}" if total > len(failures) else f"{total}"
    return (
        f"<section><h2>Failures <small>({shown}; <code>thumbd retry</code> tries again)</small>"
        '</h2><table id="failures"><thead><tr><th>when</th><th>source</th><th>reason</th></tr>'
        f"</thead><tbody>{''.join(rows)}</tbody></table></section>"
    )


def _ignored(total: int, by_extension: dict[str, int]) -> str:
    if not total:
        return ""
    items = "".join(
        f"<li><code>{text(ext or '(no extension)')}</code> {n}</li>"
        for ext, n in by_extension.items()
    )
    return (
        f'<section><h2>Ignored <small>({total})</small></h2><ul id="ignored">{items}</ul></section>'
    )


def _manifests(manifests: list[dict[str, Any]]) -> str:
    if not manifests:
        return ""
    rows = "".join(
        f"<tr><td>{text(m['manifest'])}</td><td>{m['done']}</td><td>{m['failed']}</td>"
        f"<td>{text(size_text(m['bytes_downloaded']))}</td></tr>"
        for m in manifests
    )
    return (
        "<section><h2>URL manifests</h2><table><thead><tr><th>manifest</th><th>done</th>"
        f"<th>failed</th><th>downloaded</th></tr></thead><tbody>{rows}</tbody></table></section>"
    )


def chart(history: list[list[int]], width: int = 720, height: int = 160) -> str:
    """Files per minute as an inline SVG bar chart, oldest minute on the left."""
    top = max([n for _, n in history] + [1])
    left, bottom = 40, 20
    plot_w, plot_h = width - left - 4, height - bottom - 8
    slot = plot_w / max(1, len(history))
    bars = []
    for i, (minute, n) in enumerate(history):
        h = plot_h * n / top
        x, y = left + i * slot, 8 + plot_h - h
        bars.append(
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{max(1.0, slot - 1):.1f}" height="{h:.1f}">'
            f"<title>{text(_clock(minute, '%H:%M'))}: {n} files</title></rect>"
        )
    axis_y = 8 + plot_h
    return (
        f'<svg id="chart" role="img" viewBox="0 0 {width} {height}" width="100%" '
        f'preserveAspectRatio="xMinYMin meet" aria-label="files per minute">'
        f'<line x1="{left}" y1="{axis_y}" x2="{width - 4}" y2="{axis_y}" class="axis"/>'
        f'<text x="{left - 6}" y="14" text-anchor="end">{top}</text>'
        f'<text x="{left - 6}" y="{axis_y}" text-anchor="end">0</text>'
        f'<text x="{left}" y="{height - 4}">{len(history)} min ago</text>'
        f'<text x="{width - 4}" y="{height - 4}" text-anchor="end">now</text>'
        f'<g class="bars">{"".join(bars)}</g></svg>'
    )


def text(value: object) -> str:
    """Any value as HTML text: escaped (quotes too), and undecodable bytes of a file name
    (kept as surrogates) shown as U+FFFD rather than failing the page."""
    s = str(value).encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return escape(s, quote=True)


def duration(seconds: float) -> str:
    """45s, 3m 05s, 2h 03m, 4d 2h."""
    s = max(0, int(seconds))
    days, hours, minutes = s // 86400, s // 3600 % 24, s // 60 % 60
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m {s % 60:02d}s" if minutes else f"{s}s"


def _clock(when: float, fmt: str = "%Y-%m-%d %H:%M:%S") -> str:
    return time.strftime(fmt, time.localtime(when))


_STYLE = """
:root { color-scheme: light dark; --fg: #1d232b; --muted: #667; --card: #f3f5f8;
  --bar: #3b7dd8; --good: #1f8a4c; --warn: #b7791f; --bad: #c0392b; }
@media (prefers-color-scheme: dark) { :root { --fg: #e6e9ee; --muted: #99a; --card: #20252d; } }
body { font: 15px/1.45 system-ui, sans-serif; color: var(--fg); margin: 0 auto;
  padding: 1rem 1.5rem; max-width: 1100px; }
header { display: flex; align-items: baseline; gap: .8rem; flex-wrap: wrap; }
h1 { font-size: 1.5rem; margin: 0; }
h1 small, h2 small { color: var(--muted); font-weight: normal; }
h2 { font-size: 1.05rem; margin: 1.4rem 0 .5rem; }
.badge { padding: .1rem .6rem; border-radius: 1rem; color: #fff; font-weight: 600; }
.good { background: var(--good); } .warn { background: var(--warn); }
.bad { background: var(--bad); color: #fff; padding: .2rem .5rem; }
.detail, .note, .none, footer, .when, .url { color: var(--muted); }
.figures { display: grid; grid-template-columns: repeat(auto-fill, minmax(180px, 1fr));
  gap: .6rem; margin-top: 1rem; }
.figure { background: var(--card); border-radius: .5rem; padding: .6rem .8rem; }
.label { text-transform: uppercase; font-size: .75rem; letter-spacing: .05em; color: var(--muted); }
.value { font-size: 1.5rem; font-weight: 600; overflow-wrap: anywhere; }
.note { font-size: .8rem; }
svg text { font-size: 11px; fill: var(--muted); } svg .axis { stroke: var(--muted); }
svg rect { fill: var(--bar); }
table { border-collapse: collapse; width: 100%; font-size: .9rem; }
th, td { text-align: left; padding: .3rem .5rem; border-bottom: 1px solid var(--card);
  vertical-align: top; overflow-wrap: anywhere; }
.when { white-space: nowrap; }
ul#ignored { list-style: none; padding: 0; display: flex; gap: 1rem; flex-wrap: wrap; }
footer { margin-top: 2rem; font-size: .85rem; }
body.stale::before { content: "Not updating: the daemon does not answer."; display: block;
  background: var(--bad); color: #fff; padding: .4rem .8rem; border-radius: .4rem; }
"""
