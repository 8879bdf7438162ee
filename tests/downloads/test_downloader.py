"""The downloader's event loop and its scheduler, in process, against a real server."""

from __future__ import annotations

import io
import queue
from pathlib import Path

from tests.conftest import wait_until
from tests.httpserver import Body, Steps, serving, status
from tests.images import natural
from thumbd.config import DownloadConfig
from thumbd.downloads.downloader import (
    BACKOFF_BASE,
    Downloader,
    Fetched,
    Scheduler,
    UrlTask,
    backoff,
)
from thumbd.downloads.outcomes import Downloaded, Failure


def task(host: str, n: int, manifest: str = "m.urls") -> UrlTask:
    return UrlTask(manifest, f"http://{host}/{n}.jpg", "m", str(n))


def test_a_busy_host_does_not_hold_up_another() -> None:
    s = Scheduler(max_per_host=1)
    for t in (task("a", 1), task("a", 2), task("b", 1)):
        s.put(t)
    assert s.take() == task("a", 1)
    assert s.take() == task("b", 1)  # a is at its limit: b goes first
    assert s.take() is None  # a's second URL waits for a's slot
    s.release("a")
    assert s.take() == task("a", 2)


def test_hosts_take_turns() -> None:
    s = Scheduler(max_per_host=10)
    for n in range(3):
        s.put(task("a", n))
    s.put(task("b", 0))
    order = [s.take() for _ in range(4)]
    assert [t.url for t in order if t] == [
        "http://a/0.jpg",
        "http://b/0.jpg",
        "http://a/1.jpg",
        "http://a/2.jpg",
    ]


def test_stop_taking_hands_back_what_waits() -> None:
    s = Scheduler(max_per_host=2)
    s.put(task("a", 1))
    s.put(task("a", 2), delay=60)
    s.put(task("b", 1, manifest="other.urls"))
    assert s.drop(lambda t: t.manifest != "other.urls") == [task("b", 1, manifest="other.urls")]
    assert 59 < (s.until_due() or 0) <= 60
    assert sorted(t.url for t in s.stop_taking()) == ["http://a/1.jpg", "http://a/2.jpg"]
    assert not s.put(task("a", 3))
    assert s.take() is None and s.until_due() is None


def test_backoff_grows_with_jitter_and_honours_retry_after() -> None:
    for attempt in (1, 2, 3, 4):
        base = BACKOFF_BASE * 2 ** (attempt - 1)
        delays = [backoff(attempt) for _ in range(50)]
        assert all(0.5 * base <= d <= 1.5 * base for d in delays)
        assert len(set(delays)) > 1
    assert all(7.0 <= backoff(1, 7.0) <= 8.0 for _ in range(20))


def test_a_retry_waits_in_the_scheduler_not_in_a_thread(tmp_path: Path) -> None:
    """One fetch at a time: while the first URL waits out its Retry-After, another is served."""
    buf = io.BytesIO()
    natural((64, 48)).save(buf, "JPEG")
    (tmp_path / "incoming").mkdir()
    inbox: queue.SimpleQueue[Fetched] = queue.SimpleQueue()
    config = DownloadConfig(concurrency=1, allow_private_addresses=True, retries=1)
    d = Downloader(config, str(tmp_path / "incoming"), inbox.put)
    with serving() as server:
        server.routes["/later.jpg"] = Steps([status(503, **{"Retry-After": "3"}), Body(b"")])
        server.routes["/now.jpg"] = Body(buf.getvalue())
        d.start()
        try:
            d.submit(UrlTask("m.urls", server.url("/later.jpg"), "m", "later"))
            wait_until(lambda: server.counts["/later.jpg"] == 1, 10, "the 503")
            d.submit(UrlTask("m.urls", server.url("/now.jpg"), "m", "now"))
            first = inbox.get(timeout=30)
            second = inbox.get(timeout=30)
        finally:
            d.stop()
    assert first.task.stem == "now" and isinstance(first.result, Downloaded)
    assert second.task.stem == "later" and isinstance(second.result, Failure)
    assert second.result.reason == "not an image (image/jpeg)"  # the empty body of the retry
    assert server.counts["/later.jpg"] == 2
