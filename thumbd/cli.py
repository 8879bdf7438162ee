"""The command line: sub-commands and exit codes. Wiring only; the work is elsewhere."""

from __future__ import annotations

import argparse
import logging
import os
import sqlite3
import sys
from dataclasses import replace
from pathlib import Path

from thumbd import __version__
from thumbd.commands import configfile, control
from thumbd.commands.check import check_config
from thumbd.commands.retry import redo, retry
from thumbd.commands.status import failed_counts, show
from thumbd.config import Config, ConfigError, load_config
from thumbd.service import logs
from thumbd.service.startup import StartupError, cannot
from thumbd.store.state import StateError
from thumbd.text import plural

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
RENDERING = ("run", "start", "once", "check-config")  # the commands whose settings render
# The commands about a daemon's state: on no file at all they would look at .thumbd/ in the
# current folder, which is hardly ever the daemon's (configfile.py).
NEED_A_FILE = ("start", "stop", "status", "retry", "redo")

log = logging.getLogger("thumbd")

CONFIG_HELP = (
    f"TOML configuration (default: ${configfile.ENV}, else {configfile.SYSTEM} or "
    f"./{configfile.LOCAL} if there, else built-in defaults with paths relative to the "
    "current folder)"
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="thumbd",
        description="Thumbnail daemon: every image dropped into incoming/ gets resized copies "
        "in outgoing/ (by default 200, 64 and 32 px wide).",
    )
    parser.add_argument("--version", action="version", version=f"thumbd {__version__}")
    parser.add_argument("-c", "--config", type=Path, metavar="FILE", help=CONFIG_HELP)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        # Also after the command (`thumbd status -c FILE`); SUPPRESS keeps one given before it.
        p.add_argument(
            "-c", "--config", type=Path, metavar="FILE", default=argparse.SUPPRESS, help=CONFIG_HELP
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
    command("check-config", "Check the configuration and its folders; print the effective values.")
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
    anew.add_argument(
        "--stale",
        action="store_true",
        help="the files whose thumbnails were made with other settings than the configuration's",
    )
    for p in (again, anew):
        p.add_argument("-v", "--verbose", action="store_true", help="list each file")
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
    choice = configfile.choose(args.config)
    if choice.path is None and args.command in NEED_A_FILE:
        print(f"thumbd: {configfile.NONE_FOUND}", file=sys.stderr)
        return EXIT_USAGE
    try:
        config = load_config(choice.path)
        if args.command in RENDERING:
            _check_render_settings(config)
    except ConfigError as e:
        via = f" ({configfile.ENV})" if choice.how == configfile.ENV else ""
        print(f"thumbd: configuration error{via}: {e}", file=sys.stderr)
        return EXIT_USAGE
    try:
        return _command(args, config, choice)
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


def _command(args: argparse.Namespace, config: Config, choice: configfile.Choice) -> int:
    if args.command == "check-config":
        return check_config(config, choice.describe())
    if args.command == "status":
        show(config, as_json=args.json)
        return EXIT_OK
    if args.command in ("retry", "redo"):
        stale = getattr(args, "stale", False)
        if [bool(args.paths), args.all, stale].count(True) != 1:
            also = " or --stale" if args.command == "redo" else ""
            print(
                f"thumbd: {args.command} needs PATH... or --all{also} (one of them)",
                file=sys.stderr,
            )
            return EXIT_USAGE
        if args.command == "retry":
            return retry(config, args.paths, args.all, verbose=args.verbose)
        return redo(config, args.paths, args.all, verbose=args.verbose, stale=stale)
    if args.command == "start":
        return control.start(config, choice.describe())
    if args.command == "stop":
        return control.stop(config)
    return _foreground(args, config, choice)


def _foreground(args: argparse.Namespace, config: Config, choice: configfile.Choice) -> int:
    """`run` and `once`: the daemon in this process, logging where [log] says."""
    once = args.command == "once"
    if once and args.quiet:
        config = replace(config, log=replace(config.log, level="warning"))
    try:
        logs.configure(config.log)
    except OSError as e:
        raise cannot(config, "[log] file", "open", e) from None
    log.info("configuration: %s", choice.describe())
    progress = _progress(args) if once else None
    from thumbd.service.daemon import Daemon  # the render stage, and Pillow with it

    daemon = Daemon(config, once=once, progress=progress)
    code = daemon.run()
    if once and code == EXIT_FAILED and daemon.shared.stop_reason == "done":
        why = _failures_left(config, daemon.shared.stats.failed, choice.option())
        if why is not None:  # else the daemon's own last lines say why (a folder unread)
            print(f"thumbd: not done: {why}", file=sys.stderr)
    return code


def _failures_left(config: Config, this_run: int, option: str) -> str | None:
    """Why `once` exits 1 when the state records failures: the last line it prints says so, also
    for those of an earlier run that were not tried again (their files did not change)."""
    try:
        files, urls = failed_counts(config)
    except sqlite3.DatabaseError:
        return None  # the daemon has said what is wrong with the database
    earlier = max(0, files - this_run)  # a file failed again in this run counts once, here
    parts = [f"{plural(this_run, 'file')} failed in this run"] if this_run else []
    if earlier:
        parts.append(f"{plural(earlier, 'file')} failed earlier")
    if urls:
        parts.append(f"{plural(urls, 'URL')} of manifests failed")
    if not parts:
        return None
    return (
        f"{', '.join(parts)}: thumbd status{option} lists them; "
        f"thumbd retry{option} --all tries them again"
    )


def _check_render_settings(config: Config) -> None:
    """What only the render stage can check (a colour, an encoder): commands that render."""
    from thumbd.render.pipeline import spec_from_config  # Pillow: not for status or retry

    spec_from_config(config)
