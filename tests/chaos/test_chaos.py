"""The bounded chaos run CI does: a few seeds of random operations on the real daemon, every
quiet point checked against the model (tests/chaos/driver.py; `make chaos` runs longer)."""

from __future__ import annotations

import pytest

from tests.chaos.driver import chaos

# Seed parity picks on_delete: odd "remove", even "keep"; each also flips it with a SIGHUP.
SEEDS = (1, 2, 3)
OPS = 100


@pytest.mark.chaos
@pytest.mark.parametrize("seed", SEEDS)
def test_chaos_run_keeps_every_invariant(seed: int) -> None:
    lines: list[str] = []
    outcome = chaos(seed, OPS, shrink_budget=120, log=lines.append)
    assert outcome.ok, "\n".join(lines)
    assert outcome.quiet_points >= 2, "\n".join(lines)
