"""What Pillow and its plugins raise for broken or hostile input, as a `Refused` with a kind.

Pillow says what is wrong only in words (and in the exception's type, loosely): this module is
the one place that reads them.
"""

from __future__ import annotations

import re
import struct
import warnings
import zlib
from collections.abc import Iterator
from contextlib import contextmanager

from PIL import Image, PngImagePlugin, UnidentifiedImageError

from thumbd.render import encode
from thumbd.render.source import Refused
from thumbd.render.spec import FailKind

# What Pillow raises for broken or hostile input, in its parsers and decoders. Image.open itself
# treats SyntaxError, IndexError, TypeError and struct.error as "not this format".
INPUT_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    SyntaxError,
    EOFError,
    ValueError,
    struct.error,
    zlib.error,
    IndexError,
    KeyError,
    TypeError,
    ZeroDivisionError,
    OverflowError,
    RuntimeError,  # Pillow's AVIF decoder and pillow-heif report corrupt data this way
)


@contextmanager
def refusing_input_errors(max_pixels: int, formats: tuple[str, ...]) -> Iterator[None]:
    """Turn what Pillow raises for bad files into Refused; Pillow's bomb warning is an error.
    `formats` are the ones tried, for the words when none claims the file.

    catch_warnings restores the filters on exit, so nothing global changes (it is not
    thread-safe, which is fine: workers are processes and render() runs one file at a time).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            yield
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
            raise Refused(FailKind.TOO_LARGE, _too_large_for_pillow(e, max_pixels)) from e
        except UnidentifiedImageError as e:
            raise Refused(
                FailKind.UNIDENTIFIED,
                "cannot identify image file (not one of: " + ", ".join(formats) + ")",
            ) from e
        except MemoryError as e:
            raise Refused(FailKind.OUT_OF_MEMORY, "out of memory decoding the image") from e
        except encode.TooLarge as e:
            raise Refused(FailKind.TOO_LARGE, str(e)) from e
        except INPUT_ERRORS as e:
            raise Refused(*describe(e)) from e


_BOMB_MESSAGE = re.compile(r"\((\d+) pixels\) exceeds limit of (\d+) pixels")


def _too_large_for_pillow(e: Exception, max_pixels: int) -> str:
    """Pillow checks the size inside Image.open, before we see it: report it our way."""
    found = _BOMB_MESSAGE.search(str(e))
    if found is None:
        return f"too large: {e}"
    pixels, limit = int(found[1]), int(found[2])
    if pixels > max_pixels:
        return f"too large: {pixels} pixels exceeds max_pixels {max_pixels}"
    return f"too large: {pixels} pixels exceeds Pillow's decompression bomb limit {limit}"


def describe(e: BaseException) -> tuple[FailKind, str]:
    """The kind and words for what a decoder raised (Pillow says it only in words)."""
    text = str(e) if isinstance(e, OSError | SyntaxError) else f"{type(e).__name__}: {e}"
    lowered = text.lower()
    if isinstance(e, EOFError) or "truncated" in lowered:
        return FailKind.TRUNCATED, "image file is truncated"
    if "max_text_chunk" in lowered or "memory used in text chunks" in lowered:
        limit = PngImagePlugin.MAX_TEXT_MEMORY // 2**20
        return (
            FailKind.TOO_LARGE,
            f"too large: PNG text chunks (metadata) over {limit} MB decompressed",
        )
    if "not available" in lowered or "unsupported" in lowered or "unknown raw mode" in lowered:
        return FailKind.UNSUPPORTED, f"unsupported format: {text}"
    return FailKind.UNDECODABLE, f"cannot decode image: {text}"
