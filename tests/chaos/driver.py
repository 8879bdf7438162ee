"""Seeded chaos runs against the real daemon, and the shrinking of a failing one.

    python -m tests.chaos --seed 7 --ops 300          one run
    python -m tests.chaos --minutes 60                seeds 1, 2, ... until the time is up
    python -m tests.chaos --replay 'cp:5 kill9:1 delete:3'

A run applies the operations in order, with a quiet point (the daemon idle, every invariant
checked) wherever a `quiet` operation falls, before each SIGHUP and at the end. A break
prints the seed and the operations up to it, then shrinks them by delta debugging (ddmin:
drop chunks, keep what still breaks) to a short replay.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tests.chaos import ops
from tests.chaos.ops import Op
from tests.chaos.world import Break, World, can_mount


@dataclass
class Outcome:
    applied: int  # operations done (all of them when it passed)
    failure: str | None = None  # the break, or None
    quiet_points: int = 0

    @property
    def ok(self) -> bool:
        return self.failure is None


def run(
    todo: list[Op], *, on_delete: str = "remove", log: Callable[[str], None] | None = None
) -> Outcome:
    """Run `todo` in a fresh world; the outcome says where it broke, if it did."""
    keep = os.environ.get("CHAOS_KEEP") == "1"  # leave the folders and the log to look at
    with tempfile.TemporaryDirectory(prefix="thumbd-chaos-") as tmp:
        if keep:
            tmp = tempfile.mkdtemp(prefix="thumbd-chaos-kept-")
            print(f"keeping {tmp}")
        world = World(Path(tmp), on_delete)
        done = 0
        try:
            world.start()
            for op in todo:
                if keep:
                    with (Path(tmp) / "ops.log").open("a") as f:
                        f.write(f"{op} {sorted(world.model.sources)}\n")
                ops.apply(world, op)
                done += 1
                if log and done % 50 == 0:
                    log(f"  {done}/{len(todo)} operations")
            world.quiet_point()
            return Outcome(done, None, world.quiet_points)
        except Break as e:
            return Outcome(done, f"{e}", world.quiet_points)
        except Exception:  # a driver bug or an unexpected error: still a replayable failure
            return Outcome(done, traceback.format_exc(limit=4), world.quiet_points)
        finally:
            world.close()


def shrink(todo: list[Op], on_delete: str, budget: float, log: Callable[[str], None]) -> list[Op]:
    """ddmin over the operations: the shortest list found (within `budget` seconds) that
    still breaks an invariant. Any break counts: a shorter replay of another bug is a find
    too, and the final replay is run once more and printed with its own message."""
    deadline = time.monotonic() + budget
    current = list(todo)
    n = 2
    while len(current) >= 2 and time.monotonic() < deadline:
        chunk = max(1, len(current) // n)
        pieces = [current[i : i + chunk] for i in range(0, len(current), chunk)]
        reduced = False
        for i in range(len(pieces)):
            if time.monotonic() >= deadline:
                break
            rest = [op for j, p in enumerate(pieces) if j != i for op in p]
            if rest and not run(rest, on_delete=on_delete).ok:
                log(f"  shrunk to {len(rest)} operations")
                current, n, reduced = rest, max(n - 1, 2), True
                break
        if not reduced:
            if chunk == 1:
                break
            n = min(len(current), n * 2)
    return current


def replay_text(todo: list[Op]) -> str:
    return " ".join(str(op) for op in todo)


def chaos(
    seed: int,
    count: int,
    *,
    shrink_budget: float = 600,
    log: Callable[[str], None] = print,
) -> Outcome:
    """One seeded run; on a break, the seed, the operations up to it and a shrunk replay."""
    on_delete = "remove" if seed % 2 else "keep"
    todo = ops.generate(seed, count)
    log(f"seed {seed}: {count} operations, on_delete = {on_delete!r}")
    if (why := can_mount()) is not None:
        log(f"  fill and free skipped: {why}")
    outcome = run(todo, on_delete=on_delete, log=log)
    if outcome.ok:
        log(f"seed {seed}: {count} operations, {outcome.quiet_points} quiet points, no break")
        return outcome
    prefix = todo[: outcome.applied + 1]
    log(f"seed {seed}: BREAK after {outcome.applied} operations: {outcome.failure}")
    log(f"  operations: {replay_text(prefix)}")
    if shrink_budget > 0:
        small = shrink(prefix, on_delete, shrink_budget, log)
        again = run(small, on_delete=on_delete)
        log(f"  replay ({len(small)} operations, on_delete={on_delete!r}): {replay_text(small)}")
        log(f"  replay gives: {again.failure}")
    return outcome


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.chaos", description=__doc__.split("\n")[0])
    p.add_argument("--seed", type=int, default=1, help="first seed (then seed+1, ...)")
    p.add_argument("--ops", type=int, default=300, help="operations per seed")
    p.add_argument("--minutes", type=float, default=0, help="keep running seeds this long")
    p.add_argument("--replay", default="", help="operations to run, as printed by a break")
    p.add_argument("--on-delete", default="remove", choices=("remove", "keep"))
    p.add_argument("--shrink-seconds", type=float, default=600)
    args = p.parse_args(argv)
    if args.replay:
        todo = [Op.parse(t) for t in args.replay.split()]
        outcome = run(todo, on_delete=args.on_delete)
        print(f"replay: {outcome.failure or 'no break'}")
        return 0 if outcome.ok else 1
    deadline = time.monotonic() + args.minutes * 60
    seed, total, breaks = args.seed, 0, 0
    while True:
        outcome = chaos(seed, args.ops, shrink_budget=args.shrink_seconds)
        total += outcome.applied
        breaks += not outcome.ok
        seed += 1
        if time.monotonic() >= deadline:
            break
    print(f"total: {total} operations over {seed - args.seed} seeds, {breaks} with a break")
    with contextlib.suppress(BrokenPipeError):
        sys.stdout.flush()
    return 0 if breaks == 0 else 1
