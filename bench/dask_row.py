"""Bench row: the end-to-end run on a two-worker Dask LocalCluster next to the local pool.

    python -m bench.dask_row [CORPUS_DIR] [--copies N]

Both runs are `thumbd once` (a real daemon process) over the same copies of the corpus, with the
same widths and quality; the local pool gets as many worker processes as the cluster has. The
cluster lives in this process for the length of the row. `dask_row()` is the hook for the
benchmark driver: it returns a `DaskRow` whose `line()` is the printed row.

On one machine the cluster can only lose: it adds a scheduler, a copy of every source and a
round trip per file on the same cores. What the row shows is that overhead; the cluster pays off
when its workers are other machines.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CORPUS = ROOT.parent / "shared" / "corpus" / "photos"
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".gif", ".webp", ".tif", ".tiff", ".bmp"}


@dataclass(frozen=True)
class DaskRow:
    files: int
    workers: int
    local_seconds: float
    dask_seconds: float

    @property
    def ratio(self) -> float:
        """Dask time over local time: above 1 means the cluster was slower."""
        return self.dask_seconds / self.local_seconds

    def line(self) -> str:
        return (
            f"end to end, {self.files} files, {self.workers} workers: "
            f"local pool {self.local_seconds:.2f} s ({self.files / self.local_seconds:.1f}/s), "
            f"Dask LocalCluster {self.dask_seconds:.2f} s "
            f"({self.files / self.dask_seconds:.1f}/s), dask/local {self.ratio:.2f}x"
        )


def dask_row(corpus: Path, work: Path, *, copies: int = 10, workers: int = 2) -> DaskRow:
    """Time `thumbd once` over `copies` x the images in `corpus`, locally and on Dask."""
    from distributed import LocalCluster  # the bench needs thumbd[dask]; thumbd itself not

    sources = sorted(p for p in corpus.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not sources:
        raise SystemExit(f"bench: no images in {corpus}")
    with LocalCluster(
        n_workers=workers,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=":0",  # no fixed port: runs side by side
        worker_dashboard_address=":0",
    ) as cluster:
        dask = f'[executor]\nkind = "dask"\naddress = "{cluster.scheduler_address}"\n'
        local_seconds = _once(work / "local", sources, copies, workers, "")
        dask_seconds = _once(work / "dask", sources, copies, workers, dask)
    return DaskRow(len(sources) * copies, workers, local_seconds, dask_seconds)


def _once(root: Path, sources: list[Path], copies: int, workers: int, extra: str) -> float:
    incoming = root / "incoming"
    for i in range(copies):
        folder = incoming / f"copy{i:02d}"
        folder.mkdir(parents=True)
        for src in sources:
            # Bytes of its own after the file's end (decoders never read it): copies of one
            # file would be given its thumbnails, not rendered (output/reuse.py).
            (folder / src.name).write_bytes(src.read_bytes() + b"\0" * (i + 1))
    config = root / "thumbd.toml"
    config.write_text(f"[resize]\nworkers = {workers}\n{extra}")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "thumbd", "once", "-c", str(config)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"bench: thumbd once failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus", type=Path, nargs="?", default=DEFAULT_CORPUS)
    parser.add_argument("--copies", type=int, default=10)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    if not args.corpus.is_dir():
        raise SystemExit(f"bench: corpus {args.corpus} not found")
    with tempfile.TemporaryDirectory(prefix="thumbd-bench-dask-") as tmp:
        row = dask_row(args.corpus, Path(tmp), copies=args.copies, workers=args.workers)
    print(row.line())


if __name__ == "__main__":
    main()
