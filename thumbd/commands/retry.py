"""`thumbd retry [PATH...|--all]`: clear failure records so the failed sources are tried again;
`thumbd redo [PATH...|--all|--stale]`: render done sources again, after a change of settings
(`--stale`: only those made with other settings than the configuration's).

A failed source is not retried until it changes (size, mtime or inode), like the freedesktop
thumbnail spec's fail/ folder. This command clears the records and touches nothing else: no
source, no thumbnail, no signal. A running daemon sees the commit (SQLite's data_version) within
a second and looks at those sources again; without one, the next `run` or `once` does, as its
start-up scan finds every source that has no record.
"""

from __future__ import annotations

import os
import sqlite3
import sys
from collections.abc import Callable
from pathlib import Path

from thumbd.commands.control import running_pid
from thumbd.config import Config
from thumbd.render.fingerprint import fingerprint
from thumbd.store.state import SETTINGS_KEY, State, StateError, damaged, is_damage
from thumbd.text import plural

EXIT_OK, EXIT_FAILED = 0, 1


def retry(config: Config, paths: list[str], everything: bool, *, verbose: bool = False) -> int:
    """Clear the failures of `paths` (files or folders) or of everything; print how many (and
    with `verbose`, which)."""
    return _mark(
        config,
        paths,
        everything,
        State.clear_failed,
        verbose=verbose,
        verb="retry",
        noun="failed file",
        outcome="will be tried again",
        nothing="nothing has failed",
        unknown="no failure recorded for",
    )


def redo(
    config: Config,
    paths: list[str],
    everything: bool,
    *,
    verbose: bool = False,
    stale: bool = False,
) -> int:
    """Have the sources of `paths` (files or folders), or every source, rendered again with the
    current settings (new widths, sizes or format); print how many (with `verbose`, which).

    Like retry, it only writes to the database: a running daemon picks the sources up within a
    second, otherwise the next `run` or `once` does. Their records stay until the new
    thumbnails are written, so the thumbnails the settings no longer make are removed then.
    With `stale`, only the sources whose thumbnails were made with other settings than the
    configuration's (render/fingerprint).
    """
    current = fingerprint(config.thumbnails)
    if stale and _daemon_behind(config, current):
        return EXIT_FAILED
    return _mark(
        config,
        paths,
        everything or stale,
        (lambda state, _: state.mark_stale(current)) if stale else State.mark_for_redo,
        verbose=verbose,
        verb="redo",
        noun="file",
        outcome="will be rendered again",
        nothing="nothing has been rendered",
        unknown="no record for",
    )


def _mark(
    config: Config,
    paths: list[str],
    everything: bool,
    mark: Callable[[State, list[str] | None], list[str]],
    *,
    verbose: bool,
    verb: str,
    noun: str,
    outcome: str,
    nothing: str,
    unknown: str,
) -> int:
    """`mark` the records of `paths` (or all), then say how many: one line, however many
    thousands `--all` marks (`verbose` lists them first); exit 1 for a PATH with none."""
    if not config.state_db.exists():
        print(f"thumbd: no state database yet: {nothing}", file=sys.stderr)
        return EXIT_OK if everything else EXIT_FAILED
    wanted = None if everything else [relative(config, p) for p in paths]
    state = State(config.state_db)
    try:
        marked = mark(state, wanted)
    except sqlite3.DatabaseError as e:
        if is_damage(e):
            raise damaged(config.state_db, e) from None
        # not ours to write: a service running as another user
        raise StateError(
            f"{config.state_db}: cannot change the records: {e} (run `thumbd {verb}` as the "
            "user the daemon runs as)"
        ) from None
    finally:
        state.close()
    if verbose:
        for rel in marked:
            print(f"{verb} {rel}")
    print(f"{verb}: {plural(len(marked), noun)} {outcome}")
    missing = [p for p, rel in zip(paths, wanted or [], strict=False) if not _matched(rel, marked)]
    for p in missing:
        print(f"thumbd: {unknown} {p}", file=sys.stderr)
    return EXIT_FAILED if missing else EXIT_OK


def _daemon_behind(config: Config, current: str) -> bool:
    """A running daemon that has not read the changed configuration yet would render the stale
    sources with its older settings again: say to reload it first, and mark nothing."""
    pid = running_pid(config)
    if pid is None or not config.state_db.exists():
        return False
    state = State(config.state_db, readonly=True)
    try:
        running = state.get_meta(SETTINGS_KEY)
    finally:
        state.close()
    if running is None or running == current:
        return False
    print(
        f"thumbd: the running daemon (pid {pid or '?'}) has not read"
        f" {config.source or 'the configuration'} since its settings changed: reload it first"
        " (systemctl reload thumbd, or kill -HUP its pid), then redo --stale; nothing marked",
        file=sys.stderr,
    )
    return True


def relative(config: Config, arg: str) -> str:
    """A path as given (absolute, or relative to the current folder) inside incoming/, or else
    as `thumbd status` shows it (relative to incoming/)."""
    incoming = os.path.abspath(config.paths.incoming)
    given = os.path.abspath(arg)
    if given == incoming or given.startswith(incoming + os.sep):
        rel = os.path.relpath(given, incoming)
    else:
        rel = os.path.normpath(arg)
    return "" if rel == "." else Path(rel).as_posix()


def _matched(prefix: str, cleared: list[str]) -> bool:
    return any(not prefix or c == prefix or c.startswith(prefix + "/") for c in cleared)
