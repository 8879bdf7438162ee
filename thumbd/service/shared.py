"""What every stage of one run shares: the settings in force, the state, and this run's counts.

One object, owned by the main loop (like uvicorn's ServerState): a reload replaces `config`
and `spec`, a state database opened again replaces `state`, and every stage sees the change
because it reads them here rather than keeping copies.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from thumbd.config import Config
from thumbd.render.fingerprint import fingerprint
from thumbd.render.spec import RenderSpec
from thumbd.service.messages import Inbox
from thumbd.store import recovery
from thumbd.store.runs import RunCounts
from thumbd.store.state import State


@dataclass(slots=True)
class Stats:
    """What this run did, for the summary line at exit and the live figures. `done` and
    `failed` are the run's sources by their record now (the state keeps `run` true, see
    store/runs.py), so they agree with the totals; `finished` counts renders recorded, for
    the rate."""

    run: RunCounts = field(default_factory=lambda: RunCounts(time.time()))
    finished: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    moved: int = 0  # sources whose thumbnails followed them to a new path
    reused: int = 0  # sources given thumbnails another source already had, not rendered
    dropped: int = 0  # jobs left on disk by a shutdown: no longer queued, still pending
    started: float = field(default_factory=time.monotonic)

    @property
    def done(self) -> int:
        return self.run.done

    @property
    def failed(self) -> int:
        return self.run.failed


@dataclass(slots=True)
class Shared:
    config: Config
    spec: RenderSpec
    inbox: Inbox
    once: bool
    state: State = field(init=False)
    stats: Stats = field(default_factory=Stats)
    stop_reason: str | None = None  # set once the daemon is to stop: no new work from then

    @property
    def settings(self) -> str:
        """The fingerprint of the render settings in force (render/fingerprint)."""
        return fingerprint(self.config.thumbnails)

    def open_state(self) -> None:
        """Open the state database (again: health found it replaced), rebuilt if damaged;
        records from before fingerprints count as made with the settings in force."""
        self.state = recovery.open_state(self.config.state_db, self.config.paths.outgoing)
        self.state.adopt_settings(self.settings)
        self.state.count_run(self.stats.run)

    @property
    def stopping(self) -> bool:
        return self.stop_reason is not None
