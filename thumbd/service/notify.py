"""The systemd notify protocol, written directly (no libsystemd).

A message is one datagram of newline-separated `KEY=value` lines sent to the unix socket named
in `$NOTIFY_SOCKET`; a leading '@' means a socket in the abstract namespace. systemd documents
the protocol as stable. Without `$NOTIFY_SOCKET` (not under systemd) every call does nothing.

The watchdog: under `WatchdogSec=`, systemd sets `$WATCHDOG_USEC` (and `$WATCHDOG_PID`, the
process meant) and restarts the service when no `WATCHDOG=1` arrives within that time; the
convention is to ping at half of it.
"""

from __future__ import annotations

import logging
import os
import socket
import time

log = logging.getLogger("thumbd.notify")


class Notifier:
    """Sends state changes to systemd. Never raises: a lost message must not stop the work."""

    def __init__(self, address: str | None, watchdog_usec: int | None = None) -> None:
        self.address = address or None
        self.watchdog_usec = watchdog_usec
        self._sock: socket.socket | None = None
        self._warned = False

    @classmethod
    def from_environment(cls) -> Notifier:
        """From systemd's variables, which are then removed so that no child inherits them."""
        address = os.environ.pop("NOTIFY_SOCKET", None)
        usec = os.environ.pop("WATCHDOG_USEC", None)
        pid = os.environ.pop("WATCHDOG_PID", None)
        watchdog = int(usec) if usec and usec.isdigit() and int(usec) > 0 else None
        if pid is not None and pid != str(os.getpid()):
            watchdog = None  # meant for another process
        return cls(address, watchdog)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    @property
    def watchdog_interval(self) -> float | None:
        """Seconds between pings (half of WATCHDOG_USEC), or None when there is no watchdog."""
        if self.address is None or self.watchdog_usec is None:
            return None
        return self.watchdog_usec / 2_000_000

    def ready(self, status: str | None = None) -> None:
        self.send("READY=1", *([f"STATUS={status}"] if status else []))

    def status(self, text: str) -> None:
        self.send(f"STATUS={text}")

    def reloading(self) -> None:
        # systemd 253+ wants the CLOCK_MONOTONIC time of the reload request with it.
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.send("RELOADING=1", f"MONOTONIC_USEC={usec}")

    def stopping(self, extend: float | None = None) -> None:
        """STOPPING=1; with `extend` (seconds), also EXTEND_TIMEOUT_USEC=: systemd then waits at
        least that long before it kills the service, whatever its TimeoutStopSec= says."""
        extension = [f"EXTEND_TIMEOUT_USEC={int(extend * 1_000_000)}"] if extend else []
        self.send("STOPPING=1", *extension)

    def watchdog(self) -> None:
        self.send("WATCHDOG=1")

    def send(self, *lines: str) -> None:
        if self.address is None:
            return
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto("\n".join(lines).encode(), _sockaddr(self.address))
        except OSError as e:
            if not self._warned:  # once: systemd gone away is not worth a line per second
                self._warned = True
                log.warning("cannot notify systemd at %s: %s", self.address, e)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _sockaddr(address: str) -> str | bytes:
    if address.startswith("@"):
        return b"\0" + address[1:].encode()
    return address
