"""The benchmark's photos: the shared corpus, copied to N unique names outside the repository."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

EXTENSIONS = (".jpg", ".jpeg")
ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CORPUS = ROOT.parent / "shared" / "corpus" / "photos"


@dataclass(frozen=True)
class Photo:
    path: Path
    size: tuple[int, int]  # stored pixel size
    orientation: int
    bytes: int

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def megapixels(self) -> float:
        return self.size[0] * self.size[1] / 1e6


def default_corpus() -> Path:
    """../shared/corpus/photos next to the repository (worktrees live one level deeper)."""
    for base in (ROOT, *ROOT.parents):
        candidate = base / "shared" / "corpus" / "photos"
        if candidate.is_dir():
            return candidate
    return DEFAULT_CORPUS


def load(folder: Path) -> list[Photo]:
    photos = []
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() not in EXTENSIONS or not path.is_file():
            continue
        with Image.open(path) as im:
            orientation = im.getexif().get(0x0112, 1)
            photos.append(Photo(path, im.size, int(orientation), path.stat().st_size))
    if not photos:
        raise SystemExit(f"bench: no JPEG photos in {folder} (use --corpus DIR)")
    return photos


class Copies:
    """N real copies of the corpus (distinct inodes), cycled through the photos, in `folder`.

    A run gets hard links to them under fresh names (`stage`), so each run moves in N unique
    files without writing the bytes again; the page cache holds the copies throughout, as it
    would hold photos that were just uploaded.
    """

    def __init__(self, photos: list[Photo], n: int, folder: Path) -> None:
        self.photos = photos
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.files: list[Path] = []
        sizes: set[int] = set()
        for i in range(n):
            photo = photos[i % len(photos)]
            dest = folder / f"{i:06d}-{photo.path.stem}.jpg"
            data = photo.path.read_bytes()
            # Distinct bytes and sizes: after the JPEG's end, which decoders never read. Copies
            # of one photo would otherwise be reused, not rendered (output/reuse.py), and
            # photos of one size would make the daemon hash them to tell them apart.
            pad = 1
            while len(data) + pad in sizes:
                pad += 1
            sizes.add(len(data) + pad)
            if not dest.exists():
                dest.write_bytes(data + b"\0" * pad)
            self.files.append(dest)

    def photo_of(self, index: int) -> Photo:
        return self.photos[index % len(self.photos)]

    def stage(self, dest: Path, count: int, tag: str) -> list[Path]:
        """`count` hard links (cycling through the copies) in `dest`, named uniquely."""
        dest.mkdir(parents=True, exist_ok=True)
        staged = []
        for i in range(count):
            src = self.files[i % len(self.files)]
            link = dest / f"{tag}-{i:06d}-{src.name}"
            try:
                os.link(src, link)
            except OSError:
                shutil.copyfile(src, link)
            staged.append(link)
        return staged
