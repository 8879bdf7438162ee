"""Logging: level, text or JSON lines, stderr (the journal under systemd) or a file.

A log file is reopened on SIGHUP, so logrotate can move it away and signal thumbd
(`postrotate ... kill -HUP`) instead of using copytruncate. Under `thumbd start` the daemon's
stdout and stderr point at the same file (python-daemon redirects them, so that a traceback or
a fault still lands somewhere); they are reopened with it.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import threading
import time
from pathlib import Path
from typing import Any, TextIO

from tqdm import tqdm

from thumbd.config import LogConfig

LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}
TEXT_FORMAT = "%(asctime)s %(levelname)-7s [%(threadName)s] %(message)s"

# Attributes every LogRecord has; anything else on a record came from `extra=` and is a field.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
}

_handler: logging.Handler | None = None
_progress: Progress | None = None  # `thumbd once`'s line at the bottom of the terminal
_default_file: Path | None = None  # where the log goes when `[log] file` is empty
_std_file: Path | None = None  # the file stdout and stderr point at (thumbd start)


# Control characters (not tab) a message may carry in a file name: a newline would start a line
# that looks like an entry of its own (journald makes it one, with a `<3>` prefix at that level),
# and escape sequences would act on a terminal that shows the log.
_CONTROL = {c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7F, 0xA0)) if c != 0x09} | {
    0x0A: "\\n",
    0x0D: "\\r",
}


class TextFormatter(logging.Formatter):
    """TEXT_FORMAT, one line per message: its control characters are escaped (`\\n`); only a
    traceback follows on lines of its own."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = record.message.translate(_CONTROL)
        return super().formatMessage(record)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, thread, logger, message, then any extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": _iso_time(record.created),
            "level": record.levelname.lower(),
            "thread": record.threadName,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def _iso_time(created: float) -> str:
    """Local time with its UTC offset and milliseconds: 2025-05-01T12:00:00.123+02:00."""
    local = time.localtime(created)
    offset = time.strftime("%z", local)
    ms = int(created % 1 * 1000)
    return f"{time.strftime('%Y-%m-%dT%H:%M:%S', local)}.{ms:03d}{offset[:3]}:{offset[3:]}"


class Progress:
    """`thumbd once`'s progress bar, kept at the bottom of a terminal: percent, count, rate,
    time left and failures (drawn by tqdm's meter). Log lines written to the same terminal (the
    default, stderr) scroll above it: it is blanked before each and drawn again after. Per-file
    lines (those about one source) are left out unless `verbose`: the bar counts them."""

    REDRAW = 0.1  # seconds between redraws while the numbers change

    def __init__(self, stream: TextIO, *, verbose: bool = False) -> None:
        global _progress
        self.stream = stream
        self.verbose = verbose
        self.text = ""
        self.lock = threading.Lock()
        self.started = time.monotonic()
        self.drawn = 0.0
        self.last: tuple[int, int, int] | None = None
        _progress = self

    def update(self, done: int, total: int, failed: int) -> None:
        now = time.monotonic()
        if (done, total, failed) == self.last or (now - self.drawn < self.REDRAW and done < total):
            return
        self.last, self.drawn = (done, total, failed), now
        self.show(self.meter(done, total, failed, now - self.started))

    def meter(self, done: int, total: int, failed: int, elapsed: float) -> str:
        width = min(shutil.get_terminal_size((100, 24)).columns, 120) - 1
        return tqdm.format_meter(
            done,
            total,
            elapsed,
            ncols=width,
            prefix="thumbd",
            unit=" files",
            postfix=f"{failed} failed",
        )

    def show(self, text: str) -> None:
        if text == self.text:
            return
        with self.lock:
            self._blank()
            self.text = text
            self.stream.write(text)
            self.stream.flush()

    def hides(self, record: logging.LogRecord) -> bool:
        """A per-file line the bar stands for (failures and warnings still show)."""
        return not self.verbose and record.levelno < logging.WARNING and hasattr(record, "source")

    def end(self) -> None:
        """Leave the last text showing, on a line of its own; log lines no longer move it."""
        global _progress
        with self.lock:
            if self.text:
                self.stream.write("\n")
                self.stream.flush()
            self.text = ""
        if _progress is self:
            _progress = None

    def _blank(self) -> None:
        if self.text:  # spaces, not an escape sequence: any terminal understands them
            self.stream.write("\r" + " " * len(self.text) + "\r")


