"""What the render stage takes and gives, with no Pillow: the daemon, the commands and the
executors share these types without loading an image library.

`RenderSpec` says what to make of every source; `render()` (render/pipeline.py) answers with a
`RenderResult`: thumbnails, or a `Failure` whose kind the daemon branches on and whose reason a
person reads.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field

Signature = tuple[int, int, int]  # (size, mtime_ns, inode)
Size = tuple[int, int]
Box = tuple[float, float, float, float]

FORMATS = ("auto", "jpeg", "png", "webp", "avif")
EXIF_ITEMS = ("copyright", "artist", "datetime", "camera")
METADATA_ITEMS = (*EXIF_ITEMS, "gps", "xmp", "comment")
MODES = ("width", "fit", "cover")
CROPS = ("centre", "center", "attention")


@dataclass(frozen=True, slots=True)
class NamedSize:
    """A `[[thumbnails.size]]` entry: `<stem>_<name>.<ext>`."""

    name: str
    width: int
    height: int = 0  # 0: no limit (fit) / not allowed (cover)
    mode: str = "fit"
    crop: str = "centre"


@dataclass(frozen=True, slots=True)
class RenderSpec:
    """What to make of every source. Picklable; built from the configuration."""

    widths: tuple[int, ...] = (200, 64, 32)
    quality: int = 85  # JPEG
    max_pixels: int = 100_000_000
    sizes: tuple[NamedSize, ...] = ()
    format: str = "auto"  # auto | jpeg | png | webp | avif
    webp_quality: int = 80
    avif_quality: int = 60
    progressive: bool = False
    background: tuple[int, int, int] = (255, 255, 255)
    keep_metadata: tuple[str, ...] = ()
    animated: bool = False
    sharpen: bool = False
    index: bool = False


class FailKind(enum.Enum):
    """Why a source has no thumbnails. The daemon branches on these, never on a reason's words."""

    NOT_FOUND = "not found"  # deleted or renamed before it was read
    UNREADABLE = "unreadable"  # permissions, not a regular file, a symlink, a read error
    EMPTY = "empty"
    UNIDENTIFIED = "unidentified"  # no decoder thumbd allows claims it
    UNSUPPORTED = "unsupported"  # a known format with a feature this build cannot decode
    TRUNCATED = "truncated"
    UNDECODABLE = "undecodable"  # broken data
    TOO_LARGE = "too large"  # pixels, bytes, or a side the output format cannot hold
    OUT_OF_MEMORY = "out of memory"
    TIMEOUT = "timeout"  # past [resize] timeout: its worker was killed
    CRASHED = "crashed"  # its worker died (a decoder crash, the OOM killer)
    UNWRITABLE = "unwritable"  # its thumbnails cannot be written in outgoing/
    NAMES_TAKEN = "names taken"  # every name for its thumbnails belongs to other sources
    INTERNAL = "internal"  # a bug in thumbd: the log has the traceback


@dataclass(frozen=True, slots=True)
class Failure:
    """A failure as a value: what kind, and the words for `thumbd status` and the log."""

    kind: FailKind
    reason: str


@dataclass(frozen=True, slots=True)
class Thumbnail:
    width: int  # the configured width (a named size's box width)
    size: tuple[int, int]  # its real pixel size
    ext: str  # "jpg", "png", "webp", "avif" or "gif"
    data: bytes
    label: str = ""  # what it is named after: `<stem>_<label>.<ext>`; the width by default
    frames: int = 1

    @property
    def name(self) -> str:
        return self.label or str(self.width)


@dataclass(frozen=True, slots=True)
class RenderResult:
    """The outcome of one render: thumbnails, or a failure with a kind and a reason."""

    signature: Signature | None  # fstat of the file actually read
    source_size: tuple[int, int] | None  # upright pixel size of the source
    thumbnails: tuple[Thumbnail, ...] = ()
    failure: Failure | None = None
    cpu_seconds: float = 0.0
    index: bytes | None = None  # `<stem>.json` ([thumbnails] index = true)
    # What the decoder learnt that the daemon or the index needs: {"kind": "video",
    # "duration": 2.9, ...} for a clip, {"kind": "raw", ...}, {"motion_photo": True}.
    facts: Mapping[str, object] = field(default_factory=dict)
    # What the decoders printed on fd 2 or warned while rendering (a local worker captures
    # them, executors/worker.py), one line each: the daemon logs them as records of the source.
    said: tuple[str, ...] = ()
    digest: str | None = None  # BLAKE3 of the source's bytes (render/digest.py), or None

    @property
    def ok(self) -> bool:
        return self.failure is None

    @property
    def error(self) -> str | None:
        """The failure's reason, or None."""
        return None if self.failure is None else self.failure.reason
