"""SIGHUP: read the configuration file again and apply it to new work.

A broken file changes nothing: whatever cannot be undone half-way (a new outgoing/ or log file
that cannot be made, a metrics address that cannot be had) is tried before anything changes.
Jobs in flight finish with the settings they started with.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from thumbd.config import Config, ConfigError, differences, load_config
from thumbd.executors.factory import PoolUnavailable, pool_settings
from thumbd.output.writer import Writer
from thumbd.render.pipeline import spec_from_config
from thumbd.service import logs, metrics
from thumbd.service.startup import StartupError, cannot, check_incoming, prepare
from thumbd.store.state import SETTINGS_KEY

if TYPE_CHECKING:
    from thumbd.service.daemon import Daemon

log = logging.getLogger("thumbd")


def reload(d: Daemon) -> None:
    d.monitor.reloading()
    logs.reopen()  # first, so that what the reload logs lands in the new file
    try:
        new = _read_new_config(d)
    except (ConfigError, StartupError) as e:
        log.error("reload failed, keeping the current configuration: %s", e)
    else:
        _apply(d, new)
    d.monitor.reloaded()


def _read_new_config(d: Daemon) -> Config:
    current = d.shared.config
    if current.source is None:
        return current  # built-in defaults: nothing to read again
    new = load_config(current.source)
    spec_from_config(new)  # what only the render stage can check
    if new.paths.state != current.paths.state:
        log.warning(
            "%s: [paths] state changed to %s; that takes a restart (keeping %s)",
            new.source,
            new.paths.state,
            current.paths.state,
        )
        new = replace(new, paths=replace(new.paths, state=current.paths.state))
    check_incoming(new.paths.incoming)
    if new.paths.outgoing != current.paths.outgoing:
        prepare(Writer(new.paths.outgoing), new)
    if new.log.file and new.log.file != current.log.file:
        try:
            logs.probe(Path(new.log.file))
        except OSError as e:
            raise cannot(new, "[log] file", "open", e) from None
    if new.metrics != current.metrics and not d.shared.once:
        replace_metrics_server(d, new)  # last: it is the one step with an effect
    return new


def _apply(d: Daemon, new: Config) -> None:
    shared = d.shared
    old, shared.config = shared.config, new
    changed = differences(old, new)
    if not changed:
        log.info("reloaded %s: nothing changed", new.source or "the built-in defaults")
        return
    shared.spec = spec_from_config(new)
    shared.state.set_meta(SETTINGS_KEY, shared.settings)
    d.tracker.settings_changed()
    if pool_settings(old) != pool_settings(new):
        try:
            d.dispatcher.replace_pool()
        except PoolUnavailable as e:  # kind = "dask" without Dask installed
            log.error("cannot change the pool, keeping the current one: %s", e)
    if old.paths.outgoing != new.paths.outgoing:
        d.publisher.writer.cleanup()
        d.publisher.writer = Writer(new.paths.outgoing)
        d.publisher.writer.prepare()
    moved = old.paths.incoming != new.paths.incoming
    if moved:
        d.tracker.reroot()
    if moved or old.watch.polling != new.watch.polling:
        d.watching.rewatch()
    d.downloads.reconfigure(new)
    d.watching.settings_changed(old.watch.rescan_interval)
    if old.log != new.log:
        logs.configure(new.log)
    log.info(
        "reloaded %s: changed %s (%d in flight finish with the settings they started with)",
        new.source,
        ", ".join(changed),
        len(d.dispatcher.in_flight),
    )


def serve_metrics(listen: str, config: Config) -> metrics.Server | None:
    try:
        return metrics.serve(listen)
    except OSError as e:
        where = config.source or "the configuration"
        raise StartupError(
            f"{where}: [metrics] listen: cannot listen on {listen}: {e.strerror or e}"
        ) from None


def replace_metrics_server(d: Daemon, new: Config) -> None:
    """Serve metrics where `new` says; if that address cannot be had, serve them where they
    were and raise StartupError (the reload fails). The old endpoint is closed first: the
    new one may want its port (127.0.0.1:9188 -> 0.0.0.0:9188)."""
    current = d.shared.config
    old = current.metrics.listen
    if d.metrics_server is not None:
        old = f"{old.rpartition(':')[0]}:{d.metrics_server.port}"  # the port 0 picked
        d.metrics_server.close()
        d.metrics_server = None
    try:
        d.metrics_server = serve_metrics(new.metrics.listen, new)
    except StartupError:
        try:
            d.metrics_server = serve_metrics(old, current)
        except StartupError as e:
            log.error("%s; the metrics endpoint is off", e)
        raise
