"""Which configuration a command uses: `-c FILE`, else `$THUMBD_CONFIG`, else
/etc/thumbd/thumbd.toml when it exists, else ./thumbd.toml when it exists, else none (the
built-in defaults, paths relative to the current folder).

The system file comes before the one in the current folder: on a host that runs the service,
`thumbd status` typed in any folder is about the service. Commands that only look at (or change)
a daemon's state refuse to run on no file at all (`needed`): on the built-in defaults they would
look at .thumbd/ in whatever folder they were typed in and report "not running, done: 0" for a
daemon that runs elsewhere.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

ENV = "THUMBD_CONFIG"
SYSTEM = Path("/etc/thumbd/thumbd.toml")
LOCAL = Path("thumbd.toml")  # in the current folder

NONE_FOUND = f"no configuration: give -c FILE, set {ENV}, or create {SYSTEM} or ./{LOCAL}"


@dataclass(frozen=True)
class Choice:
    """The configuration file a command uses (None: the built-in defaults) and why that one."""

    path: Path | None
    how: str  # "-c", ENV, "default": where it came from

    def describe(self) -> str:
        """For the log and check-config: `/etc/thumbd/thumbd.toml (the default)`."""
        if self.path is None:
            return (
                f"built-in defaults, paths relative to {Path.cwd()} "
                f"(no -c FILE, {ENV}, {SYSTEM} or ./{LOCAL})"
            )
        shown = self.path.absolute()
        if self.how == "-c":
            return f"{shown} (-c)"
        if self.how == ENV:
            return f"{shown} (from {ENV})"
        return f"{shown} (the default)"

    def option(self) -> str:
        """What a hint repeats of the command line (" -c FILE"), so a printed command works."""
        return f" -c {self.path}" if self.how == "-c" else ""


def choose(given: Path | None, environ: Mapping[str, str] = os.environ) -> Choice:
    """The file of `-c`, of THUMBD_CONFIG (unset or empty: none), or the first default that
    exists. A given file that does not exist is still chosen: loading it says so."""
    if given is not None:
        return Choice(given, "-c")
    if environ.get(ENV):
        return Choice(Path(environ[ENV]), ENV)
    for default in (SYSTEM, LOCAL):
        if _there(default):
            return Choice(default, "default")
    return Choice(None, "default")


def _there(path: Path) -> bool:
    """Whether `path` exists. One this user may not look at counts (/etc/thumbd of mode 0700):
    loading it then says so, rather than the defaults taking its place unannounced."""
    try:
        path.stat()
    except (FileNotFoundError, NotADirectoryError):
        return False
    except OSError:
        return True
    return True