class PlainProgress:
    """`thumbd once` where no one watches a terminal (cron, nohup, a pipe): a log line every
    EVERY seconds with the same figures as the bar."""

    EVERY = 5.0

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.next = self.started + self.EVERY

    def update(self, done: int, total: int, failed: int) -> None:
        now = time.monotonic()
        if now < self.next or not total:
            return
        self.next = now + self.EVERY
        rate = done / (now - self.started)
        left = f", about {_duration((total - done) / rate)} left" if rate > 0 else ""
        logging.getLogger("thumbd").info(
            "progress: %d of %d files (%d%%), %.1f files/s%s, %d failed",
            done,
            total,
            100 * done // total,
            rate,
            left,
            failed,
        )

    def end(self) -> None:
        pass


def _duration(seconds: float) -> str:
    """12 s, 3 min 05 s, 2 h 03 min."""
    s = round(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s // 60 % 60:02d} min"


class StderrHandler(logging.StreamHandler[TextIO]):
    """Log lines to stderr, above the progress line of `thumbd once` when there is one."""

    def emit(self, record: logging.LogRecord) -> None:
        line = _progress
        if line is None or line.stream is not self.stream:
            super().emit(record)
            return
        if line.hides(record):
            return
        with line.lock:
            line._blank()
            super().emit(record)
            if line.text:
                self.stream.write(line.text)
                self.stream.flush()


class ReopenableFileHandler(logging.StreamHandler[TextIO]):
    """Appends to a file; `reopen()` starts a new one at the same path (after logrotate)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        super().__init__(self._open())

    def _open(self) -> TextIO:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        return self.path.open("a", encoding="utf-8", buffering=1)

    def reopen(self) -> None:
        old = self.setStream(self._open())
        if old is not None:
            old.close()

    def close(self) -> None:
        self.acquire()
        try:
            self.stream.close()
        finally:
            self.release()
        super().close()


def configure(config: LogConfig, *, default_file: Path | None = None) -> None:
    """Send thumbd's log where `config` says (replacing an earlier configure). `default_file`
    stands for an empty `[log] file` (stderr otherwise) and is kept for later calls."""
    global _handler, _default_file
    if default_file is not None:
        _default_file = default_file
    path = Path(config.file) if config.file else _default_file
    handler: logging.Handler = ReopenableFileHandler(path) if path else StderrHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if config.format == "json" else TextFormatter())
    level = LEVELS[config.level]
    handler.setLevel(level)
    root = logging.getLogger()
    reset()
    root.addHandler(handler)
    # The loggers keep WARNING even when the handler shows only errors: the watcher turns
    # watchdog's overflow warning into a rescan, and a disabled level would never reach it.
    root.setLevel(min(level, logging.WARNING))
    _handler = handler


def probe(path: Path) -> None:
    """Make sure `path` can be appended to, as configure() will; raises OSError."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.open("a", encoding="utf-8").close()


def reset() -> None:
    """Remove and close the handler `configure` installed, if any."""
    global _handler
    if _handler is not None:
        logging.getLogger().removeHandler(_handler)
        _handler.close()
        _handler = None


def redirect_std_streams(path: Path) -> None:
    """Point stdout and stderr (the file descriptors) at `path`, appending."""
    global _std_file
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        for std in (1, 2):
            os.dup2(fd, std)
    finally:
        os.close(fd)
    _std_file = path


def reopen() -> None:
    """After logrotate: start writing to new files at the configured paths."""
    if isinstance(_handler, ReopenableFileHandler):
        _handler.reopen()
    if _std_file is not None:
        sys.stdout.flush()
        sys.stderr.flush()
        redirect_std_streams(_std_file)
