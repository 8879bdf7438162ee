"""The chaos operations: each is a name and one random number, resolved against the world
as it is when the operation runs, so that any subset of a run replays (a target that is gone
makes the operation a no-op). Each one does its thing to the real disk or the real daemon and
tells the model what should follow."""

from __future__ import annotations

import contextlib
import io
import os
import random
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from tests.images import natural

if TYPE_CHECKING:
    from tests.chaos.world import World

MAX_SOURCES = 40  # more files make quiet points slower without finding more


@dataclass(frozen=True)
class Op:
    name: str
    x: int

    def __str__(self) -> str:
        return f"{self.name}:{self.x}"

    @staticmethod
    def parse(text: str) -> Op:
        name, _, x = text.partition(":")
        return Op(name, int(x or 0))


def _jpeg(seed: int) -> bytes:
    buf = io.BytesIO()
    natural((240 + 16 * (seed % 5), 180 + 8 * (seed % 3)), seed).save(buf, "JPEG", quality=85)
    return buf.getvalue()


GOOD = [_jpeg(s) for s in range(6)]


def bad_bytes(x: int) -> bytes:
    """Something under an image's name that cannot render: cut short or garbage."""
    good = GOOD[x % len(GOOD)]
    if x % 2:
        return good[: len(good) // 2]
    return b"\xff\xd8\xff\xe0" + random.Random(x).randbytes(2000)


@dataclass
class Writer:
    """A writer that holds its file open between operations."""

    rel: str
    fh: BinaryIO
    rest: bytes


# -- choosing targets ------------------------------------------------------------------------


def _own(w: World) -> list[str]:
    """Sources the file operations may touch: not downloads, not being written."""
    busy = {wr.rel for wr in w.writers}
    return sorted(r for r in w.model.sources if not r.startswith("dl/") and r not in busy)


def _pick(w: World, x: int) -> str | None:
    own = _own(w)
    return own[x % len(own)] if own else None


def _dirs(w: World) -> list[str]:
    """Top-level folders of incoming/ that folder operations may move."""
    busy = {wr.rel.split("/")[0] for wr in w.writers}
    return sorted(
        p.name
        for p in w.incoming.iterdir()
        if p.is_dir() and not p.name.startswith(".") and p.name != "dl" and p.name not in busy
    )


def _new_rel(w: World, x: int) -> str | None:
    if len(w.model.sources) >= MAX_SOURCES:
        return None
    folders = ["", "a", "b", *_dirs(w)]
    folder = folders[x % len(folders)]
    name = w.model.fresh("p") + ".jpg"
    return f"{folder}/{name}" if folder else name


def _names(w: World, rels: list[str]) -> set[str]:
    out: set[str] = set()
    for rel in rels:
        out |= w.thumb_names(rel)
    return out


# -- arrivals --------------------------------------------------------------------------------


def _outside_file(w: World, data: bytes) -> Path:
    path = w.outside / f"f{w.model.fresh('o')}.jpg"
    path.write_bytes(data)
    return path


def create(w: World, x: int, how: str) -> None:
    rel = _new_rel(w, x)
    if rel is None:
        return
    dest = w.incoming / rel
    dest.parent.mkdir(parents=True, exist_ok=True)
    data = GOOD[x % len(GOOD)]
    if how == "rsync" and w.has_rsync:
        src = _outside_file(w, data)
        subprocess.run(["rsync", str(src), str(dest)], check=True)
        src.unlink()
    elif how == "mv":
        os.rename(_outside_file(w, data), dest)
    else:
        src = _outside_file(w, data)
        subprocess.run(["cp", str(src), str(dest)], check=True)
        src.unlink()
    w.model.wrote(rel, True)


def slow_write(w: World, x: int) -> None:
    """Write in place in a few chunks with pauses, a new file or over an old one."""
    rel = _pick(w, x) if x % 3 == 0 else _new_rel(w, x)
    if rel is None:
        return
    data = GOOD[x % len(GOOD)]
    (w.incoming / rel).parent.mkdir(parents=True, exist_ok=True)
    with open(w.incoming / rel, "wb") as f:
        step = -(-len(data) // 4)
        for i in range(0, len(data), step):
            f.write(data[i : i + step])
            f.flush()
            time.sleep(0.1)
    w.model.wrote(rel, True)


def hold_open(w: World, x: int) -> None:
    """Start a writer that keeps its file open, half written, until release()."""
    rel = _new_rel(w, x)
    if rel is None or len(w.writers) >= 3:
        return
    data = GOOD[x % len(GOOD)]
    (w.incoming / rel).parent.mkdir(parents=True, exist_ok=True)
    fh = open(w.incoming / rel, "wb")  # noqa: SIM115 - held across operations on purpose
    fh.write(data[: len(data) // 2])
    fh.flush()
    w.writers.append(Writer(rel, fh, data[len(data) // 2 :]))


def release(w: World, x: int = 0) -> None:
    """Finish and close one held writer (the oldest)."""
    if not w.writers:
        return
    wr = w.writers.pop(0)
    wr.fh.write(wr.rest)
    wr.fh.close()
    w.model.wrote(wr.rel, True)


# -- changes to what is there ----------------------------------------------------------------


def overwrite(w: World, x: int) -> None:
    rel = _pick(w, x)
    if rel is not None:
        (w.incoming / rel).write_bytes(GOOD[x % len(GOOD)])
        w.model.wrote(rel, True)


def corrupt(w: World, x: int) -> None:
    rel = _pick(w, x)
    if rel is not None:
        (w.incoming / rel).write_bytes(bad_bytes(x))
        w.model.wrote(rel, False)


def truncate(w: World, x: int) -> None:
    rel = _pick(w, x)
    if rel is not None:
        os.truncate(w.incoming / rel, 0)
        w.model.wrote(rel, False)


def delete(w: World, x: int) -> None:
    rel = _pick(w, x)
    if rel is not None:
        names = w.thumb_names(rel)
        (w.incoming / rel).unlink()
        w.model.deleted(rel, names)


def rename_file(w: World, x: int) -> None:
    rel = _pick(w, x)
    new = _new_rel(w, x // 7) if rel is not None else None
    if rel is None or new is None:
        return
    (w.incoming / new).parent.mkdir(parents=True, exist_ok=True)
    os.rename(w.incoming / rel, w.incoming / new)
    w.model.moved(rel, new)


def _under(w: World, folder: str) -> list[str]:
    return [r for r in w.model.sources if r.startswith(folder + "/")]


def rename_dir(w: World, x: int) -> None:
    dirs = _dirs(w)
    if not dirs:
        return
    old = dirs[x % len(dirs)]
    new = w.model.fresh("d")
    rels = _under(w, old)
    os.rename(w.incoming / old, w.incoming / new)
    for rel in rels:
        w.model.moved(rel, new + rel[len(old) :])


def move_out(w: World, x: int) -> None:
    dirs = _dirs(w)
    if not dirs:
        return
    name = dirs[x % len(dirs)]
    if (w.outside / name).exists():
        return  # a folder of that name is out already
    rels = _under(w, name)
    names = _names(w, rels)
    os.rename(w.incoming / name, w.outside / name)
    w.model.outside[name] = {rel: w.model.sources[rel] for rel in rels}
    for rel in rels:
        w.model.deleted(rel, set())
    if w.model.on_delete == "keep":
        w.model.kept_names |= names


def move_back(w: World, x: int) -> None:
    gone = sorted(w.model.outside)
    if not gone:
        return
    name = gone[x % len(gone)]
    if (w.incoming / name).exists():
        return
    os.rename(w.outside / name, w.incoming / name)
    for rel, source in w.model.outside.pop(name).items():
        w.model.arrived(rel, source)


def manifest_append(w: World, x: int) -> None:
    """Append 1-3 URL lines to one of two manifests (created by the first append)."""
    rel = f"dl/m{x % 2}.urls"
    urls = w.model.manifests.setdefault(rel, [])
    path = w.incoming / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = []
    for _ in range(1 + x % 3):
        n = w.model.fresh("")
        lines.append(w.serve(f"/img{n}.jpg", GOOD[(x + int(n)) % len(GOOD)]))
    with path.open("a") as f:
        f.write("".join(u + "\n" for u in lines))
    urls += lines


# -- the daemon ------------------------------------------------------------------------------


def kill9(w: World, x: int) -> None:
    w.kill_group()
    w.model.crashed()
    w.start()


def sigterm(w: World, x: int) -> None:
    """A clean stop, which must end with exit code 0; then a start."""
    w.stop()
    w.start()


def sighup(w: World, x: int) -> None:
    """Reload with on_delete flipped. A quiet point first, so that every deletion the daemon
    has yet to hear of is judged by the policy it was made under."""
    w.quiet_point()
    w.model.on_delete = "keep" if w.model.on_delete == "remove" else "remove"
    w.reload()


def worker_kill(w: World, x: int) -> None:
    workers = w.workers()
    if workers:
        with contextlib.suppress(ProcessLookupError):
            os.kill(workers[x % len(workers)], signal.SIGKILL)
        w.model.crashed()


def fill_disk(w: World, x: int) -> None:
    if w.tmpfs:
        with contextlib.suppress(OSError), open(w.filler, "ab") as f:
            while True:
                f.write(b"\0" * 65536)
                f.flush()


def free_disk(w: World, x: int = 0) -> None:
    with contextlib.suppress(FileNotFoundError):
        w.filler.unlink()


def quiet(w: World, x: int) -> None:
    w.quiet_point()


def _noop(w: World, x: int) -> None:
    pass


def _mk(how: str):  # type: ignore[no-untyped-def]
    return lambda w, x: create(w, x, how)


OPS = {
    "cp": _mk("cp"),
    "rsync": _mk("rsync"),
    "mv": _mk("mv"),
    "slow": slow_write,
    "hold": hold_open,
    "release": release,
    "overwrite": overwrite,
    "corrupt": corrupt,
    "truncate": truncate,
    "delete": delete,
    "rename": rename_file,
    "rename_dir": rename_dir,
    "move_out": move_out,
    "move_back": move_back,
    "manifest": manifest_append,
    "kill9": kill9,
    "sigterm": sigterm,
    "sighup": sighup,
    "worker_kill": worker_kill,
    "fill": fill_disk,
    "free": free_disk,
    "quiet": quiet,
}

# How often each comes up: arrivals and changes most, daemon-level chaos now and then.
WEIGHTS = {
    "cp": 10,
    "rsync": 4,
    "mv": 6,
    "slow": 3,
    "hold": 2,
    "release": 2,
    "overwrite": 5,
    "corrupt": 3,
    "truncate": 2,
    "delete": 5,
    "rename": 4,
    "rename_dir": 2,
    "move_out": 2,
    "move_back": 2,
    "manifest": 2,
    "kill9": 1,
    "sigterm": 1,
    "sighup": 1,
    "worker_kill": 2,
    "fill": 1,
    "free": 1,
    "quiet": 4,
}


def generate(seed: int, count: int) -> list[Op]:
    rng = random.Random(seed)
    names = list(WEIGHTS)
    weights = [WEIGHTS[n] for n in names]
    return [Op(rng.choices(names, weights)[0], rng.randrange(1 << 30)) for _ in range(count)]


def apply(w: World, op: Op) -> None:
    OPS.get(op.name, _noop)(w, op.x)


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
