"""Real test images made with Pillow, for unit and integration tests.

Every `make_*` function writes one file to `path` and returns it as a Path, so tests can do
`render(str(make_jpeg(tmp_path / "a.jpg")), spec)`. Images are small (a few hundred pixels) and
deterministic (no randomness without a fixed seed), so tests stay fast and repeatable.

The orientation probe: its upright form is landscape with a red top-left quadrant and blue
everywhere else. `make_orientation_probe` stores it with any EXIF orientation 1-8, pixels laid out
so that applying the orientation gives the upright picture back; `is_upright` checks a thumbnail.
"""

from __future__ import annotations

import io
import random
import struct
import zlib
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter

PathLike = str | Path

RED = (255, 0, 0)
BLUE = (0, 0, 255)
PROBE_SIZE = (320, 200)  # upright size of the orientation probe: landscape on purpose

# What ImageOps.exif_transpose applies to make a stored image upright, by orientation tag.
UPRIGHT_TRANSPOSE: dict[int, Image.Transpose | None] = {
    1: None,
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}

# Its inverse: how to store an upright picture so that the orientation tag restores it. All are
# their own inverse except the two quarter turns, which undo each other.
STORE_TRANSPOSE: dict[int, Image.Transpose | None] = {
    **UPRIGHT_TRANSPOSE,
    6: Image.Transpose.ROTATE_90,
    8: Image.Transpose.ROTATE_270,
}

EXIF_ORIENTATION = 0x0112


# ---------------------------------------------------------------------------------------------
# In-memory pictures


