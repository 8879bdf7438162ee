"""Start-up checks: the folders a configuration names, whose they are, and one daemon per state.

Pillow-free: `thumbd stop` and `start` use these without loading the render stage.
"""

from __future__ import annotations

import os
import pwd
from pathlib import Path

from thumbd.config import Config
from thumbd.output.writer import Writer
from thumbd.service import pidfile

STOP_MARGIN = 30.0  # seconds past shutdown_timeout a drain may take (`thumbd stop` waits as long)


class StartupError(Exception):
    """The daemon cannot start (a missing folder, another daemon running): says why."""


def cannot(config: Config, key: str, verb: str, e: OSError) -> StartupError:
    """A folder or file the configuration names cannot be made or used: say which, and why."""
    where = config.source or "the configuration"
    what = f" {e.filename}" if e.filename else ""
    return StartupError(f"{where}: {key}: cannot {verb}{what}: {e.strerror or e}")


def prepare(writer: Writer, config: Config) -> None:
    try:
        writer.prepare()
    except OSError as e:
        raise cannot(config, "[paths] outgoing", "create", e) from None


def take_lock(lock: pidfile.StateLock, config: Config) -> None:
    """One daemon per state folder: two would render and record everything twice."""
    try:
        lock.acquire()
    except pidfile.AlreadyRunning as e:
        raise StartupError(
            f"another thumbd (pid {e.pid or '?'}) is running on {config.paths.state}"
        ) from None
    except OSError as e:
        raise cannot(config, "[paths] state", "use", e) from None


def check_owner(config: Config, command: str) -> None:
    """root on the folders of a service's user (`thumbd once` typed after installing as root)
    would leave a database and thumbnail folders there that the daemon, as that user, then
    cannot write: say whose they are instead. The state folder tells whose daemon it is; a
    root-owned one means root runs thumbd here (outgoing/ may then belong to anyone)."""
    if os.geteuid() != 0:
        return
    for folder in (config.paths.state, config.paths.outgoing):
        try:
            uid = folder.stat().st_uid
        except OSError:
            continue  # not there yet (made below), or made unreadable: the usual errors follow
        if uid == 0:
            return
        try:
            user = pwd.getpwuid(uid).pw_name
        except KeyError:
            user = str(uid)
        raise StartupError(
            f"{folder} belongs to user {user}: run thumbd as that user "
            f"(runuser -u {user} -- thumbd {command} ...); files root made there would be "
            f"root's, and {user}'s daemon could not write them"
        )


def check_incoming(incoming: Path) -> None:
    if not incoming.is_dir():
        raise StartupError(f"incoming folder {incoming} does not exist (or is not a folder)")
    if not os.access(incoming, os.R_OK | os.X_OK):
        raise StartupError(f"incoming folder {incoming} is not readable")
