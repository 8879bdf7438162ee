"""Property-based tests (hypothesis) of the pure parts: configuration, manifests, output names
and the settle rules. Each states what must hold for every input, not for a few picked ones."""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from thumbd.config import Config, ConfigError, load_config
from thumbd.downloads import manifest
from thumbd.intake.settle import Settler
from thumbd.output import names
from thumbd.output.writer import UnsafePath, index_name, plain_key, plain_parts, thumbnail_name

PROPS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# -- configuration ---------------------------------------------------------------------------

SECTIONS = {f.name: f.type for f in dataclasses.fields(Config)}
KEYS = {
    section: [f.name for f in dataclasses.fields(type(getattr(Config(), section)))]
    for section in SECTIONS
    if dataclasses.is_dataclass(getattr(Config(), section))
}

toml_scalar = st.one_of(
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=False, allow_infinity=False, width=32),
    st.booleans(),
    st.text(max_size=12),
    st.sampled_from(["auto", "jpeg", "png", "webp", "remove", "keep", "dask", "local", "json"]),
)
toml_value = st.one_of(toml_scalar, st.lists(toml_scalar, max_size=4))


def _key(section: str) -> st.SearchStrategy[str]:
    other = st.text("abcdefghij_", min_size=1, max_size=8)
    known = KEYS.get(section, [])
    return st.sampled_from(known) | other if known else other


