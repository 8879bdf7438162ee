"""The settings fingerprint: what changes a thumbnail changes it, nothing else does."""

from __future__ import annotations

from dataclasses import replace

import pytest

from thumbd.config import SizeConfig, ThumbnailsConfig
from thumbd.render import fingerprint as fp

BASE = ThumbnailsConfig()


def test_it_is_twelve_hex_digits_and_stable() -> None:
    value = fp.fingerprint(BASE)
    assert len(value) == 12 and int(value, 16) >= 0
    assert fp.fingerprint(ThumbnailsConfig()) == value


@pytest.mark.parametrize(
    "change",
    [
        {"widths": (200, 64)},
        {"quality": 84},
        {"format": "webp"},
        {"webp_quality": 81},
        {"avif_quality": 61},
        {"progressive": True},
        {"background": "#000000"},
        {"keep_metadata": ("gps",)},
        {"animated": True},
        {"sharpen": True},
        {"index": True},
        {"size": (SizeConfig(name="sq", width=100, height=100, mode="cover"),)},
    ],
)
def test_a_rendering_setting_changes_it(change: dict[str, object]) -> None:
    assert fp.fingerprint(replace(BASE, **change)) != fp.fingerprint(BASE)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "change",
    [
        {"gallery": True},
        {"on_delete": "remove"},
        {"live_photos": "both"},
        {"widths": (32, 64, 200)},
        {"widths": (200, 200, 64, 32)},
        {"background": " #FFFFFF "},
    ],
)
def test_what_changes_no_thumbnail_does_not(change: dict[str, object]) -> None:
    assert fp.fingerprint(replace(BASE, **change)) == fp.fingerprint(BASE)  # type: ignore[arg-type]


def test_metadata_order_does_not_count() -> None:
    one = replace(BASE, keep_metadata=("gps", "xmp"))
    other = replace(BASE, keep_metadata=("xmp", "gps"))
    assert fp.fingerprint(one) == fp.fingerprint(other)


def test_a_new_revision_changes_it(monkeypatch: pytest.MonkeyPatch) -> None:
    before = fp.fingerprint(BASE)
    fp.fingerprint.cache_clear()
    monkeypatch.setattr(fp, "REVISION", fp.REVISION + 1)
    assert fp.fingerprint(BASE) != before
    fp.fingerprint.cache_clear()
