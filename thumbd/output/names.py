"""Whose thumbnails are these: output names that two sources of one folder never share.

A source's outputs are `<key>_<label>.<ext>` and, with `index = true`, `<key>.json`, relative
to outgoing/. The key is normally the source's folder and stem (`a/x.jpg` -> `a/x`), so two
sources of one folder with the same stem (`IMG_1.HEIC` and `IMG_1.JPG` from a phone, `x.jpg`
and `x.png`) would write the same names. A name belongs to the source whose state row lists it
among its outputs (`sources.outputs`), and a source takes the first key whose names no other row
lists:

  1. `a/x`: the plain names, `x_200.jpg`, `x.json`;
  2. `a/x.png`, the whole file name: `x.png_200.jpg`, `x.png.json`;
  3. `a/x.png-<8 hex of sha256("x.png")>`: only when a third file holds the second key's names
     too (`x.png.jpg`'s plain names are `x.png_200.jpg`).

So the source that wrote the plain names first keeps them, and the other gets names no sibling
can have: the whole file names of two files of one folder differ. A source whose own row already
lists some key's names keeps that key while no other row lists them: names never flip on a
restart or a re-render, also after the sibling that pushed it aside is gone.

Every row that can list a name made from any of these keys has a path that is the plain key
itself or starts with the plain key and a dot (`a/x`, `a/x.*`): a name `<k>_<label>.<ext>` is
made from key `k` only (labels have no dots), and a key is a stem, a file name, or a file name
plus a hash, each of which starts with the stem it came from. `State.outputs_near` reads exactly
those rows, a range of the primary key: one small query per written source.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, replace

from thumbd.output.writer import plain_key
from thumbd.render.placeholder import with_files
from thumbd.render.spec import RenderResult


class NamesTaken(Exception):
    """Every candidate name set of a source is listed by other sources' rows: says whose."""


@dataclass(frozen=True, slots=True)
class Names:
    """The names one source's outputs get: thumbnails in render order, then the index."""

    key: str
    thumbnails: tuple[str, ...]
    index: str | None
    plain: bool = True  # made from the folder and stem, as render() names them in the index
    note: str | None = None  # why these are not the plain names, the first time only

    @property
    def all(self) -> tuple[str, ...]:
        return self.thumbnails if self.index is None else (*self.thumbnails, self.index)


def keys(rel: str) -> tuple[str, ...]:
    """The candidate keys of `rel`, plain first: `a/x`, `a/x.png`, `a/x.png-1a2b3c4d`."""
    name = rel.rpartition("/")[2]
    digest = hashlib.sha256(name.encode("utf-8", "surrogateescape")).hexdigest()[:8]
    return tuple(dict.fromkeys((plain_key(rel), rel, f"{rel}-{digest}")))


def names_for(
    key: str, labels: Sequence[tuple[str, str]], index: bool, *, plain: bool = True
) -> Names:
    """The outputs under `key` for thumbnails given as (label, extension)."""
    thumbnails = tuple(f"{key}_{label}.{ext}" for label, ext in labels)
    return Names(key, thumbnails, f"{key}.json" if index else None, plain)


def choose(
    rel: str,
    labels: Sequence[tuple[str, str]],
    index: bool,
    own: Collection[str],
    others: Mapping[str, Collection[str]],
) -> Names:
    """The names `rel` writes: its own key if its row has one and nobody else lists those names,
    else the first key whose names no other row lists. `others` maps the neighbours' paths to
    their outputs (`State.outputs_near` without `rel`). Raises NamesTaken if every key is taken.
    """
    owner = {name: path for path, outputs in others.items() for name in outputs}
    plain = names_for(plain_key(rel), labels, index)
    if not owner and all(_under(plain.key, name) for name in own):
        return plain  # no neighbour has any output: the common case, kept cheap for floods
    candidates = [names_for(k, labels, index, plain=i == 0) for i, k in enumerate(keys(rel))]
    mine = [c for c in candidates if any(_under(c.key, name) for name in own)][:1]
    clashes: list[str] = []
    for names in mine + [c for c in candidates if c not in mine]:
        taken = next((name for name in names.all if name in owner), None)
        if taken is None:
            if names.plain or names in mine:
                return names
            note = f"{rel}: {'; '.join(clashes)}; writing {', '.join(names.all)} instead"
            return replace(names, note=note)
        clashes.append(f"{taken} already belongs to {owner[taken]}")
    raise NamesTaken(f"no free names for its thumbnails: {'; '.join(clashes)}")


def labels(result: RenderResult) -> list[tuple[str, str]]:
    """(label, extension) of each thumbnail of a render: what its names are made of."""
    return [(t.name, t.ext) for t in result.thumbnails]


def files(names: Names, result: RenderResult) -> list[tuple[str, bytes]]:
    """(name, data) of every output of `result` under `names`. render() lists the plain names
    in the index; under another key the index lists the names written instead."""
    out = [(name, t.data) for name, t in zip(names.thumbnails, result.thumbnails, strict=True)]
    if result.index is not None and names.index is not None:
        index = result.index
        if not names.plain:
            index = with_files(index, [name.rpartition("/")[2] for name in names.thumbnails])
        out.append((names.index, index))
    return out


def unowned(names: Collection[str], others: Mapping[str, Collection[str]]) -> list[str]:
    """Those of `names` that no other row lists: what a source may remove."""
    listed = {name for outputs in others.values() for name in outputs}
    return [name for name in names if name not in listed]


def _under(key: str, name: str) -> bool:
    """Whether `name` is an output made from `key` (whatever its label and extension)."""
    if name == f"{key}.json":
        return True
    rest = name[len(key) + 1 :] if name.startswith(f"{key}_") else ""
    return "." in rest and "/" not in rest and "." not in rest.rpartition(".")[0]
