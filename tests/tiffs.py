"""TIFFs that make libtiff (C code, on fd 2) or Pillow (Python warnings) speak while decoding."""

from __future__ import annotations

import struct
from pathlib import Path

from PIL import Image

_COMPRESSION = 259
_WEBP = 50001  # a codec this Pillow's libtiff is built without


def _patched_tag(data: bytearray, tag: int, value: int) -> bytearray:
    """Set a SHORT tag of the first directory of a little-endian TIFF to `value`."""
    first = struct.unpack_from("<I", data, 4)[0]
    (count,) = struct.unpack_from("<H", data, first)
    for i in range(count):
        entry = first + 2 + 12 * i
        if struct.unpack_from("<H", data, entry)[0] == tag:
            struct.pack_into("<H", data, entry + 8, value)
            return data
    raise ValueError(f"no tag {tag}")


def webp_tiff(path: Path) -> Path:
    """An LZW TIFF relabelled as WEBP-compressed: libtiff prints "WEBP compression support is
    not configured." and Pillow says only "decoder error -2"."""
    Image.new("RGB", (64, 64), "red").save(path, compression="tiff_lzw")
    path.write_bytes(_patched_tag(bytearray(path.read_bytes()), _COMPRESSION, _WEBP))
    return path


def bad_lzw_tiff(path: Path) -> Path:
    """An LZW TIFF whose strip is noise: libtiff prints "Using code not yet in table."."""
    Image.new("RGB", (64, 64), "red").save(path, compression="tiff_lzw")
    data = bytearray(path.read_bytes())
    data[10:40] = b"\xff" * 30
    path.write_bytes(data)
    return path


def short_exif_tiff(path: Path) -> Path:
    """A deflate TIFF with its first bytes scrambled: Pillow warns "Corrupt EXIF data"."""
    Image.new("RGB", (64, 64), "red").save(path, compression="tiff_adobe_deflate")
    data = bytearray(path.read_bytes())
    for i in range(10, 60):
        data[i] ^= 0x5A
    path.write_bytes(data)
    return path
