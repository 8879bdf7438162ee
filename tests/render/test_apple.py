"""Apple's content identifier, read from maker notes and container metadata laid out as an
iPhone writes them (render/apple.py)."""

from __future__ import annotations

import struct
from pathlib import Path

from PIL import Image

from tests import images
from thumbd.render import apple

ID = "5A8C3F1E-2B4D-4E6F-8A9B-0C1D2E3F4A5B"


def test_the_identifier_is_read_from_the_maker_notes() -> None:
    assert apple.from_maker_notes(images.apple_maker_notes(ID)) == ID
    assert apple.from_maker_notes(images.apple_maker_notes(ID.lower())) == ID  # canonical


def test_it_is_found_among_other_tags() -> None:
    text = ID.encode() + b"\x00"
    header = b"Apple iOS\x00\x00\x01MM"
    offset = len(header) + 2 + 3 * 12 + 4
    entries = (
        struct.pack(">HHI4s", 0x0001, 9, 1, b"\x00\x00\x00\x0c")  # a number, in place
        + struct.pack(">HHI4s", 0x0008, 2, 3, b"ab\x00\x00")  # a short string, in place
        + struct.pack(">HHII", 0x0011, 2, len(text), offset)
    )
    notes = header + struct.pack(">H", 3) + entries + b"\x00" * 4 + text
    assert apple.from_maker_notes(notes) == ID


def test_anything_else_gives_none() -> None:
    good = images.apple_maker_notes(ID)
    assert apple.from_maker_notes(good[:20]) is None  # cut inside its entry
    assert apple.from_maker_notes(good.replace(b"Apple iOS", b"Nikon\x00iOS")) is None
    assert apple.from_maker_notes(good.replace(b"MM", b"II", 1)) is None
    assert apple.from_maker_notes(images.apple_maker_notes(ID, tag=0x0012)) is None
    assert apple.from_maker_notes(images.apple_maker_notes("not-a-uuid")) is None
    assert apple.from_maker_notes(b"") is None


def test_a_jpeg_carries_it_and_a_plain_one_does_not(tmp_path: Path) -> None:
    root = tmp_path
    with Image.open(images.make_apple_jpeg(root / "live.jpg", (64, 48), ID)) as im:
        assert apple.facts(im) == {"content_id": ID}
    with Image.open(images.make_jpeg(root / "plain.jpg", (64, 48))) as im:
        assert apple.facts(im) == {}


def test_a_clip_carries_it_in_its_quicktime_metadata() -> None:
    assert apple.from_metadata({apple.QUICKTIME_KEY: ID.lower()}) == ID
    assert apple.from_metadata({apple.QUICKTIME_KEY: "garbage"}) is None
    assert apple.from_metadata({"title": ID}) is None


def test_a_heic_still_reports_it_in_the_render_facts(tmp_path: Path) -> None:
    from thumbd.render.pipeline import render
    from thumbd.render.spec import RenderSpec

    exif = Image.Exif()
    exif.get_ifd(0x8769)[0x927C] = images.apple_maker_notes(ID)
    heic = images.make_heif(
        tmp_path / "IMG_1.HEIC", images.natural((320, 240)), exif=exif.tobytes()
    )
    result = render(str(heic), RenderSpec(widths=(64,)))
    assert result.failure is None and result.facts.get("content_id") == ID
    plain = images.make_heif(tmp_path / "IMG_2.HEIC", images.natural((320, 240)))
    assert "content_id" not in render(str(plain), RenderSpec(widths=(64,))).facts
