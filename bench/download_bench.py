"""`python -m bench.download_bench`: the download stage's throughput, old stage against new.

A benchmark, not a test: it measures. One server process (aiohttp.web) listens on 127.0.0.2 to
127.0.0.21 (loopback only), answers every request after `--latency` seconds with a small JPEG,
and counts the requests in flight per address. Against it:

1. URLs over 20 hosts, and the same over one host, through the stage's `Downloader` in a child
   process: this tree's, and the old threaded stage's, checked out with `git worktree add` of
   `--old-rev` into a temporary folder (the old code is never imported from thumbd/ here);
2. a 10,000-URL manifest through a real `thumbd run` of this tree: growth of the daemon's RSS
   and its threads while it downloads.

Prints a table and writes JSON (bench/results/download-<time>.json).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import io
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

HOSTS = [f"127.0.0.{i}" for i in range(2, 22)]
HERE = Path(__file__).resolve().parent
TREE = HERE.parent
RESULTS = HERE / "results"

# Run in a child with PYTHONPATH=<a tree>: that tree's Downloader fetches the URLs on stdin.
STAGE_RUNNER = r"""
import json, queue, shutil, sys, tempfile, time
from thumbd.config import DownloadConfig
from thumbd.downloads.downloader import Downloader, UrlTask
urls = json.loads(sys.stdin.read())
inbox = queue.SimpleQueue()
root = tempfile.mkdtemp(prefix="thumbd-dl-bench-")
d = Downloader(DownloadConfig(allow_private_addresses=True), root, inbox.put)
d.start()
started = time.monotonic()
for i, url in enumerate(urls):
    d.submit(UrlTask("bench.urls", url, "bench", f"u{i:05d}"))
kinds = {}
for _ in urls:
    result = inbox.get(timeout=600).result
    kinds[type(result).__name__] = kinds.get(type(result).__name__, 0) + 1
elapsed = time.monotonic() - started
d.stop()
shutil.rmtree(root, ignore_errors=True)
print(json.dumps({"seconds": elapsed, "results": kinds}))
"""


# -- the server -----------------------------------------------------------------------------


def serve(port: int, latency: float) -> None:
    """The benchmark's server (in a process of its own): every address in HOSTS on `port`."""
    from aiohttp import web

    body = _jpeg()
    active: dict[str, int] = {}
    peak: dict[str, int] = {}
    counts: dict[str, int] = {}

    async def image(request: web.Request) -> web.Response:
        host = request.transport.get_extra_info("sockname")[0] if request.transport else "?"
        active[host] = active.get(host, 0) + 1
        peak[host] = max(peak.get(host, 0), active[host])
        counts[host] = counts.get(host, 0) + 1
        try:
            await asyncio.sleep(latency)
        finally:
            active[host] -= 1
        return web.Response(body=body, content_type="image/jpeg")

    async def stats(request: web.Request) -> web.Response:
        if request.query.get("reset"):
            peak.clear()
            counts.clear()
        return web.json_response({"peak": peak, "counts": counts})

    async def main() -> None:
        app = web.Application()
        app.router.add_get("/__stats", stats)
        app.router.add_get("/{name:.*}", image)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        for host in HOSTS:
            await web.TCPSite(runner, host, port, backlog=1024).start()
        print("ready", flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())


def _jpeg() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (40, 30), (200, 120, 40)).save(buf, "JPEG")
    return buf.getvalue()


def _free_port() -> int:
    for _ in range(50):
        with socket.socket() as s:
            s.bind((HOSTS[0], 0))
            port = int(s.getsockname()[1])
        ok = True
        for host in HOSTS[1:]:
            with socket.socket() as s:
                try:
                    s.bind((host, port))
                except OSError:
                    ok = False
                    break
        if ok:
            return port
    raise RuntimeError("no port free on all of 127.0.0.2-21")


@contextlib.contextmanager
def server(latency: float) -> Iterator[int]:
    port = _free_port()
    command = [sys.executable, "-m", "bench.download_bench", "--serve", str(port)]
    command += ["--latency", str(latency)]
    proc = subprocess.Popen(command, cwd=TREE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != "ready":
            raise RuntimeError("the benchmark server did not start")
        yield port
    finally:
        proc.terminate()
        proc.wait(30)


def stats(port: int, reset: bool = False) -> dict[str, Any]:
    url = f"http://{HOSTS[0]}:{port}/__stats" + ("?reset=1" if reset else "")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=10) as r:
        return dict(json.load(r))


# -- the stage, old and new -----------------------------------------------------------------


def stage_run(tree: Path, urls: list[str], port: int) -> dict[str, Any]:
    stats(port, reset=True)
    env = {**os.environ, "PYTHONPATH": str(tree)}
    done = subprocess.run(
        [sys.executable, "-c", STAGE_RUNNER],
        input=json.dumps(urls),
        capture_output=True,
        text=True,
        env=env,
        cwd=tree,  # `python -c` puts the working directory first on sys.path
        timeout=1800,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"the stage in {tree} failed:\n{done.stderr[-3000:]}")
    out = json.loads(done.stdout.strip().splitlines()[-1])
    seen = stats(port)
    return {
        "urls": len(urls),
        "seconds": round(out["seconds"], 2),
        "urls_per_s": round(len(urls) / out["seconds"], 1),
        "results": out["results"],
        "max_per_host_seen": max(seen["peak"].values(), default=0),
    }


