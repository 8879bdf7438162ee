"""Manifest parsing and download names: pure functions, so plain unit tests."""

from __future__ import annotations

import random

import pytest

from thumbd.downloads.manifest import (
    MAX_MANIFEST_BYTES,
    MAX_STEM_BYTES,
    ManifestError,
    check_url,
    decode,
    folder_for,
    parse,
    plan_names,
    stem_for,
)


def test_blank_lines_comments_and_duplicates_are_skipped() -> None:
    text = "\ufeff# photos\r\n\r\n  http://a.example/1.jpg  \r\nhttp://a.example/1.jpg\n\t\n#x\nftp://b/2\n"
    entries = parse(decode(text.encode("utf-8")))
    assert [(e.line, e.url) for e in entries] == [(3, "http://a.example/1.jpg"), (7, "ftp://b/2")]
    assert entries[0].error is None
    assert entries[1].error == "unsupported scheme: ftp (only http and https)"


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://a.example/x.jpg", None),
        ("HTTPS://A.example:8443/x.jpg?size=l#frag", None),
        ("http://[::1]:8080/x.jpg", None),
        ("http://bücher.example/x.jpg", None),
        ("file:///etc/passwd", "unsupported scheme: file"),
        ("ftp://a.example/x.jpg", "unsupported scheme: ftp"),
        ("javascript:alert(1)", "unsupported scheme: javascript"),
        ("garbage", "not a URL"),
        ("www.example.com/x.jpg", "not a URL (it must start with http:// or https://)"),
        ("http:x.jpg", "not a URL (no host)"),
        ("http://a.example/a b.jpg", "not a URL (contains spaces"),
        ("http://a.example:99999/x.jpg", "not a URL"),
        ("http://user:pw@a.example/x.jpg", "user names and passwords"),
        ("http://a.example/" + "x" * 9000, "not a URL (longer than 8192"),
    ],
)
def test_urls_that_cannot_be_fetched_say_why(url: str, reason: str | None) -> None:
    got = check_url(url)
    if reason is None:
        assert got is None
    else:
        assert got is not None and got.startswith(reason), got


def test_a_manifest_that_is_not_utf8_or_too_large_is_refused() -> None:
    with pytest.raises(ManifestError, match=r"not UTF-8 text \(line 2\)"):
        decode(b"http://a.example/1.jpg\nhttp://a.example/caf\xe9.jpg\n")
    with pytest.raises(ManifestError, match="larger than"):
        decode(b"#" * (MAX_MANIFEST_BYTES + 1))


@pytest.mark.parametrize(
    ("url", "stem"),
    [
        ("http://h/a/photo.jpg", "photo"),
        ("http://h/a/photo.JPEG?w=200", "photo"),
        ("http://h/dl/..%2F..%2Fetc%2Fx.jpg", "etc_x"),
        ("http://h/a/b/../../etc/x.jpg", "x"),
        ("http://h/a/%2E%2E", "a"),
        ("http://h/.hidden.jpg", "hidden"),
        ("http://h/%00%0Aevil%7F.png", "evil"),
        ("http://h/a%5Cb%3Ac.jpg", "a_b_c"),
        ("http://h/-rf.jpg", "rf"),
        ("http://h/caf%C3%A9.jpg", "café"),
        ("http://h/", "image"),
        ("http://h/..", "image"),
        ("http://h/photos/", "photos"),
        ("http://h/archive.tar.gz", "archive.tar"),
    ],
)
def test_stems_are_safe(url: str, stem: str) -> None:
    assert stem_for(url) == stem


def test_long_names_are_bounded_in_bytes() -> None:
    for char in ("a", "é", "語", "😀"):
        stem = stem_for(f"http://h/{char * 400}.jpg")
        assert 0 < len(stem.encode()) <= MAX_STEM_BYTES
        assert stem == char * len(stem)  # cut at a character, never inside one


def test_names_are_distinct_and_do_not_depend_on_order() -> None:
    urls = [
        "http://a.example/x/photo.jpg",
        "http://b.example/y/photo.jpg",
        "http://c.example/Photo.png",  # would clash on a case-insensitive disk, and in outgoing/
        "http://d.example/other.jpg",
    ]
    names = plan_names(urls)
    assert len(set(names.values())) == 4
    assert names["http://d.example/other.jpg"] == "other"
    assert all(names[u].lower().startswith("photo-") for u in urls[:3])
    rnd = random.Random(5)
    for _ in range(10):
        shuffled = urls[:]
        rnd.shuffle(shuffled)
        assert plan_names(shuffled) == names


def test_a_name_taken_by_an_earlier_download_is_not_reused() -> None:
    names = plan_names(["http://a.example/photo.jpg"], taken=["PHOTO"])
    assert names["http://a.example/photo.jpg"].startswith("photo-")


def test_the_folder_is_the_manifest_without_its_suffix() -> None:
    assert folder_for("shop/spring.urls") == "shop/spring"
    assert folder_for("A.URLS") == "A"
