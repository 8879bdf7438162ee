"""Manifest parsing and download names: pure functions, so plain unit tests."""

from __future__ import annotations

import random

import pytest

from thumbd.downloads.manifest import (
    MAX_MANIFEST_BYTES,
    MAX_STEM_BYTES,
    MAX_URL_LENGTH,
    ManifestError,
    check_url,
    decode,
    file_stem,
    folder_for,
    host_ascii,
    parse,
    plan_names,
    stem_for,
    url_hash,
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


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://a.example:99999/x.jpg", "not a URL (port out of range 0-65535)"),
        ("http://a.example:0/x.jpg", "not a URL (port 0)"),
        ("http://a.example:1/x.jpg", None),
        ("http://user@a.example/x.jpg", "user names and passwords in URLs are not supported"),
        ("http://:pw@a.example/x.jpg", "user names and passwords in URLs are not supported"),
        ("http://a.example/\x7fx.jpg", "not a URL (contains spaces or control characters)"),
        ("http://a.example/x\u200b.jpg", None),  # a format character is no control character
        ("http://a.example/" + "x" * (MAX_URL_LENGTH - 17), None),  # exactly the limit
        ("http://a.example/" + "x" * (MAX_URL_LENGTH - 16), "not a URL (longer than 8192 chara"),
    ],
)
def test_url_reasons_exactly(url: str, reason: str | None) -> None:
    got = check_url(url)
    assert got == reason or (reason is not None and got is not None and got.startswith(reason))


def test_the_size_limit_is_16_mb_exactly() -> None:
    assert decode(b"#" * MAX_MANIFEST_BYTES) == "#" * MAX_MANIFEST_BYTES
    with pytest.raises(ManifestError) as e:
        decode(b"#" * (MAX_MANIFEST_BYTES + 1))
    assert str(e.value) == "manifest larger than 16 MB"


@pytest.mark.parametrize(
    ("url", "stem"),
    [
        ("http://h/a..b.jpg", "a.b"),  # runs of dots become one: never `..`
        ("http://h/photo_.jpg", "photo"),
        ("http://h/Xray-X.jpg", "Xray-X"),
        ("http://h/caf%E9.jpg", "caf\ufffd"),  # not UTF-8: replaced, not refused
        ("http://h/" + "a" * 99 + "_bcd.jpg", "a" * 99),  # cut at 100 characters, then tidied
        ("http://h/" + "a" * 98 + "X_bcd.jpg", "a" * 98 + "X"),
    ],
)
def test_stems_exactly(url: str, stem: str) -> None:
    assert stem_for(url) == stem


def test_a_stem_is_cut_to_the_most_whole_characters_that_fit_150_bytes() -> None:
    for char, fits in (("é", 75), ("語", 50), ("😀", 37)):
        assert stem_for(f"http://h/{char * 80}.jpg") == char * fits
    assert stem_for(f"http://h/{'é' * 75}.jpg") == "é" * 75  # exactly 150 bytes: kept whole


def test_a_clash_gets_8_hex_digits_of_the_urls_sha256_then_more_if_that_is_taken() -> None:
    url = "http://h/photo.jpg"  # sha256: 6400771d006e74bd22e1d427...
    full = "6400771d006e74bd22e1d427345d5055c5b16a783e4caad193ce9621f4d06749"
    assert plan_names([url], taken=["photo"]) == {url: "photo-6400771d"}
    assert plan_names([url], taken=["photo", "Photo-6400771D"]) == {url: "photo-6400771d006e74bd"}
    taken = ["photo", "photo-6400771d", "photo-6400771d006e74bd"]
    assert plan_names([url], taken=taken) == {url: f"photo-{full}"}
    assert plan_names([url], taken=[*taken, f"photo-{full}"]) == {url: f"photo-{full}"}


def test_a_plain_stem_that_looks_like_a_hashed_one_is_not_given_twice() -> None:
    a, b = "http://h/photo.jpg", "http://k/photo.jpg"
    looks = "http://m/photo-6400771d.jpg"  # a's hashed name, as a plain one
    names = plan_names([a, b, looks])
    assert names[looks] == "photo-6400771d"
    assert names[a] == "photo-6400771d006e74bd" and len(set(names.values())) == 3


def test_hosts_go_on_the_wire_in_ascii() -> None:
    assert host_ascii("bücher.example") == "xn--bcher-kva.example"
    assert host_ascii("a..b") == "a..b"  # ASCII as it is: IDNA would refuse the empty label


def test_a_recorded_downloads_stem_and_a_folder_that_is_no_manifest() -> None:
    assert file_stem("a/b/photo.jpg") == "photo"
    assert file_stem("a/b/photo.tar.gz") == "photo.tar"
    assert folder_for("a/b.jpg") == "a/b.jpg"


def test_two_urls_whose_hashes_share_8_hex_digits_get_16() -> None:
    # sha256 3e3bfd1f2f633db4... and 3e3bfd1f64cd3bd5...: the same stem, the same 8 digits
    a, b = "http://h/76136/photo.jpg", "http://h/77001/photo.jpg"
    assert plan_names([a, b]) == {a: "photo-3e3bfd1f", b: "photo-3e3bfd1f64cd3bd5"}


def test_the_url_hash_is_8_hex_digits_of_sha256_unless_asked_for_more() -> None:
    assert url_hash("http://h/photo.jpg") == "6400771d"
    assert url_hash("http://h/photo.jpg", 16) == "6400771d006e74bd"


def test_host_names_are_mapped_as_browsers_map_them() -> None:
    # UTS 46 mapping: capitals and full-width letters, which IDNA 2008 alone refuses
    assert host_ascii("Bücher.example") == "xn--bcher-kva.example"
    assert host_ascii("\uff42ücher.example") == "xn--bcher-kva.example"
    assert host_ascii("faß.de") == "xn--fa-hia.de"  # IDNA 2003 would make it fass.de
