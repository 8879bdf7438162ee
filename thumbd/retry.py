"""`thumbd retry [PATH...|--all]`: clear failure records so the failed sources are tried again.

A failed source is not retried until it changes (size, mtime or inode), like the freedesktop
thumbnail spec's fail/ folder. This command clears the records and touches nothing else: no
source, no thumbnail, no signal. A running daemon sees the commit (SQLite's data_version) within
a second and looks at those sources again; without one, the next `run` or `once` does, as its
start-up scan finds every source that has no record.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from thumbd.config import Config
from thumbd.state import State

EXIT_OK, EXIT_FAILED = 0, 1


def retry(config: Config, paths: list[str], everything: bool) -> int:
    """Clear the failures of `paths` (files or folders) or of everything; print what happened."""
    if not config.state_db.exists():
        print("thumbd: no state database yet: nothing has failed", file=sys.stderr)
        return EXIT_OK if everything else EXIT_FAILED
    wanted = None if everything else [relative(config, p) for p in paths]
    state = State(config.state_db)
    try:
        cleared = state.clear_failed(wanted)
    finally:
        state.close()
    for rel in cleared:
        print(f"retry {rel}")
    print(f"{len(cleared)} failed file{'s' if len(cleared) != 1 else ''} will be tried again")
    missing = [p for p, rel in zip(paths, wanted or [], strict=False) if not _matched(rel, cleared)]
    for p in missing:
        print(f"thumbd: no failure recorded for {p}", file=sys.stderr)
    return EXIT_FAILED if missing else EXIT_OK


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
