"""The command line: sub-commands and exit codes. Wiring only; the work is elsewhere."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from thumbd import __version__
from thumbd.commands import control
from thumbd.commands.retry import redo, retry
from thumbd.commands.status import collect
from thumbd.config import Config, ConfigError, load_config, to_toml
from thumbd.service import logs
from thumbd.service.startup import StartupError, cannot
from thumbd.store.state import StateError

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
RENDERING = ("run", "start", "once", "check-config")  # the commands whose settings render

log = logging.getLogger("thumbd")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="thumbd",
        description="Thumbnail daemon: every image dropped into incoming/ gets resized copies "
        "in outgoing/ (by default 200, 64 and 32 px wide).",
    )
    parser.add_argument("--version", action="version", version=f"thumbd {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.add_argument(
            "-c",
            "--config",
            type=Path,
            metavar="FILE",
            help="TOML configuration (default: built-in defaults, paths relative "
            "to the current directory)",
        )
        return p

    command("run", "Watch incoming/ in the foreground until SIGTERM or Ctrl-C.")
    command("start", "Run the daemon in the background (pidfile and log in the state folder).")
    command("stop", "Stop the background daemon: SIGTERM, then wait for it to drain.")
    once = command(
        "once", "Process everything pending, then exit: 0 all done, 1 some failed or left."
    )
    once.add_argument(
        "-v", "--verbose", action="store_true", help="a log line per file below the progress bar"
    )
    once.add_argument(
        "-q", "--quiet", action="store_true", help="no progress, and only warnings and errors"
    )
    status = command("status", "Show what is done, failed and pending.")
    status.add_argument("--json", action="store_true", help="print one JSON object")
    command("check-config", "Validate the configuration and print the effective values.")
    again = command("retry", "Clear failure records so those files are tried again.")
    again.add_argument("paths", nargs="*", metavar="PATH", help="a failed file or a folder")
    again.add_argument("--all", action="store_true", help="every failed file")
    anew = command(
        "redo",
        "Render files again with the current settings (after a change of widths, sizes or "
        "format): their thumbnails are replaced, and those no longer made are removed.",
    )
    anew.add_argument("paths", nargs="*", metavar="PATH", help="a file or a folder in incoming/")
    anew.add_argument("--all", action="store_true", help="every file")
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(argv)
    except BrokenPipeError:
        # `thumbd status | head -1`: the reader left. Say nothing more (Python would print a
        # traceback when it flushes stdout at exit): point stdout at /dev/null.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_FAILED


def _main(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = load_config(args.config)
        if args.command in RENDERING:
            _check_render_settings(config)
    except ConfigError as e:
        print(f"thumbd: configuration error: {e}", file=sys.stderr)
        return EXIT_USAGE
    try:
        if args.command == "check-config":
            print(to_toml(config), end="")
            return EXIT_OK
        if args.command == "status":
            return status(config, as_json=args.json)
        if args.command in ("retry", "redo"):
            if bool(args.paths) == args.all:
                print(f"thumbd: {args.command} needs PATH... or --all (not both)", file=sys.stderr)
                return EXIT_USAGE
            mark = retry if args.command == "retry" else redo
            return mark(config, args.paths, args.all)
        if args.command == "start":
            return control.start(config)
        if args.command == "stop":
            return control.stop(config)
        if getattr(args, "quiet", False):
            config = replace(config, log=replace(config.log, level="warning"))
        try:
            logs.configure(config.log)
        except OSError as e:
            raise cannot(config, "[log] file", "open", e) from None
        once = args.command == "once"
        progress = _progress(args) if once else None
        from thumbd.service.daemon import Daemon  # the render stage, and Pillow with it

        return Daemon(config, once=once, progress=progress).run()
    except (StartupError, StateError) as e:
        print(f"thumbd: {e}", file=sys.stderr)
        return EXIT_USAGE


def _progress(args: argparse.Namespace) -> logs.Progress | logs.PlainProgress | None:
    """A bar on a terminal (per-file lines only with -v), a line every few seconds elsewhere,
    nothing with --quiet."""
    if args.quiet:
        return None
    if sys.stderr.isatty():
        return logs.Progress(sys.stderr, verbose=args.verbose)
    return logs.PlainProgress()


def _check_render_settings(config: Config) -> None:
    """What only the render stage can check (a colour, an encoder): commands that render."""
    from thumbd.render.pipeline import spec_from_config  # Pillow: not for status or retry

    spec_from_config(config)


def status(config: Config, *, as_json: bool) -> int:
    report = collect(config)
    if as_json:
        print(json.dumps(report, indent=2))
        return EXIT_OK
    print(_daemon_line(report["daemon"]))
    print(f"done:    {report['done']}")
    print(f"failed:  {report['failed']}")
    print(f"pending: {report['pending']}")
    if report["ignored"]:
        by_ext = report["ignored_by_extension"].items()
        kinds = ", ".join(f"{ext or '(no extension)'} {n}" for ext, n in by_ext)
        print(f"ignored: {report['ignored']} ({kinds}): not images thumbd takes")
    for m in report["manifests"]:
        print(
            f"manifest {m['manifest']}: {m['done']} URLs done, {m['failed']} failed,"
            f" downloaded {m['bytes_downloaded']} bytes, thumbnails {m['bytes_out']} bytes"
        )
    for f in report["failures"]:
        where = f"{f['source']} {f['url']}" if "url" in f else f["source"]
        print(f"  {where}: {f['reason']}")
    return EXIT_OK


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
        f"  this run:  {d['done']} done, {d['failed']} failed",
    ]
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
