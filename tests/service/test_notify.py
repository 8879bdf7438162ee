"""The sd_notify protocol against real unix datagram sockets, named and abstract."""

from __future__ import annotations

import os
import socket
import tempfile
from collections.abc import Iterator

import pytest

from thumbd.service.notify import Notifier


@pytest.fixture
def receiver() -> Iterator[tuple[socket.socket, str]]:
    folder = tempfile.mkdtemp(prefix="thumbd-n-", dir="/tmp")
    path = os.path.join(folder, "s")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(5)
    yield sock, path
    sock.close()
    os.unlink(path)
    os.rmdir(folder)


def test_messages_are_single_datagrams_of_key_value_lines(
    receiver: tuple[socket.socket, str],
) -> None:
    sock, path = receiver
    n = Notifier(path)
    n.ready("3 done")
    assert sock.recv(4096) == b"READY=1\nSTATUS=3 done"
    n.reloading()
    first, second = sock.recv(4096).decode().split("\n")
    assert first == "RELOADING=1"
    assert second.startswith("MONOTONIC_USEC=") and second.removeprefix("MONOTONIC_USEC=").isdigit()
    n.stopping()
    assert sock.recv(4096) == b"STOPPING=1"
    n.stopping(90.0)
    assert sock.recv(4096) == b"STOPPING=1\nEXTEND_TIMEOUT_USEC=90000000"
    n.close()


def test_a_leading_at_sign_means_the_abstract_namespace() -> None:
    name = f"thumbd-test-{os.getpid()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(b"\0" + name.encode())
    sock.settimeout(5)
    try:
        n = Notifier("@" + name)
        n.watchdog()
        assert sock.recv(4096) == b"WATCHDOG=1"
        n.close()
    finally:
        sock.close()


def test_from_environment_reads_and_removes_systemds_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", "/run/systemd/notify")
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    n = Notifier.from_environment()
    assert n.enabled and n.watchdog_interval == 15.0
    assert "NOTIFY_SOCKET" not in os.environ and "WATCHDOG_USEC" not in os.environ
    monkeypatch.setenv("NOTIFY_SOCKET", "/run/systemd/notify")
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    monkeypatch.setenv("WATCHDOG_PID", "1")  # the watchdog is another process's
    assert Notifier.from_environment().watchdog_interval is None


def test_without_a_socket_nothing_happens_and_errors_never_raise(tmp_path: object) -> None:
    quiet = Notifier(None)
    quiet.ready()
    quiet.watchdog()
    assert not quiet.enabled and quiet.watchdog_interval is None
    gone = Notifier("/nonexistent/notify.sock", 1_000_000)
    gone.ready()  # logged once, never raised
    gone.watchdog()
    gone.close()
