"""What decoders say in a worker comes back as lines, never raw on fd 2, and a better reason."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import tiffs
from thumbd.config import ResizeConfig
from thumbd.executors.local import LocalPool
from thumbd.executors.worker import MAX_LINES, render_captured
from thumbd.render.spec import RenderSpec


def test_libtiffs_own_words_replace_pillows_error_code(tmp_path: Path) -> None:
    result = render_captured(str(tiffs.webp_tiff(tmp_path / "w.tif")), RenderSpec())
    assert result.failure is not None
    assert "WEBP compression support is not configured" in result.failure.reason
    assert "decoder error -2" in result.failure.reason  # kept, after the words
    assert result.said == ("WEBP compression support is not configured.",)  # once, no name


def test_python_warnings_are_lines_too(tmp_path: Path) -> None:
    result = render_captured(str(tiffs.short_exif_tiff(tmp_path / "s.tif")), RenderSpec())
    assert any(line.startswith("UserWarning: Corrupt EXIF data") for line in result.said)


def test_nothing_reaches_fd_2_and_fd_2_is_given_back(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    for make in (tiffs.webp_tiff, tiffs.bad_lzw_tiff, tiffs.short_exif_tiff):
        result = render_captured(str(make(tmp_path / f"{make.__name__}.tif")), RenderSpec())
        assert result.said and len(result.said) <= MAX_LINES
    out, err = capfd.readouterr()
    assert err == "" and out == ""
    os.write(2, b"after\n")
    assert capfd.readouterr().err == "after\n"


@pytest.fixture
def pool(tmp_path: Path) -> Iterator[LocalPool]:
    (tmp_path / "in").mkdir()
    pool = LocalPool(ResizeConfig(workers=1), tmp_path / "in")
    yield pool
    pool.shutdown()


def test_a_real_worker_captures_and_returns_what_libtiff_printed(
    pool: LocalPool, tmp_path: Path
) -> None:
    source = tiffs.bad_lzw_tiff(tmp_path / "in" / "bad.tif")
    result = pool.render(str(source), RenderSpec()).result(timeout=60)
    assert result.failure is not None and "Using code not yet in table" in result.failure.reason
    assert any("Using code not yet in table" in line for line in result.said), result.said
