"""The status page: what it gathers (a real state, real folders), its HTML (escaped, one script
of its own), its server beside /metrics, and its refresh in a real browser."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import browser, images
from tests.browser import needs_chromium, parse
from thumbd.config import Config, load_config
from thumbd.service import metrics
from thumbd.service.monitor import HISTORY_MINUTES, Monitor, Snapshot
from thumbd.service.notify import Notifier
from thumbd.service.page import CSP, StatusPage, chart, gather, history, render
from thumbd.store.state import State

HOSTILE = "<img src=x onerror=alert(1)>.jpg"


def configure(tmp: Path) -> Config:
    (tmp / "incoming").mkdir(exist_ok=True)
    cfg = tmp / "thumbd.toml"
    cfg.write_text('[watch]\nignore = []\n[executor]\nkind = "local"\n')
    return load_config(cfg)


def record(config: Config, failures: list[tuple[str, str]], done: tuple[str, ...] = ()) -> None:
    state = State(config.state_db)
    try:
        for path in done:
            state.record_done(path, (1, 1, 1), [], 10, 5)
        for path, reason in failures:
            state.record_failed(path, (1, 1, 1), reason, 10)
    finally:
        state.close()


@pytest.fixture
def server() -> Iterator[metrics.Server]:
    s = metrics.Server("127.0.0.1:0")
    yield s
    metrics.set_pages(None)
    s.close()


def get(url: str) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


# -- what it gathers -------------------------------------------------------------------------


def test_gather_reuses_status_and_lists_the_latest_failures_first(tmp_path: Path) -> None:
    config = configure(tmp_path)
    record(config, [("old.jpg", "cannot identify image file")], done=("a.jpg",))
    record(config, [(HOSTILE, 'image file is truncated "><script>')])
    (config.paths.incoming / "notes.txt").write_text("not an image")
    images.natural((64, 48)).save(config.paths.incoming / "new.jpg")
    data = gather(config)
    assert (data["done"], data["failed"], data["pending"]) == (1, 2, 1)
    assert data["ignored"] == 1 and data["ignored_by_extension"] == {".txt": 1}
    assert [f["source"] for f in data["recent_failures"]] == [HOSTILE, "old.jpg"]
    assert "failures" not in data  # all of them: the page has the latest few
    assert data["daemon"] == {"running": False}
    assert data["executor"] == {"kind": "local"}
    assert data["backlog"] == 1 and data["eta_seconds"] is None
    assert len(data["history"]) == HISTORY_MINUTES and not any(n for _, n in data["history"])
    json.dumps(data)  # what /status.json serves


def test_the_history_is_the_running_daemons_files_per_minute(tmp_path: Path) -> None:
    m = Monitor(Notifier(None), tmp_path)
    m._count_minute(6000.0, 4)  # minute 6000 (100 min since the epoch)
    m._count_minute(6030.0, 10)
    m._count_minute(6130.0, 11)  # two minutes on: the one between counted nothing
    assert list(m.history) == [[6000, 10], [6120, 1]]
    for minute in range(HISTORY_MINUTES * 2):
        m._count_minute(60.0 * minute, 11 + minute)
    assert len(m.history) == HISTORY_MINUTES  # bounded
    m.write_status(_snapshot(), 0.0)
    config = load_config(_config_with_state(tmp_path))
    shown = history(config, os.getpid(), 60.0 * (HISTORY_MINUTES * 2 - 1))
    assert len(shown) == HISTORY_MINUTES and all(n == 1 for _, n in shown)
    assert not any(n for _, n in history(config, os.getpid() + 1, 6130.0))  # another daemon's
    m.close()


def _snapshot() -> Snapshot:
    return Snapshot(0, 0, 0, 0, 0, 0, 0, 1, 0, None)


def _config_with_state(tmp: Path) -> Path:
    (tmp / "incoming").mkdir(exist_ok=True)
    cfg = tmp / "page.toml"
    cfg.write_text(f'[paths]\nstate = "{tmp}"\n')
    return cfg


# -- the HTML --------------------------------------------------------------------------------


def hostile_data(tmp_path: Path) -> dict[str, Any]:
    config = configure(tmp_path)
    record(config, [(HOSTILE, 'reason with <b>markup</b> & "quotes"')])
    (config.paths.incoming / "x.<svg onload=alert(2)>").write_text("ignored")
    return gather(config)


def test_every_name_reason_and_extension_is_escaped(tmp_path: Path) -> None:
    html = render(hostile_data(tmp_path))
    doc = parse(html)
    tags = [t for t, _ in doc.elements]
    assert "img" not in tags and "b" not in tags and tags.count("svg") == 1  # the chart only
    assert tags.count("script") == 1
    assert not [a for _, a in doc.elements if any(k.startswith("on") for k in a)]
    text = doc.text()
    assert HOSTILE in text and 'reason with <b>markup</b> & "quotes"' in text
    assert ".<svg onload=alert(2)>" in text


def test_the_csp_allows_exactly_the_pages_own_script(tmp_path: Path) -> None:
    html = render(hostile_data(tmp_path))
    script = re.search(r"<script>(.*?)</script>", html, re.S)
    assert script is not None
    digest = base64.b64encode(hashlib.sha256(script[1].encode()).digest()).decode()
    assert f"script-src 'sha256-{digest}'" in CSP and "unsafe-inline" not in CSP.split("style")[0]


def test_the_chart_has_a_bar_per_minute_scaled_to_the_busiest() -> None:
    svg = chart([[60 * i, n] for i, n in enumerate([0, 5, 10, 0])], width=440, height=120)
    rects = [a for t, a in parse(svg).elements if t == "rect"]
    heights = [float(r["height"]) for r in rects]
    assert len(rects) == 4 and heights[0] == 0 and heights[2] == 2 * heights[1] > 0
    assert "10" in parse(svg).text()  # the top of the scale


def test_an_unreadable_state_is_a_503_that_says_why(tmp_path: Path) -> None:
    config = configure(tmp_path)
    config.paths.state.mkdir()
    config.state_db.write_bytes(b"this is not a database" * 100)
    status, _, body = StatusPage(lambda: config).respond("/") or ("", [], b"")
    assert status.startswith("503") and b"cannot read the state" in body
    json_status, _, json_body = StatusPage(lambda: config).respond("/status.json") or ("", [], b"")
    assert json_status.startswith("503") and "error" in json.loads(json_body)


def test_an_answer_is_reused_for_a_while(tmp_path: Path) -> None:
    config = configure(tmp_path)
    lasting, fresh = (
        StatusPage(lambda: config, min_reuse=3600),
        StatusPage(lambda: config, min_reuse=0, reuse_factor=0),
    )
    assert lasting.data()["pending"] == fresh.data()["pending"] == 0
    images.natural((64, 48)).save(config.paths.incoming / "new.jpg")
    assert lasting.data()["pending"] == 0 and fresh.data()["pending"] == 1


# -- the server ------------------------------------------------------------------------------


def test_the_endpoint_serves_the_page_json_and_metrics_apart(
    tmp_path: Path, server: metrics.Server
) -> None:
    config = configure(tmp_path)
    record(config, [(HOSTILE, "cannot identify image file")])
    base = f"http://127.0.0.1:{server.port}"
    assert get(f"{base}/")[0] == 404  # no pages set: /metrics only
    metrics.set_pages(StatusPage(lambda: config).respond)
    status, headers, body = get(f"{base}/")
    assert status == 200 and headers["Content-Type"] == "text/html; charset=utf-8"
    assert headers["Content-Security-Policy"] == CSP and headers["Cache-Control"] == "no-store"
    assert (
        HOSTILE not in body.decode() and "&lt;img src=x onerror=alert(1)&gt;.jpg" in body.decode()
    )
    status, headers, body = get(f"{base}/status.json")
    assert status == 200 and headers["Content-Type"] == "application/json"
    assert json.loads(body)["recent_failures"][0]["source"] == HOSTILE
    status, headers, body = get(f"{base}/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    assert b"thumbd_files_done_total" in body
    assert get(f"{base}/anything-else")[0] == 404


@needs_chromium
def test_the_page_fetches_itself_again_in_a_browser(tmp_path: Path, server: metrics.Server) -> None:
    config = configure(tmp_path)
    page = StatusPage(lambda: config, min_reuse=0, reuse_factor=0)
    asked: list[str] = []

    def respond(path: str) -> metrics.Response | None:
        if path == "/":  # each time a file more to do: the refreshed page must show it
            images.natural((32, 24)).save(config.paths.incoming / f"n{len(asked)}.jpg")
            asked.append(path)
        return page.respond(path)

    metrics.set_pages(respond)
    loaded = browser.load(f"http://127.0.0.1:{server.port}/", budget_ms=11_000)
    assert loaded.errors == []
    assert len(asked) >= 2, "the page never fetched itself again"
    backlog = [a for t, a in parse(loaded.dom).elements if a.get("id") == "backlog"]
    assert len(backlog) == 1  # the body was replaced, not added to
    assert f"backlog {len(asked)} files not done yet" in loaded.text().lower()
    assert "stale" not in body_class(loaded.dom)


def body_class(dom: str) -> str:
    return next(a.get("class", "") for t, a in parse(dom).elements if t == "body")


@needs_chromium
def test_a_page_that_stops_answering_says_so(tmp_path: Path, server: metrics.Server) -> None:
    config = configure(tmp_path)
    page = StatusPage(lambda: config)
    served: list[str] = []

    def respond(path: str) -> metrics.Response | None:
        served.append(path)
        if len(served) > 1:  # the daemon went away after the first load
            return "503 Service Unavailable", [("Content-Type", "text/plain")], b"gone"
        return page.respond(path)

    metrics.set_pages(respond)
    loaded = browser.load(f"http://127.0.0.1:{server.port}/", budget_ms=6_000)
    assert "stale" in body_class(loaded.dom)
    assert [a for t, a in parse(loaded.dom).elements if a.get("id") == "backlog"]  # still shown
