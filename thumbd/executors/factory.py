"""The one place that knows the kinds of executor: `[executor] kind` names one, once."""

from __future__ import annotations

from collections.abc import Callable

from thumbd.config import Config
from thumbd.executors.base import Pool


class PoolUnavailable(Exception):
    """The configured executor cannot be had (Dask not installed, no scheduler): says why."""


def _local(config: Config, once: bool) -> Pool:
    from thumbd.executors.local import LocalPool

    return LocalPool(config.resize, config.paths.incoming)


def _dask(config: Config, once: bool) -> Pool:
    try:
        from thumbd.executors.dask_pool import DaskPool
    except ImportError as e:
        raise PoolUnavailable(
            f'[executor] kind = "dask" needs Dask ({e}): pip install "thumbd[dask]"'
        ) from None
    pool = DaskPool(config.executor, config.resize.timeout)
    problem = pool.unreachable(timeout=30.0) if once else None
    if problem is not None:  # `once` exits; `run` waits for the scheduler to appear
        pool.shutdown()
        raise PoolUnavailable(problem)
    return pool


PoolFactory = Callable[[Config, bool], Pool]  # (config, once) -> the pool
POOL_FACTORIES: dict[str, PoolFactory] = {"local": _local, "dask": _dask}


def make_pool(config: Config, once: bool = False) -> Pool:
    """The pool `[executor] kind` names (config validation keeps it to these keys)."""
    return POOL_FACTORIES[config.executor.kind](config, once)


def pool_settings(config: Config) -> tuple[object, ...]:
    """What a pool is made with: a reload that changes any of it needs a new pool. Local
    workers are confined to incoming/: a new incoming/ needs new workers."""
    r = config.resize
    local = config.paths.incoming if config.executor.kind == "local" else None
    return (
        r.workers,
        r.max_tasks_per_child,
        r.timeout,
        r.max_memory_mb,
        r.max_pixels,
        config.executor,
        local,
    )


def sandbox_state(config: Config) -> str:
    """How the configured executor's workers are confined, for `thumbd status`."""
    if config.executor.kind == "local":
        from thumbd.executors import sandbox

        return sandbox.status().describe()
    return "the cluster's own (thumbd does not start Dask's workers)"
