"""`thumbd start` and `thumbd stop`: the daemon in the background, for hosts without systemd.

`start` forks once to keep the command the user typed waiting; the child becomes the daemon with
python-daemon (detach, setsid, umask 022, working directory /, stdout and stderr to the log file,
a flock-guarded pidfile) and only then creates threads and the worker pool. The daemon reports
back through a pipe, once it watches (or why it could not start), so `start` exits 0 only for a
daemon that is really running and prints the reason otherwise.

`stop` sends SIGTERM to the process holding the state's lock and waits for the lock to be
released: the daemon drains the files in flight first. (Waiting for the lock, not the pid,
works whether or not anything reaps the exited daemon.)
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import time
from pathlib import Path

import daemon as python_daemon

from thumbd.config import Config
from thumbd.service import logs
from thumbd.service.notify import Notifier
from thumbd.service.pidfile import AlreadyRunning, PidFile, holder
from thumbd.service.startup import STOP_MARGIN, cannot
from thumbd.store.state import StateError

log = logging.getLogger("thumbd")

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
READY = b"ready\n"


def lock_path(config: Config) -> Path:
    return config.paths.state / "daemon.lock"


def pid_path(config: Config) -> Path:
    return config.paths.state / "thumbd.pid"


def log_path(config: Config) -> Path:
    """`[log] file`, or state/thumbd.log: a background daemon has no terminal to log to."""
    return Path(config.log.file) if config.log.file else config.paths.state / "thumbd.log"


def running_pid(config: Config) -> int | None:
    """The pid of the daemon running on this state (0 if it has not written it yet), or None."""
    return holder(lock_path(config))


# -- start ---------------------------------------------------------------------------------


class _PipeNotifier(Notifier):
    """Tells the waiting `thumbd start` that the daemon is ready, then closes the pipe."""

    def __init__(self, fd: int) -> None:
        base = Notifier.from_environment()
        super().__init__(base.address, base.watchdog_usec)
        self.fd: int | None = fd

    def ready(self, status: str | None = None) -> None:
        super().ready(status)
        self.report(READY)

    def report(self, message: bytes) -> None:
        if self.fd is None:
            return
        with contextlib.suppress(OSError):  # the `start` command was killed; the daemon goes on
            os.write(self.fd, message)
        os.close(self.fd)
        self.fd = None


def start(config: Config, origin: str = "") -> int:
    """Start the daemon in the background; `origin` (which configuration, and why that one)
    goes into its log."""
    pid = running_pid(config)
    if pid is not None:
        where = config.paths.state
        print(f"thumbd: already running (pid {pid or '?'}) on {where}", file=sys.stderr)
        return EXIT_USAGE
    try:
        config.paths.state.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise cannot(config, "[paths] state", "create", e) from None
    read_end, write_end = os.pipe()
    child = os.fork()  # no thread exists yet in this process: forking is safe
    if child == 0:
        os.close(read_end)
        code = EXIT_FAILED
        try:
            code = _daemon_main(config, write_end, origin)
        finally:
            logging.shutdown()
            os._exit(code)
    os.close(write_end)
    answer = _read_all(read_end)
    os.waitpid(child, 0)  # python-daemon's first fork: it exits at once
    if answer == READY:
        print(f"thumbd: started (pid {running_pid(config) or '?'}); log: {log_path(config)}")
        return EXIT_OK
    reason = answer.decode(errors="replace").strip()
    if not reason:
        reason = f"the daemon exited during start-up; see {log_path(config)}"
    print(f"thumbd: {reason}", file=sys.stderr)
    return EXIT_USAGE


def _read_all(fd: int) -> bytes:
    chunks = []
    with os.fdopen(fd, "rb") as f:
        while chunk := f.read(4096):
            chunks.append(chunk)
    return b"".join(chunks)


def _daemon_main(config: Config, ready_fd: int, origin: str) -> int:
    """In the forked child: become the daemon, run it, report start-up errors to the pipe."""
    from thumbd.service.daemon import Daemon, StartupError

    path = log_path(config)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        out = path.open("a", encoding="utf-8")
    except OSError as e:
        _report(ready_fd, f"cannot open the log file {path}: {e.strerror or e}")
        return EXIT_USAGE
    notifier: _PipeNotifier | None = None
    pidfile = PidFile(pid_path(config))
    try:
        with (
            out,
            python_daemon.DaemonContext(
                working_directory="/",
                umask=0o022,  # python-daemon's default of 0 would make every file world-writable
                detach_process=True,
                pidfile=pidfile,
                stdout=out,
                stderr=out,
                files_preserve=[ready_fd],
            ),
        ):
            logs.redirect_std_streams(path)  # remembered, so SIGHUP reopens them with the log
            logs.configure(config.log, default_file=path)
            if origin:
                log.info("configuration: %s", origin)
            if pidfile.stale is not None:
                log.warning("replaced the stale pidfile %s (pid %d)", pidfile.path, pidfile.stale)
            notifier = _PipeNotifier(ready_fd)
            return Daemon(config, notifier=notifier).run()
    except (AlreadyRunning, StartupError, StateError) as e:
        message = str(e)
    except Exception as e:  # anything else: the log has the traceback, the user the gist
        log.exception("thumbd failed")
        message = f"{type(e).__name__}: {e}; see {path}"
    if notifier is not None:
        log.error("%s", message)
        notifier.report(message.encode())
    else:
        _report(ready_fd, message)
    return EXIT_USAGE


def _report(fd: int, message: str) -> None:
    with contextlib.suppress(OSError):
        os.write(fd, message.encode())
        os.close(fd)


# -- stop ----------------------------------------------------------------------------------


def stop(config: Config, timeout: float | None = None) -> int:
    pid = running_pid(config)
    if not pid:
        print("thumbd: not running" if pid is None else "thumbd: starting; try again")
        return EXIT_OK if pid is None else EXIT_FAILED
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        print("thumbd: not running")
        return EXIT_OK
    except PermissionError:
        print(f"thumbd: not allowed to signal pid {pid}", file=sys.stderr)
        return EXIT_FAILED
    limit = timeout if timeout is not None else config.daemon.shutdown_timeout + STOP_MARGIN
    print(f"thumbd: stopping pid {pid} (draining, up to {limit:.0f} s)", file=sys.stderr)
    deadline = time.monotonic() + limit
    while running_pid(config) is not None:
        if time.monotonic() > deadline:
            print(f"thumbd: pid {pid} still running after {limit:.0f} s", file=sys.stderr)
            return EXIT_FAILED
        time.sleep(0.1)
    print(f"thumbd: stopped (pid {pid})")
    return EXIT_OK