@contextlib.contextmanager
def old_tree(rev: str) -> Iterator[Path]:
    """The old stage, checked out of git into a temporary folder (removed afterwards)."""
    folder = Path(tempfile.mkdtemp(prefix="thumbd-old-stage-")) / "tree"
    subprocess.run(
        ["git", "-C", str(TREE), "worktree", "add", "--detach", str(folder), rev],
        check=True,
        capture_output=True,
    )
    try:
        yield folder
    finally:
        subprocess.run(
            ["git", "-C", str(TREE), "worktree", "remove", "--force", str(folder)],
            check=False,
            capture_output=True,
        )


# -- the daemon with 10,000 URLs ------------------------------------------------------------


def daemon_run(count: int, port: int, workdir: Path) -> dict[str, Any]:
    sys.path.insert(0, str(TREE))
    from bench.daemon_run import DaemonRun
    from bench.procmon import rss

    extra = {
        "download": {"allow_private_addresses": True},
        "thumbnails": {"widths": [8]},
    }
    with DaemonRun(workdir / "daemon", workers=1, extra=extra) as run:
        run.start(env={"PYTHONPATH": str(TREE)})
        run.wait_ready(120)
        _write(run.incoming / "warm.urls", [f"http://{HOSTS[0]}:{port}/warm.jpg"])
        _wait(lambda: (run.incoming / "warm" / "warm.jpg").exists(), 60)
        time.sleep(1.0)
        before, threads_before = rss(run.pid), _threads(run.pid)
        urls = [f"http://{HOSTS[i % len(HOSTS)]}:{port}/m/{i:05d}.jpg" for i in range(count)]
        stats(port, reset=True)
        started = time.monotonic()
        _write(run.incoming / "big.urls", urls)
        peak, threads_peak = before, threads_before
        folder = run.incoming / "big"
        while sum(stats(port)["counts"].values()) < count or len(_listing(folder)) < count:
            peak, threads_peak = max(peak, rss(run.pid)), max(threads_peak, _threads(run.pid))
            if time.monotonic() - started > 1800:
                raise RuntimeError("10,000 URLs did not download within 30 minutes")
            time.sleep(0.2)
        seconds = time.monotonic() - started
    return {
        "urls": count,
        "seconds": round(seconds, 1),
        "rss_growth_mb": round((peak - before) / 1e6, 1),
        "threads_before": threads_before,
        "threads_peak": threads_peak,
    }


def _threads(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def _listing(folder: Path) -> list[str]:
    try:
        return os.listdir(folder)
    except FileNotFoundError:
        return []


def _write(path: Path, lines: list[str]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("\n".join(lines) + "\n")
    os.replace(tmp, path)


def _wait(predicate: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError("timed out")
        time.sleep(0.05)


# -- the table ------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {"latency_s": args.latency, "old_rev": args.old_rev}
    with server(args.latency) as port:
        wide = [f"http://{HOSTS[i % 20]}:{port}/w/{i:05d}.jpg" for i in range(args.urls)]
        narrow = [f"http://{HOSTS[0]}:{port}/n/{i:05d}.jpg" for i in range(args.one_host_urls)]
        trees = {"new": TREE}
        with contextlib.ExitStack() as stack:
            if not args.no_old:
                trees["old"] = stack.enter_context(old_tree(args.old_rev))
            for name, tree in trees.items():
                results[f"{name}_20_hosts"] = stage_run(tree, wide, port)
                results[f"{name}_1_host"] = stage_run(tree, narrow, port)
        if args.daemon_urls:
            with tempfile.TemporaryDirectory(prefix="thumbd-dl-bench-") as tmp:
                results["daemon_10k"] = daemon_run(args.daemon_urls, port, Path(tmp))
    return results


def table(results: dict[str, Any]) -> str:
    rows = ["| run | old stage | new stage |", "| --- | --- | --- |"]
    for key, label in (("20_hosts", "URLs over 20 hosts"), ("1_host", "URLs on 1 host")):
        cells = []
        for name in ("old", "new"):
            r = results.get(f"{name}_{key}")
            cells.append(
                f"{r['urls_per_s']} URLs/s ({r['urls']} in {r['seconds']} s, "
                f"max {r['max_per_host_seen']} per host)"
                if r
                else "not run"
            )
        rows.append(f"| {label} | {cells[0]} | {cells[1]} |")
    d = results.get("daemon_10k")
    if d:
        rows.append(
            f"| daemon, {d['urls']}-URL manifest | not run | RSS +{d['rss_growth_mb']} MB, "
            f"threads {d['threads_before']} → {d['threads_peak']}, {d['seconds']} s |"
        )
    return "\n".join(rows)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.download_bench", description=__doc__)
    p.add_argument("--urls", type=int, default=2000, help="URLs over 20 hosts (2000)")
    p.add_argument("--one-host-urls", type=int, default=400, help="URLs on one host (400)")
    p.add_argument("--daemon-urls", type=int, default=10_000, help="manifest size (0: skip)")
    p.add_argument("--latency", type=float, default=0.1, help="server answer time (0.1 s)")
    p.add_argument("--old-rev", default="67149dc", help="git revision of the threaded stage")
    p.add_argument("--no-old", action="store_true", help="skip the old stage")
    p.add_argument("--serve", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--json", type=Path, default=None)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.serve is not None:
        serve(args.serve, args.latency)
        return 0
    results = run(args)
    print(table(results))
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = args.json or RESULTS / f"download-{stamp}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
