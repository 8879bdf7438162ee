"""Which files thumbd takes, by extension, and which decoder family reads each: stills
(Pillow, pillow-heif), videos (PyAV) and camera RAW (rawpy). Pillow-free, so that intake and
`thumbd status` can tell a source from anything else without loading a decoder.
"""

from __future__ import annotations

import enum

STILL_EXTENSIONS = frozenset(
    {
        ".jpg",
        ".jpeg",
        ".jpe",
        ".jfif",  # JPEG as Chrome and Windows save it
        ".jif",
        ".jfi",
        ".mpo",  # stereo cameras (Fujifilm, the Nintendo 3DS): JPEG frames
        ".png",
        ".apng",
        ".gif",
        ".webp",
        ".tif",
        ".tiff",
        ".bmp",
        ".avif",
        ".heic",
        ".heif",
        ".hif",  # HEIF from Canon, Fujifilm and Sony cameras
    }
)

# What phones, cameras and screen recorders write, and FFmpeg (in PyAV's wheels) reads well;
# decoders/video.py opens them only with the demuxers of these containers.
VIDEO_EXTENSIONS = frozenset(
    {
        ".mp4", ".m4v", ".mov", ".3gp", ".3g2",
        ".mkv", ".webm",
        ".avi",
        ".mts", ".m2ts",  # camcorders (AVCHD); not ".ts": TypeScript sources share it
        ".mpg", ".mpeg", ".vob",
        ".wmv", ".asf",
        ".flv",
        ".ogv",
    }
)  # fmt: skip

RAW_EXTENSIONS = frozenset(
    {
        ".dng",
        ".cr2",
        ".cr3",
        ".nef",
        ".nrw",
        ".arw",
        ".srf",
        ".sr2",
        ".raf",
        ".orf",
        ".rw2",
        ".pef",
        ".srw",
        ".3fr",
        ".erf",
        ".kdc",
        ".dcr",
        ".mrw",
        ".x3f",
    }
)

SOURCE_EXTENSIONS = STILL_EXTENSIONS | VIDEO_EXTENSIONS | RAW_EXTENSIONS

# The stills of an iPhone Live Photo, whose `.MOV` of the same stem is its motion.
LIVE_STILL_EXTENSIONS = frozenset({".heic", ".heif", ".jpg", ".jpeg"})
LIVE_MOTION_EXTENSION = ".mov"


class Family(enum.Enum):
    STILL = "still"
    VIDEO = "video"
    RAW = "raw"


def family(name: str) -> Family | None:
    """The decoder family for a file name, by its extension (any case)."""
    suffix = _suffix(name).lower()
    if suffix in STILL_EXTENSIONS:
        return Family.STILL
    if suffix in VIDEO_EXTENSIONS:
        return Family.VIDEO
    if suffix in RAW_EXTENSIONS:
        return Family.RAW
    return None


def _suffix(name: str) -> str:
    i = name.rfind(".")
    return name[i:] if 0 < i < len(name) - 1 else ""
