"""What must hold at every quiet point of a chaos run (the daemon idle, its counts stable).

Each check raises world.Break naming what it found; check_all runs them all.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

from tests.chaos.world import Break, expected_names, stale_names

if TYPE_CHECKING:
    from tests.chaos.world import World

DONE = re.compile(r"\bdone (.+?): \d+ thumbnails? in ")


def check_all(w: World) -> None:
    check_alive(w)
    check_counts(w)
    check_thumbnails(w)
    check_no_temporaries(w)
    check_renders(w)


def check_alive(w: World) -> None:
    proc = w.daemon.proc
    running = proc is not None and proc.poll() is None
    if running != w.model.running:
        raise Break(f"the daemon is {'running' if running else 'not running'}; the model says not")


def check_counts(w: World) -> None:
    from thumbd.commands.status import collect

    report = collect(w.config)
    got = {k: report[k] for k in ("done", "failed", "pending")}
    if got != w.model.expected_counts():
        raise Break(f"status counts {got}, the model's {w.model.expected_counts()}")


def _outputs(w: World) -> set[str]:
    return {
        str(p.relative_to(w.outgoing))
        for p in w.outgoing.rglob("*")
        if p.is_file() and ".thumbd-tmp" not in p.parts and p != w.filler
    }


def check_thumbnails(w: World) -> None:
    """Every good source has exactly the reference render's thumbnails, byte for byte; a
    failed one at most what an earlier version left in its names; nothing else is there but
    what a deletion under on_delete = "keep" left."""
    on_disk = _outputs(w)
    wanted: set[str] = set()
    tolerated = set(w.model.kept_names)
    for rel in w.model.kept_failed:
        tolerated |= set(stale_names(w.outgoing, rel))
    for rel, source in sorted(w.model.present().items()):
        result = w.render_of(rel)
        if result is None:
            raise Break(f"{rel}: the model has it, incoming/ does not")
        if source.good != (result.failure is None):
            raise Break(f"{rel}: the model says good={source.good}, the reference render differs")
        if not source.good:
            tolerated |= set(stale_names(w.outgoing, rel))
            continue
        names = expected_names(rel, result)
        for name, thumb in zip(names, result.thumbnails, strict=True):
            path = w.outgoing / name
            if not path.is_file():
                raise Break(f"{rel}: thumbnail {name} missing")
            if path.read_bytes() != thumb.data:
                raise Break(f"{rel}: thumbnail {name} differs from the reference render")
        wanted |= set(names)
        tolerated -= set(names)
    extra = sorted(on_disk - wanted - tolerated)
    if extra:
        raise Break(f"thumbnails no source should have: {extra[:8]}")


def check_no_temporaries(w: World) -> None:
    found = []
    for root in (w.outgoing, w.incoming):
        for p in root.rglob("*"):
            if p == w.filler or p.is_dir():  # the daemon's own dot folders may stay, empty
                continue
            if root == w.outgoing and p.relative_to(root).parts[:2] == (".thumbd-tmp", "held"):
                continue  # deleted sources' thumbnails, kept for the reuse window (complete)
            if any(part.startswith(".") for part in p.relative_to(root).parts):
                found.append(str(p.relative_to(w.tmp)))
    if found:
        raise Break(f"temporary or partial files left: {sorted(found)[:8]}")


def check_renders(w: World) -> None:
    """No source rendered more often since the last quiet point than the model allows."""
    done = Counter(m.group(1) for m in DONE.finditer(w.new_log()))
    over = {rel: n for rel, n in sorted(done.items()) if n > w.model.allowed_renders(rel)}
    if over:
        allowed = {rel: w.model.allowed_renders(rel) for rel in over}
        raise Break(f"rendered more often than allowed: {over} (allowed {allowed})")


def relative(path: Path, root: Path) -> str:
    return str(path.relative_to(root))
