"""Tasks run inside a confined worker: each tries one thing and says what happened."""

from __future__ import annotations

import ctypes
import resource
import socket
from collections.abc import Callable

_PR_GET_NO_NEW_PRIVS = 39


def _outcome(action: str, attempt: Callable[[], None]) -> str:
    try:
        attempt()
    except PermissionError:
        return "refused"
    except OSError as e:
        return f"failed otherwise: {e}"
    return f"{action}: allowed"


def write(path: str) -> str:
    def attempt() -> None:
        with open(path, "w") as f:
            f.write("x")

    return _outcome("write", attempt)


def read(path: str) -> str:
    def attempt() -> None:
        with open(path, "rb") as f:
            f.read()

    return _outcome("read", attempt)


def connect(port: int) -> str:
    def attempt() -> None:
        socket.create_connection(("127.0.0.1", port), timeout=5).close()

    return _outcome("connect", attempt)


def bind(port: int) -> str:
    def attempt() -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))

    return _outcome("bind", attempt)


def limits() -> tuple[int, int]:
    """(RLIMIT_CORE's soft limit, PR_GET_NO_NEW_PRIVS)."""
    libc = ctypes.CDLL(None, use_errno=True)
    return resource.getrlimit(resource.RLIMIT_CORE)[0], libc.prctl(_PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0)
