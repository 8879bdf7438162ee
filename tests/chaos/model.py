"""What should be true of a chaos run: the sources incoming/ holds, what each deserves, and
how often each may be rendered before the next quiet point.

The model is fed by the operations (tests/chaos/ops.py) as they touch the disk, never by
what the daemon does: the invariants compare the daemon against it.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass
class Source:
    good: bool  # a complete image (rendered), or not (recorded failed)


@dataclass
class Model:
    on_delete: str = "remove"
    sources: dict[str, Source] = field(default_factory=dict)  # rel -> what it holds now
    outside: dict[str, dict[str, Source]] = field(default_factory=dict)  # moved-out folders
    manifests: dict[str, list[str]] = field(default_factory=dict)  # manifest rel -> its URLs
    downloads: dict[str, str] = field(default_factory=dict)  # URL -> the source it becomes
    kept_names: set[str] = field(default_factory=set)  # thumbnails a kept deletion may leave
    # Failed sources a kept deletion took: what an earlier version left in their names may
    # stay, looked for when checked (the daemon may still move them along with a folder
    # renamed a moment before, after the deletion's look at outgoing/).
    kept_failed: set[str] = field(default_factory=set)
    running: bool = False
    exit_code: int | None = None  # what the daemon's last exit should have been
    renders: Counter[str] = field(default_factory=Counter)  # allowed "done" lines since quiet
    slack: int = 0  # renders any source may get on top (a kill can cost one more)
    counter: int = 0  # for fresh names

    def fresh(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}{self.counter}"

    # -- what operations tell the model ----------------------------------------------------

    def wrote(self, rel: str, good: bool) -> None:
        """rel now holds a complete image (good) or something that cannot render."""
        self.sources[rel] = Source(good)
        if good:
            self.renders[rel] += 1

    def deleted(self, rel: str, names: set[str]) -> None:
        """rel is gone; `names` are the thumbnails it had (the reference render's)."""
        source = self.sources.pop(rel, None)
        if self.on_delete == "keep":
            self.kept_names |= names
            if source is not None and not source.good:
                self.kept_failed.add(rel)

    def arrived(self, rel: str, source: Source) -> None:
        """rel came in by a rename (a file's or its folder's)."""
        self.sources[rel] = source
        if source.good:
            self.renders[rel] += 1

    def moved(self, rel: str, new: str) -> None:
        """rel was renamed to new inside incoming/: its thumbnails follow it (nothing is left
        under the old names, whatever on_delete says), and it is rendered no more often than
        it still could have been at its old name."""
        self.sources[new] = self.sources.pop(rel)
        self.renders[new] += self.renders.pop(rel, 0)

    def crashed(self) -> None:
        """A kill: a render in flight, or a record not committed yet, may be done again."""
        self.slack += 1

    def quiet(self) -> None:
        self.renders.clear()
        self.slack = 0

    # -- what the daemon should report -----------------------------------------------------

    def present(self) -> dict[str, Source]:
        return dict(self.sources)

    def expected_counts(self) -> dict[str, int]:
        done = sum(1 for s in self.sources.values() if s.good)
        failed = sum(1 for s in self.sources.values() if not s.good)
        return {"done": done, "failed": failed, "pending": 0}

    def allowed_renders(self, rel: str) -> int:
        return self.renders[rel] + self.slack