def natural(size: tuple[int, int] = (640, 480), seed: int = 1) -> Image.Image:
    """An RGB picture with smooth areas, edges and fine detail, like a photo (not pure noise).

    Like a photo, the detail is in the brightness and the colour varies smoothly (which is what
    JPEG's chroma subsampling assumes). Good for quality comparisons: pure noise would punish
    any resampler, flat colour none. The content scales with `size`.
    """
    w, h = size
    luma = Image.linear_gradient("L").resize(size)
    draw = ImageDraw.Draw(luma)
    rng = random.Random(seed)
    for _ in range(25):
        x0, y0 = rng.randrange(w), rng.randrange(h)
        x1 = x0 + rng.randrange(w // 20, w // 3 + 1)
        y1 = y0 + rng.randrange(h // 20, h // 3 + 1)
        grey = rng.randrange(256)
        if rng.random() < 0.5:
            draw.ellipse((x0, y0, x1, y1), fill=grey)
        else:
            draw.rectangle((x0, y0, x1, y1), outline=grey, width=max(1, w // 200))
    fractal = Image.effect_mandelbrot(size, (-2.0, -1.2, 0.8, 1.2), 60)
    luma = Image.blend(luma, fractal, 0.3)
    # Soften at the scale of the picture, as a lens would, so it is not aliased at any size.
    luma = luma.filter(ImageFilter.GaussianBlur(max(w, h) / 800))
    cb = Image.linear_gradient("L").transpose(Image.Transpose.ROTATE_90).resize(size)
    cr = Image.radial_gradient("L").resize(size)
    return Image.merge("YCbCr", (luma, cb, cr)).convert("RGB")


def upright_probe(size: tuple[int, int] = PROBE_SIZE) -> Image.Image:
    """The probe as it should look: red top-left quadrant, blue elsewhere."""
    im = Image.new("RGB", size, BLUE)
    ImageDraw.Draw(im).rectangle((0, 0, size[0] // 2 - 1, size[1] // 2 - 1), fill=RED)
    return im


def is_upright(image: Image.Image, tolerance: int = 60) -> bool:
    """True if `image` looks like the upright probe: landscape, red top-left, blue elsewhere.

    Landscape plus one marked corner tells all 8 orientations apart: only the identity keeps
    both the shape and the red corner where they belong.
    """
    rgb = image.convert("RGB")
    w, h = rgb.size
    if w <= h:
        return False
    centres = {
        (w // 4, h // 4): RED,
        (3 * w // 4, h // 4): BLUE,
        (w // 4, 3 * h // 4): BLUE,
        (3 * w // 4, 3 * h // 4): BLUE,
    }
    for xy, want in centres.items():
        got = rgb.getpixel(xy)
        assert isinstance(got, tuple)
        if any(abs(g - e) > tolerance for g, e in zip(got, want, strict=True)):
            return False
    return True


def gradient16(size: tuple[int, int] = (512, 64), mode: str = "I;16") -> Image.Image:
    """A 16-bit horizontal ramp from 0 at the left to 65535 at the right.

    `mode` is "I;16" (little-endian) or "I;16B" (big-endian). Built from bytes because Pillow's
    convert("I;16B") clips values above 255.
    """
    w, h = size
    row = [round(x * 65535 / (w - 1)) for x in range(w)]
    endian = ">" if mode == "I;16B" else "<"
    data = struct.pack(f"{endian}{w}H", *row) * h
    return Image.frombytes(mode, size, data)


def in_mode(mode: str, size: tuple[int, int] = (400, 300)) -> Image.Image:
    """A picture in any of the modes thumbd handles, with visible content (not one flat colour).

    "I" and "I;16*" span the 16-bit range; "F" spans 0.0-1.0; modes with alpha have a fully
    transparent border and an opaque middle.
    """
    base = natural(size)
    if mode in ("RGB", "CMYK", "L", "1"):
        return base.convert(mode)
    if mode == "P":
        return base.quantize(64)
    if mode in ("RGBA", "LA", "PA"):
        return _with_alpha(base, mode)
    if mode.startswith("I;16"):
        return gradient16(size, mode)
    if mode == "I":
        return gradient16(size).convert("I")
    if mode == "F":
        return base.convert("L").convert("F").point(lambda v: v / 255)
    raise ValueError(f"no generator for mode {mode}")


def _with_alpha(base: Image.Image, mode: str) -> Image.Image:
    w, h = base.size
    alpha = Image.new("L", base.size, 0)
    ImageDraw.Draw(alpha).ellipse((w // 8, h // 8, w * 7 // 8, h * 7 // 8), fill=255)
    im = base.quantize(64).convert("PA") if mode == "PA" else base.convert(mode)
    im.putalpha(alpha)
    return im


# ---------------------------------------------------------------------------------------------
# Files


def make_jpeg(
    path: PathLike,
    size: tuple[int, int] = (640, 480),
    *,
    orientation: int | None = None,
    quality: int = 90,
    progressive: bool = False,
    comment: bytes | None = None,
    image: Image.Image | None = None,
) -> Path:
    """A JPEG of `natural(size)` (or `image`), optionally tagged with an EXIF orientation.

    The pixels are stored as given: the tag only says how a viewer should turn them.
    """
    im = image if image is not None else natural(size)
    params: dict[str, object] = {"quality": quality, "progressive": progressive}
    if orientation is not None:
        params["exif"] = _exif_bytes(orientation)
    if comment is not None:
        params["comment"] = comment
    im.save(path, "JPEG", **params)
    return Path(path)


def make_orientation_probe(
    path: PathLike, orientation: int, fmt: str = "JPEG", size: tuple[int, int] = PROBE_SIZE
) -> Path:
    """The probe stored with EXIF `orientation`: applying the orientation makes it upright.

    `fmt` is any Pillow format that stores EXIF (JPEG, MPO, PNG, WEBP, TIFF, AVIF).
    """
    stored = upright_probe(size)
    method = STORE_TRANSPOSE[orientation]
    if method is not None:
        stored = stored.transpose(method)
    params: dict[str, object] = {"exif": _exif_bytes(orientation)}
    if fmt in ("JPEG", "MPO"):
        params["quality"] = 95
    if fmt == "MPO":  # a stereo pair: two frames
        params.update(save_all=True, append_images=[stored])
    stored.save(path, fmt, **params)
    return Path(path)


def _exif_bytes(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = orientation
    return exif.tobytes()


def make_image(path: PathLike, mode: str, fmt: str, size: tuple[int, int] = (400, 300)) -> Path:
    """`in_mode(mode, size)` saved as `fmt` (e.g. make_image(p, "I;16", "PNG"))."""
    in_mode(mode, size).save(path, fmt)
    return Path(path)


def make_mpo(path: PathLike, size: tuple[int, int] = (400, 300)) -> Path:
    """A two-frame MPO (stereo camera): frame 0 is `natural(size)`, frame 1 its mirror image."""
    first = natural(size)
    second = first.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    first.save(path, "MPO", save_all=True, append_images=[second], quality=90)
    return Path(path)


def make_png_alpha(
    path: PathLike, size: tuple[int, int] = (400, 300), *, opaque: bool = False
) -> Path:
    """An RGBA PNG: transparent border and opaque ellipse, or (opaque=True) alpha 255 everywhere."""
    im = natural(size).convert("RGBA") if opaque else _with_alpha(natural(size), "RGBA")
    im.save(path, "PNG")
    return Path(path)


def make_palette_gif(
    path: PathLike,
    size: tuple[int, int] = (300, 200),
    *,
    transparent: bool = True,
    frames: int = 1,
) -> Path:
    """A palette ("P") GIF: left half black (the transparent index with `transparent`).

    With frames > 1 it is animated: frame 0 is red on the right, later frames are green, so a
    test can tell which frame was used.
    """
    pictures = []
    for n in range(frames):
        im = Image.new("P", size, 0)  # index 0: black, or transparent
        im.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0, 0, 0] * 253)
        colour = 1 if n == 0 else 2
        ImageDraw.Draw(im).rectangle((size[0] // 2, 0, size[0] - 1, size[1] - 1), fill=colour)
        pictures.append(im)
    params: dict[str, object] = {"save_all": frames > 1, "append_images": pictures[1:]}
    if transparent:
        params["transparency"] = 0
    if frames > 1:
        params.update(duration=100, loop=0)
    pictures[0].save(path, "GIF", **params)
    return Path(path)


def make_animated_webp(path: PathLike, size: tuple[int, int] = (300, 200)) -> Path:
    """A two-frame WebP: frame 0 red, frame 1 green."""
    frames = [Image.new("RGB", size, RED), Image.new("RGB", size, (0, 255, 0))]
    frames[0].save(
        path, "WEBP", save_all=True, append_images=frames[1:], duration=100, lossless=True
    )
    return Path(path)


def make_png16(path: PathLike, size: tuple[int, int] = (512, 64)) -> Path:
    """A 16-bit grayscale PNG: horizontal ramp 0 (left) .. 65535 (right)."""
    gradient16(size).save(path, "PNG")
    return Path(path)


def make_cmyk_jpeg(path: PathLike, size: tuple[int, int] = (400, 300)) -> Path:
    """A CMYK JPEG (as print workflows make them; Pillow writes the Adobe inverted form)."""
    natural(size).convert("CMYK").save(path, "JPEG", quality=90)
    return Path(path)


def make_truncated_jpeg(
    path: PathLike, size: tuple[int, int] = (640, 480), keep: float = 0.5
) -> Path:
    """A JPEG cut after `keep` of its bytes, as a half-finished copy leaves it."""
    buf = io.BytesIO()
    natural(size).save(buf, "JPEG", quality=90)
    data = buf.getvalue()
    Path(path).write_bytes(data[: int(len(data) * keep)])
    return Path(path)


def make_truncated(
    path: PathLike, fmt: str, size: tuple[int, int] = (640, 480), keep: float = 0.5
) -> Path:
    """Like make_truncated_jpeg, for any format (PNG, GIF, WEBP, TIFF, BMP)."""
    buf = io.BytesIO()
    im = natural(size)
    (im.quantize(64) if fmt == "GIF" else im).save(buf, fmt)
    data = buf.getvalue()
    Path(path).write_bytes(data[: int(len(data) * keep)])
    return Path(path)


def make_garbage(path: PathLike, size: int = 4096, seed: int = 7) -> Path:
    """Random bytes: no image format's signature."""
    Path(path).write_bytes(random.Random(seed).randbytes(size))
    return Path(path)


def make_empty(path: PathLike) -> Path:
    """A zero-byte file, as a writer leaves it between create and the first write."""
    Path(path).write_bytes(b"")
    return Path(path)


def make_png_header(path: PathLike, size: tuple[int, int]) -> Path:
    """A PNG that claims `size` but holds almost no data: tests pixel limits without the memory.

    Only the header is valid; loading it would fail, so a renderer must refuse it first.
    """

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body)
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", size[0], size[1], 8, 2, 0, 0, 0)  # 8-bit RGB
    idat = zlib.compress(b"\x00" * 64)
    data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    Path(path).write_bytes(data)
    return Path(path)


# ---------------------------------------------------------------------------------------------
# Fidelity: colour patches, CMYK variants, HEIF, animations, metadata


def stripes(
    colours: list[tuple[int, ...]], mode: str = "RGB", size: tuple[int, int] = (400, 100)
) -> Image.Image:
    """Vertical stripes of flat colour, left to right, one per entry of `colours`."""
    w, h = size
    im = Image.new(mode, size)
    draw = ImageDraw.Draw(im)
    for i, c in enumerate(colours):
        draw.rectangle((i * w // len(colours), 0, (i + 1) * w // len(colours) - 1, h - 1), fill=c)
    return im


def stripe_centres(size: tuple[int, int], n: int) -> list[tuple[int, int]]:
    w, h = size
    return [((2 * i + 1) * w // (2 * n), h // 2) for i in range(n)]


def make_cmyk_plain_jpeg(path: PathLike, image: Image.Image) -> Path:
    """A CMYK JPEG storing straight (not inverted) values and no Adobe APP14 marker.

    libjpeg always writes the Adobe marker for CMYK and Pillow stores the inverted values Adobe
    uses; so invert first, save, and drop the marker: the file then holds `image` as is.
    """
    from PIL import ImageChops

    buf = io.BytesIO()
    ImageChops.invert(image).save(buf, "JPEG", quality=95)
    Path(path).write_bytes(_without_app14(buf.getvalue()))
    return Path(path)


def has_adobe_marker(data: bytes) -> bool:
    return any(kind == 0xEE and body.startswith(b"Adobe") for kind, body in _segments(data))


def _without_app14(data: bytes) -> bytes:
    out = bytearray(data[:2])
    pos = 2
    for kind, body in _segments(data):
        seg_len = len(body) + 2
        if kind != 0xEE:
            out += data[pos : pos + 2 + seg_len]
        pos += 2 + seg_len
        if kind == 0xDA:
            break
    out += data[pos:]
    return bytes(out)


def _segments(data: bytes) -> list[tuple[int, bytes]]:
    """JPEG marker segments up to and including SOS: (marker byte, body without length)."""
    found, pos = [], 2
    while pos + 4 <= len(data) and data[pos] == 0xFF:
        kind = data[pos + 1]
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        found.append((kind, data[pos + 4 : pos + 2 + length]))
        pos += 2 + length
        if kind == 0xDA:
            break
    return found


def make_heif(
    path: PathLike,
    image: Image.Image | None = None,
    *,
    extra: list[Image.Image] | None = None,
    **params: object,
) -> Path:
    """A HEIC made with pillow-heif; `extra` adds more top-level images after the primary."""
    import pillow_heif

    pillow_heif.register_heif_opener()
    im = image if image is not None else natural((640, 480))
    if extra:
        params.update(save_all=True, append_images=extra)
    im.save(path, "HEIF", quality=90, **params)
    return Path(path)


def make_animated_gif(
    path: PathLike,
    colours: list[tuple[int, int, int]],
    durations: list[int],
    size: tuple[int, int] = (300, 200),
    loop: int | None = 0,
) -> Path:
    """An animated GIF with one flat-colour frame (plus a white square) per colour."""
    frames = []
    for c in colours:
        im = Image.new("RGB", size, c)
        ImageDraw.Draw(im).rectangle((10, 10, 60, 60), fill=(255, 255, 255))
        frames.append(im)
    params: dict[str, object] = {
        "save_all": True,
        "append_images": frames[1:],
        "duration": durations,
    }
    if loop is not None:
        params["loop"] = loop
    frames[0].save(path, "GIF", **params)
    return Path(path)


GPS = {1: "N", 2: (52.0, 31.0, 12.5), 3: "E", 4: (13.0, 24.0, 0.25)}


def make_private_jpeg(path: PathLike, size: tuple[int, int] = (640, 480)) -> Path:
    """A JPEG with everything a phone leaks: GPS, camera, dates, copyright, XMP and a comment."""
    exif = Image.Exif()
    exif[0x010F] = "PhoneMaker"  # Make
    exif[0x0110] = "Phone 15"  # Model
    exif[0x8298] = "(c) Jane Doe"  # Copyright
    exif[0x013B] = "Jane Doe"  # Artist
    exif[0x0112] = 1
    exif[0x8825] = GPS
    exif.get_ifd(0x8769)[0x9003] = "2024:05:01 12:00:00"  # DateTimeOriginal
    xmp = b'<x:xmpmeta xmlns:x="adobe:ns:meta/">secret-xmp-location</x:xmpmeta>'
    natural(size).save(
        path, "JPEG", quality=90, exif=exif.tobytes(), comment=b"secret comment", xmp=xmp
    )
    return Path(path)


def apple_maker_notes(content_id: str, *, tag: int = 0x0011) -> bytes:
    """Maker notes laid out as an iPhone writes them: "Apple iOS", version 1, big-endian, then
    one IFD whose offsets count from the notes' start, holding the content identifier."""
    import struct

    text = content_id.encode() + b"\x00"
    header = b"Apple iOS\x00" + b"\x00\x01" + b"MM"
    offset = len(header) + 2 + 12 + 4  # the count, one entry, the next-IFD offset
    entry = struct.pack(">HHII", tag, 2, len(text), offset)
    return header + struct.pack(">H", 1) + entry + b"\x00\x00\x00\x00" + text


def make_apple_jpeg(path: PathLike, size: tuple[int, int], content_id: str) -> Path:
    """A JPEG carrying an iPhone's content identifier in its maker notes (a Live Photo still)."""
    exif = Image.Exif()
    exif.get_ifd(0x8769)[0x927C] = apple_maker_notes(content_id)
    natural(size).save(path, "JPEG", quality=90, exif=exif.tobytes())
    return Path(path)
