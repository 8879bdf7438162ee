"""A confined worker of the real process pool: it reads incoming/ and nothing else of the
test's, writes nowhere, reaches no TCP port, dumps no core."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.executors import sandbox_tasks
from thumbd.executors import sandbox
from thumbd.executors.process_pool import ProcessPool
from thumbd.executors.worker import init_worker

pytestmark = pytest.mark.skipif(
    sandbox.abi() < 4,
    reason="this kernel has no Landlock ABI 4 (its TCP rules confine the workers)",
)


@pytest.fixture
def incoming(tmp_path: Path) -> Path:
    folder = tmp_path / "incoming"
    folder.mkdir()
    (folder / "inside.txt").write_text("a source")
    (tmp_path / "outside.txt").write_text("not a source")
    return folder


@pytest.fixture
def pool(incoming: Path) -> Iterator[ProcessPool]:
    pool = ProcessPool(1, initializer=init_worker, initargs=(2**31, 10**8, (str(incoming),)))
    yield pool
    pool.shutdown()


def run(pool: ProcessPool, fn: object, *args: object) -> object:
    assert callable(fn)
    return pool.submit(fn, *args).result(timeout=60)


def test_a_confined_worker_reads_incoming_and_nothing_else_of_the_tests(
    pool: ProcessPool, incoming: Path, tmp_path: Path
) -> None:
    assert run(pool, sandbox_tasks.read, str(incoming / "inside.txt")) == "read: allowed"
    assert run(pool, sandbox_tasks.read, str(tmp_path / "outside.txt")) == "refused"


def test_a_confined_worker_writes_nowhere(
    pool: ProcessPool, incoming: Path, tmp_path: Path
) -> None:
    assert run(pool, sandbox_tasks.write, str(incoming / "new.txt")) == "refused"
    assert run(pool, sandbox_tasks.write, str(incoming / "inside.txt")) == "refused"
    assert run(pool, sandbox_tasks.write, str(tmp_path / "new.txt")) == "refused"
    assert run(pool, sandbox_tasks.write, "/tmp/thumbd-sandbox-test.txt") == "refused"
    assert not (incoming / "new.txt").exists()
    assert (incoming / "inside.txt").read_text() == "a source"


def test_a_confined_worker_cannot_connect_or_bind(pool: ProcessPool) -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        assert run(pool, sandbox_tasks.connect, port) == "refused"
        server.settimeout(0.0)
        with pytest.raises(BlockingIOError):
            server.accept()  # nothing ever reached it
    assert run(pool, sandbox_tasks.bind, 0) == "refused"


def test_a_confined_worker_dumps_no_core_and_gains_no_privileges(pool: ProcessPool) -> None:
    assert run(pool, sandbox_tasks.limits) == (0, 1)


def test_the_same_worker_unconfined_can_do_all_of_it(tmp_path: Path) -> None:
    # The refusals above are the sandbox's, not the test's: without it the same tasks succeed.
    pool = ProcessPool(1, initializer=init_worker, initargs=(2**31, 10**8, ()))
    try:
        (tmp_path / "outside.txt").write_text("x")
        assert run(pool, sandbox_tasks.read, str(tmp_path / "outside.txt")) == "read: allowed"
        assert run(pool, sandbox_tasks.write, str(tmp_path / "new.txt")) == "write: allowed"
        with socket.create_server(("127.0.0.1", 0)) as server:
            port = server.getsockname()[1]
            assert run(pool, sandbox_tasks.connect, port) == "connect: allowed"
    finally:
        pool.shutdown()


def test_status_says_what_the_kernel_allows(monkeypatch: pytest.MonkeyPatch) -> None:
    assert sandbox.status().describe().startswith("on (Landlock ABI")
    monkeypatch.setenv("THUMBD_TEST_NO_LANDLOCK", "1")
    assert not sandbox.status().on
    assert sandbox.status().describe() == "off (the kernel has no Landlock)"
    assert sandbox.Status(3).describe() == "files only (Landlock ABI 3: no network rules)"
