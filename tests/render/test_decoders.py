"""The decoder interface: routes by content and by name, and a plugged-in decoder's result."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from PIL import Image

from thumbd.render import decoders
from thumbd.render.decoders import Route, decoder_for, heif, pillow
from thumbd.render.pipeline import render
from thumbd.render.spec import FailKind, RenderSpec

PLUGIN = Route("tests.render.plugin_decoder", frozenset({".tst"}), None)


@pytest.fixture
def plugged(monkeypatch: pytest.MonkeyPatch) -> None:
    """The test decoder routed by the `.tst` extension, before the built-in routes."""
    monkeypatch.setattr(decoders, "ROUTES", (PLUGIN, *decoders.ROUTES))


def jpeg_bytes(size: tuple[int, int] = (300, 200)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, "blue").save(buffer, "JPEG")
    return buffer.getvalue()


def test_a_plugged_in_decoder_renders_and_its_facts_reach_the_index(
    tmp_path: Path, plugged: None
) -> None:
    path = tmp_path / "clip.tst"
    path.write_bytes(b"THUMBDTEST 300 200 ff0000")
    result = render(str(path), RenderSpec(widths=(100,), index=True))
    assert result.error is None, result.error
    assert result.source_size == (300, 200)
    (thumb,) = result.thumbnails
    assert thumb.size == (100, 67)
    r, g, b = Image.open(io.BytesIO(thumb.data)).convert("RGB").getpixel((50, 33))
    assert r > 200 and g < 40 and b < 40
    assert result.index is not None
    source = json.loads(result.index)["source"]
    assert source == {
        "duration_s": 1.5,
        "decoder": "plugin",
        "file": "clip.tst",
        "width": 300,
        "height": 200,
    }


def test_a_decoders_refusal_is_the_result(tmp_path: Path, plugged: None) -> None:
    path = tmp_path / "clip.tst"
    path.write_bytes(b"THUMBDTEST 300 200 refuse")
    result = render(str(path), RenderSpec())
    assert result.failure is not None
    assert result.failure.kind is FailKind.UNSUPPORTED
    assert "the test file says so" in result.failure.reason


def test_a_file_handed_back_is_decoded_by_pillow(tmp_path: Path, plugged: None) -> None:
    path = tmp_path / "clip.tst"
    path.write_bytes(b"THUMBDTEST 300 200 pass")  # not an image Pillow knows
    result = render(str(path), RenderSpec())
    assert result.failure is not None
    assert result.failure.kind is FailKind.UNIDENTIFIED


def test_content_wins_over_the_name(tmp_path: Path) -> None:
    """A JPEG called .heic goes the HEIF way first, is handed back, and renders as a JPEG."""
    path = tmp_path / "photo.heic"
    path.write_bytes(jpeg_bytes())
    result = render(str(path), RenderSpec(widths=(30,)))
    assert result.error is None, result.error
    assert result.source_size == (300, 200)


@pytest.mark.skipif("HEIF" not in pillow.ALLOWED_FORMATS, reason="pillow-heif is not installed")
def test_heif_is_sniffed_by_its_brands_whatever_its_name(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), "red").save(buffer, "HEIF")
    assert decoder_for("photo.jpg", buffer.getvalue()[:64]) is heif.decode
    assert decoder_for("photo.heic", jpeg_bytes()[:64]) is heif.decode  # by name
    assert decoder_for("photo.jpg", jpeg_bytes()[:64]) is pillow.decode
    # An MP4 or MOV is ISO-BMFF too, but not a HEIF still: the video decoder takes it.
    from thumbd.render.decoders import video

    mp4_head = b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom"
    assert decoder_for("clip.mp4", mp4_head) is video.decode
