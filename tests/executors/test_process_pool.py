"""The process pool against the two traps of Python 3.11's standard pools."""

from __future__ import annotations

import os
import signal
import sys
from concurrent.futures import wait

import pytest

from tests import workers
from tests.conftest import wait_until
from thumbd.executors.base import TaskTimeout, WorkerCrashed
from thumbd.executors.process_pool import ProcessPool, RemoteError
from thumbd.executors.worker import init_worker


def test_far_more_tasks_than_max_tasks_times_workers_all_finish() -> None:
    # ProcessPoolExecutor(max_tasks_per_child=10) with 2 workers hangs after 20 of these.
    pool = ProcessPool(2, max_tasks_per_child=10)
    try:
        futures = [pool.submit(workers.pid, i) for i in range(300)]
        _done, not_done = wait(futures, timeout=60)
        assert not not_done
        pids = {f.result() for f in futures}
        assert len(pids) >= 300 // 10  # workers really were recycled
    finally:
        pool.shutdown()


def test_a_killed_worker_fails_only_its_own_task() -> None:
    pool = ProcessPool(2, max_tasks_per_child=5)
    try:
        before = [pool.submit(workers.sleep, 0.01) for _ in range(10)]
        victim = pool.submit(workers.die, 0)
        after = [pool.submit(workers.pid, i) for i in range(20)]
        with pytest.raises(WorkerCrashed, match="SIGKILL"):
            victim.result(timeout=30)
        assert all(f.result(timeout=30) for f in before + after)
        assert pool.restarts == 1
    finally:
        pool.shutdown()


def test_a_worker_killed_from_outside_is_replaced() -> None:
    pool = ProcessPool(1, max_tasks_per_child=100)
    try:
        victim_pid = pool.submit(workers.pid, 0).result(timeout=30)
        busy = pool.submit(workers.sleep, 30)
        wait_until(busy.running, 10, "the task to start")
        os.kill(victim_pid, signal.SIGKILL)
        with pytest.raises(WorkerCrashed):
            busy.result(timeout=30)
        assert pool.submit(workers.pid, 1).result(timeout=30) != victim_pid
    finally:
        pool.shutdown()


def test_a_task_over_the_timeout_is_killed_and_the_rest_go_on() -> None:
    pool = ProcessPool(2, timeout=1.0)
    try:
        hung = pool.submit(workers.sleep, 60)
        quick = [pool.submit(workers.pid, i) for i in range(10)]
        with pytest.raises(TaskTimeout, match="1 s"):
            hung.result(timeout=30)
        assert all(f.result(timeout=30) for f in quick)
    finally:
        pool.shutdown()


def test_exceptions_come_back_as_themselves_or_as_text() -> None:
    pool = ProcessPool(1)
    try:
        with pytest.raises(ValueError, match="nope"):
            pool.submit(workers.boom, "nope").result(timeout=30)
        with pytest.raises(RemoteError, match="cannot pickle a local class"):
            pool.submit(workers.unpicklable_error, 0).result(timeout=30)
    finally:
        pool.shutdown()


def test_shutdown_cancels_what_has_not_started() -> None:
    pool = ProcessPool(1)
    running = pool.submit(workers.sleep, 0.5)
    wait_until(running.running, 10, "the first task to start")
    queued = [pool.submit(workers.sleep, 0.5) for _ in range(5)]
    pool.shutdown(wait=True, cancel_futures=True)
    assert running.result() == 0.5
    assert all(f.cancelled() for f in queued)
    with pytest.raises(RuntimeError):
        pool.submit(workers.pid, 0)


def test_workers_ignore_sigterm_to_the_process_group() -> None:
    pool = ProcessPool(1)
    try:
        worker = pool.submit(workers.pid, 0).result(timeout=30)
        task = pool.submit(workers.sleep, 0.5)
        wait_until(task.running, 10, "the task to start")
        os.kill(worker, signal.SIGTERM)
        assert task.result(timeout=30) == 0.5
    finally:
        pool.shutdown()


def test_a_worker_holds_its_next_task_and_a_crash_gives_it_back() -> None:
    # Prefetch: the next task waits in the worker's pipe, so the worker starts it without a
    # round trip through the supervisor. It has not started: a crash must not fail it.
    pool = ProcessPool(1, max_tasks_per_child=100)
    try:
        victim = pool.submit(workers.pid, 0).result(timeout=30)
        running = pool.submit(workers.sleep, 30)
        waiting = pool.submit(workers.pid, 1)
        wait_until(lambda: pool.held == 2, 30, "the worker to hold both tasks")
        assert running.running()
        assert not waiting.running() and not waiting.done()
        os.kill(victim, signal.SIGKILL)
        with pytest.raises(WorkerCrashed):
            running.result(timeout=30)
        assert waiting.result(timeout=30) not in (victim, None)
        assert pool.restarts == 1
    finally:
        pool.shutdown()


def test_an_idle_worker_gets_a_task_before_a_busy_one_gets_its_next() -> None:
    pool = ProcessPool(2)
    try:
        first, second = (pool.submit(workers.sleep_pid, 0.5) for _ in range(2))
        assert first.result(timeout=30) != second.result(timeout=30)
    finally:
        pool.shutdown()


def test_a_task_cancelled_while_it_waits_in_a_worker_never_reports() -> None:
    pool = ProcessPool(1)
    try:
        running = pool.submit(workers.sleep, 0.5)
        waiting = pool.submit(workers.pid, 0)
        wait_until(lambda: pool.held == 2, 30, "the worker to hold both tasks")
        assert waiting.cancel()
        assert running.result(timeout=30) == 0.5
        assert pool.submit(workers.pid, 1).result(timeout=30) > 0  # the pool goes on
        assert waiting.cancelled()
    finally:
        pool.shutdown()


def test_workers_start_with_pillow_plugins_imported() -> None:
    # The fork server imports them once (thumbd.warm); otherwise every fresh worker would spend
    # about 0.1 s importing them again before its first file.
    pool = ProcessPool(1, max_tasks_per_child=1)
    try:
        assert pool.submit(workers.pillow_initialized, 0).result(timeout=30)
        assert pool.submit(workers.pillow_initialized, 1).result(timeout=30)  # a fresh worker
    finally:
        pool.shutdown()


def test_workers_get_the_memory_cap_and_pillows_bomb_limit_from_the_initializer() -> None:
    pool = ProcessPool(1, initializer=init_worker, initargs=(512 * 2**20, 123_456_789))
    try:
        assert pool.submit(workers.limits, 0).result(timeout=30) == (512 * 2**20, 123_456_789)
    finally:
        pool.shutdown()


def test_kill_workers_never_raises_while_workers_are_replaced() -> None:
    # It runs in the daemon's handler of a second SIGTERM, while the supervisor thread reaps
    # and closes workers: an exception there would escape into whatever the main thread was
    # doing, and the daemon would not exit at once.
    pool = ProcessPool(2, max_tasks_per_child=1)  # a worker ends (and is reaped) after each task
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # the threads interleave often: the race shows in a few rounds
    try:
        for _ in range(15):
            futures = [pool.submit(workers.pid, i) for i in range(4)]
            for _ in range(300):
                pool.kill_workers()
            # Killed before it took its task, a worker's broken pipe puts that task (already
            # marked running) back in the queue: it must start again, not stop the supervisor.
            _done, not_done = wait(futures, timeout=30)
            assert not not_done
            assert pool.alive()
    finally:
        sys.setswitchinterval(switch)
        pool.shutdown()
