"""Words for people: a count with its noun in the right number ("1 file", "2 files").

Pillow-free and import-free, so every stage (and the command line) can use it.
"""

from __future__ import annotations


def plural(n: int, word: str, many: str | None = None) -> str:
    """`n` and `word`, or its plural (`word` + "s", or `many` where English has another):
    `plural(1, "file")` is "1 file", `plural(0, "URL")` "0 URLs"."""
    if n == 1:
        return f"{n} {word}"
    return f"{n} {many if many is not None else word + 's'}"
