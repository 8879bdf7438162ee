"""Kept XMP in linear time: a hostile packet is refused at once, GPS is cut from a large valid
one however its text is laid out (tags in comments, empty elements, attributes)."""

from __future__ import annotations

import time
from pathlib import Path
from xml.etree import ElementTree

from PIL import Image, PngImagePlugin

from tests import images
from tests.render.test_fidelity import XMP_TEMPLATE, decode, ok
from thumbd.render.spec import RenderSpec


def png_with_xmp(path: Path, packet: str) -> Path:
    info = PngImagePlugin.PngInfo()
    info.add_itxt("XML:com.adobe.xmp", packet, zip=False)
    images.natural((320, 240)).save(path, pnginfo=info)
    assert "xmp" in Image.open(path).info  # Pillow hands the packet to the encoder
    return path


def test_an_xmp_packet_of_20000_unclosed_gps_tags_is_dropped_in_well_under_a_second(
    tmp_path: Path,
) -> None:
    unclosed = "".join(f"<exif:GPSLatitude{i}>52,31.208N" for i in range(20_000))
    src = png_with_xmp(
        tmp_path / "hostile.png", XMP_TEMPLATE.format(attributes="", elements=unclosed)
    )
    spec = RenderSpec(widths=(100,), keep_metadata=("xmp",), format="jpeg")
    started = time.process_time()
    (thumb,) = ok(src, spec).thumbnails
    assert time.process_time() - started < 0.5
    assert "xmp" not in decode(thumb).info and b"GPSLatitude" not in thumb.data


def test_gps_in_a_large_valid_packet_is_cut_in_linear_time(tmp_path: Path) -> None:
    # Tags in a comment are text, not properties (they stay); empty-element properties, one
    # right before its parent's end tag, and attributes among others are cut; the rest stays.
    noise = "<!-- " + "<exif:GPSLatitude>" * 20_000 + " -->"
    elements = (
        noise
        + '<exif:GPSAltitude>12</exif:GPSAltitude><exif:Flash exif:GPSDOP="3" exif:Fired="True"/>'
        + '<dc:title><rdf:Alt><rdf:li xml:lang="x-default">kept title<exif:GPSStatus/></rdf:li>'
        + "</rdf:Alt></dc:title><tiff:Orientation/>"
    )
    src = png_with_xmp(tmp_path / "big.png", XMP_TEMPLATE.format(attributes="", elements=elements))
    for keep, gps_kept in ((("xmp",), False), (("xmp", "gps"), True)):
        started = time.process_time()
        (thumb,) = ok(src, RenderSpec(widths=(100,), keep_metadata=keep, format="webp")).thumbnails
        assert time.process_time() - started < 0.5
        packet = decode(thumb).info["xmp"]
        root = ElementTree.fromstring(packet)
        exif = "{http://ns.adobe.com/exif/1.0/}"
        names = {element.tag for element in root.iter()} | {
            name for element in root.iter() for name in element.attrib
        }
        assert {f"{exif}GPSAltitude", f"{exif}GPSDOP", f"{exif}GPSStatus"} <= names or not gps_kept
        assert not any(n.startswith(f"{exif}GPS") for n in names) or gps_kept, keep
        assert f"{exif}Fired" in names and f"{exif}Flash" in names
        assert b"kept title" in packet and b"(c) Jane Doe" in packet
        assert b"Orientation" not in packet
        assert packet.count(b"<exif:GPSLatitude>") == 20_000  # the comment is left as it was
    # A JPEG holds at most 64 KB of XMP: the packet is left out, the thumbnail is made.
    (thumb,) = ok(src, RenderSpec(widths=(100,), keep_metadata=("xmp",), format="jpeg")).thumbnails
    assert "xmp" not in decode(thumb).info