@st.composite
def toml_documents(draw: st.DrawFn) -> str:
    """Mostly well-formed TOML over the real sections and keys, with values of any type;
    sometimes raw text, which is rarely TOML at all."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.text(max_size=200))
    lines = []
    for section in draw(st.lists(st.sampled_from([*KEYS, "nosuch"]), max_size=4, unique=True)):
        lines.append(f"[{section}]")
        for key in draw(st.lists(_key(section), max_size=4, unique=True)):
            lines.append(f"{key} = {json.dumps(draw(toml_value))}")
    return "\n".join(lines) + "\n"


@PROPS
@given(toml_documents())
def test_config_never_raises_anything_but_config_error_naming_the_file(text: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "thumbd.toml"
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
        try:
            config = load_config(path)
        except ConfigError as e:
            assert str(path) in str(e), str(e)
            assert "Traceback" not in str(e)
        else:
            assert isinstance(config, Config)


# -- manifests -------------------------------------------------------------------------------

url_like = st.one_of(
    st.builds(
        lambda scheme, host, path: f"{scheme}://{host}/{path}",
        st.sampled_from(["http", "https", "ftp", "HTTP", ""]),
        st.text(min_size=0, max_size=20),
        st.text(max_size=40),
    ),
    st.text(max_size=60),
)

valid_urls = st.builds(
    lambda scheme, host, path: f"{scheme}://{host}/{path}",
    st.sampled_from(["http", "https"]),
    st.text("abcdefghxyz.-", min_size=1, max_size=12).filter(lambda h: h.strip(".")),
    st.text(
        st.characters(
            blacklist_categories=["Cc", "Cs", "Zs", "Zl", "Zp"], blacklist_characters="#?"
        ),
        max_size=40,
    ),
).filter(lambda u: manifest.check_url(u) is None)


@PROPS
@given(st.lists(st.one_of(url_like, st.just(""), st.just("# note")), max_size=20))
def test_manifest_parse_gives_each_distinct_url_line_one_entry(lines: list[str]) -> None:
    text = "\n".join(lines)
    entries = manifest.parse(text)
    kept = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]
    assert [e.url for e in entries] == list(dict.fromkeys(kept))
    for e in entries:
        assert e.error == manifest.check_url(e.url)
        assert e.error is None or e.error  # a reason is words, never empty


@PROPS
@given(st.binary(max_size=300))
def test_manifest_decode_gives_text_or_a_manifest_error(data: bytes) -> None:
    try:
        text = manifest.decode(data)
    except manifest.ManifestError as e:
        assert "line" in str(e)
    else:
        manifest.parse(text)


@PROPS
@given(valid_urls)
def test_download_stems_are_safe_file_names(url: str) -> None:
    stem = manifest.stem_for(url)
    assert stem and stem == manifest.stem_for(url)
    assert "/" not in stem and "\\" not in stem and "\0" not in stem
    assert ".." not in stem and not stem.startswith(".")
    assert len(stem.encode("utf-8")) <= manifest.MAX_STEM_BYTES


@PROPS
@given(st.lists(valid_urls, max_size=8), st.lists(st.text("abcIMG", max_size=4), max_size=3))
def test_download_names_are_distinct_and_order_free(urls: list[str], taken: list[str]) -> None:
    urls = [u for u in urls if manifest.check_url(u) is None]
    planned = manifest.plan_names(urls, taken)
    assert planned == manifest.plan_names(list(reversed(urls)), taken)
    keys = [s.casefold() for s in planned.values()]
    assert len(set(keys)) == len(keys)
    assert not set(keys) & {t.casefold() for t in taken}


# -- output names ----------------------------------------------------------------------------

segment = st.text(
    st.characters(blacklist_categories=["Cs"], blacklist_characters="/\0"), min_size=1, max_size=12
)
rel_paths = st.lists(segment, min_size=1, max_size=4).map("/".join)
labels = st.lists(
    st.tuples(st.sampled_from(["200", "64", "32", "avatar"]), st.sampled_from(["jpg", "png"])),
    min_size=1,
    max_size=3,
    unique_by=lambda t: t[0],
)


def _inside(root: Path, name: str) -> bool:
    target = os.path.normpath(root / name)
    return target.startswith(str(root) + os.sep)


@PROPS
@given(rel_paths, labels, st.booleans())
def test_output_names_stay_inside_outgoing_and_are_stable(
    rel: str, labels: list[tuple[str, str]], index: bool
) -> None:
    root = Path("/srv/outgoing")
    chosen = names.choose(rel, labels, index, (), {})
    assert chosen == names.choose(rel, labels, index, (), {})
    for name in [*chosen.all, thumbnail_name(rel, 200, "jpg"), index_name(rel)]:
        try:
            parts = plain_parts(name)
        except UnsafePath:
            # the writer refuses it: nothing is written, so nothing lands outside
            assert any(p in ("", ".", "..") for p in name.split("/"))
            continue
        assert ".." not in parts and not name.startswith("/")
        assert _inside(root, name)


file_names = st.text("abcxy.", min_size=1, max_size=6).filter(lambda n: n not in (".", ".."))


@PROPS
@given(
    st.sampled_from(["", "a", "a/b"]),
    st.lists(file_names, min_size=2, max_size=6, unique=True),
    labels,
)
def test_sources_of_one_folder_get_distinct_names(
    folder: str, files: list[str], labels: list[tuple[str, str]]
) -> None:
    """Sources written one after another, each seeing the rows before it, never share a name."""
    rows: dict[str, tuple[str, ...]] = {}
    for f in files:
        rel = f"{folder}/{f}" if folder else f
        try:
            chosen = names.choose(rel, labels, True, (), rows)
        except names.NamesTaken:
            continue  # refused, with a reason: no clash either
        taken = {n for outs in rows.values() for n in outs}
        assert not taken & set(chosen.all), (rel, chosen, rows)
        rows[rel] = chosen.all
        # stable: asked again with its own row, it keeps the same names
        others = {p: o for p, o in rows.items() if p != rel}
        assert names.choose(rel, labels, True, chosen.all, others).all == chosen.all


@PROPS
@given(rel_paths)
def test_plain_key_keeps_the_folder(rel: str) -> None:
    key = plain_key(rel)
    assert key.rpartition("/")[0] == rel.rpartition("/")[0]
    assert rel.startswith(key)


# -- settle rules ----------------------------------------------------------------------------

SETTLE, QUIET = 0.1, 1.0

writes = st.lists(
    st.tuples(st.floats(0.0, 1.5), st.booleans()),  # (seconds after the previous write, closed)
    min_size=1,
    max_size=12,
)


@pytest.fixture(scope="module")
def folder() -> object:
    with tempfile.TemporaryDirectory() as tmp:
        yield Path(tmp)


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(writes)
def test_settler_takes_a_file_only_once_it_stopped_and_soon_after(
    folder: Path, steps: list[tuple[float, bool]]
) -> None:
    """Writes at simulated times, each with its event; the settler is polled at every time it
    asks for. It never takes the file within `settle` of a change of signature, nor while a
    later write comes; and it takes it by settle + quiet after the last write."""
    path = folder / "x.jpg"
    path.write_bytes(b"")
    offset = time.time() - time.monotonic()
    start = time.monotonic()
    s = Settler(str(folder), SETTLE, QUIET)
    t = start
    changes: list[float] = []
    taken: list[float] = []

    def write(at: float, n: int, closed: bool) -> None:
        path.write_bytes(b"x" * (n + 1))
        ns = int((at + offset) * 1e9)
        os.utime(path, ns=(ns, ns))
        changes.append(at)
        s.touch("x.jpg", at, closed=closed)

    def poll_until(limit: float) -> None:
        while (due := s.next_due()) is not None and due <= limit:
            for _rel, _sig in s.pop_ready(due):
                taken.append(due)

    for n, (gap, closed) in enumerate(steps):
        assume(gap >= 0.001)
        poll_until(t + gap - 1e-6)
        t += gap
        write(t, n, closed)
    last = changes[-1]
    poll_until(last + SETTLE + QUIET + 0.05)
    for at in taken:
        before = [c for c in changes if c <= at]
        assert at - before[-1] >= SETTLE - 1e-6, (at, changes)
    assert taken and taken[-1] >= last, (taken, changes)
    assert taken[-1] <= last + SETTLE + QUIET + 0.05, (taken, changes)
