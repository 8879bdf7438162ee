"""URL manifests: what a `.urls` file lists, and the names its downloads get. Pure: no I/O.

`incoming/<dir>/<name>.urls` (UTF-8, one URL per line, blank lines and `#` comments ignored)
behaves as if its images had been dropped into `incoming/<dir>/<name>/`. Every line gets an
outcome: a line that is not an http(s) URL is an entry with an error, recorded as failed with
that reason, so a typo shows up in `thumbd status` instead of vanishing.

A download's file name comes from the last segment of its URL's path, made safe (no separators,
no `..`, no leading dot, no control characters, bounded length); the extension is added later
from the bytes actually received. Names are a function of the URLs alone, never of the order in
which downloads finish, so a restart gives every URL the same name again.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import PurePosixPath
from urllib.parse import unquote, urlsplit

import idna

SUFFIX = ".urls"
MAX_MANIFEST_BYTES = 16_000_000  # about 100,000 URLs; anything larger is a mistake
MAX_URL_LENGTH = 8192
MAX_STEM_CHARS = 100
MAX_STEM_BYTES = 150  # leaves room for a hash, `_<width>.<ext>` and the 255-byte name limit
SCHEMES = ("http", "https")
FALLBACK_STEM = "image"

# Characters that are separators or special somewhere (Windows shares, shells): never in a name.
_UNSAFE = re.compile(r'[/\\:*?"<>|]')
_EXTENSION = re.compile(r"\.[A-Za-z0-9]{1,5}$")


class ManifestError(Exception):
    """The manifest as a whole cannot be read (not UTF-8, too large): says why."""


@dataclass(frozen=True, slots=True)
class Entry:
    line: int  # 1-based line number in the manifest
    url: str  # the line as written, stripped
    error: str | None = None  # why it cannot be fetched, or None


def folder_for(rel: str) -> str:
    """`a/b.urls` -> `a/b`: the folder (relative to incoming/) its downloads go into."""
    return rel[: -len(SUFFIX)] if rel.lower().endswith(SUFFIX) else rel


def decode(data: bytes) -> str:
    """The manifest's text, or ManifestError naming the first line that is not UTF-8."""
    if len(data) > MAX_MANIFEST_BYTES:
        raise ManifestError(f"manifest larger than {MAX_MANIFEST_BYTES // 1_000_000} MB")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise ManifestError(f"not UTF-8 text (line {line})") from None


def parse(text: str) -> list[Entry]:
    """One entry per distinct URL line, in file order; blank lines and `#` comments skipped."""
    entries: list[Entry] = []
    seen: set[str] = set()
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#") or line in seen:
            continue
        seen.add(line)
        entries.append(Entry(number, line, check_url(line)))
    return entries


def check_url(url: str) -> str | None:
    """Why `url` cannot be downloaded, or None. Says it the way a person would."""
    if len(url) > MAX_URL_LENGTH:
        return f"not a URL (longer than {MAX_URL_LENGTH} characters)"
    if any(c.isspace() or unicodedata.category(c) == "Cc" for c in url):
        return "not a URL (contains spaces or control characters)"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:
        why = str(e)
        return f"not a URL ({why[:1].lower()}{why[1:]})"
    if not parts.scheme:
        return "not a URL (it must start with http:// or https://)"
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        return f"unsupported scheme: {scheme} (only http and https)"
    if not parts.hostname:
        return "not a URL (no host)"
    if parts.username is not None or parts.password is not None:
        return "user names and passwords in URLs are not supported"
    if port == 0:
        return "not a URL (port 0)"
    try:
        host_ascii(parts.hostname)
    except UnicodeError:
        return f"not a URL (bad host name {parts.hostname!r})"
    return None


def host_ascii(host: str) -> str:
    """The host as it goes on the wire: international names in IDNA 2008 with UTS 46 mapping,
    as browsers send them (`faß.de` is `xn--fa-hia.de`; Python's own `idna` codec, IDNA 2003,
    would make it `fass.de`, another domain). Raises UnicodeError for a name IDNA refuses."""
    return host if host.isascii() else idna.encode(host, uts46=True).decode("ascii")


def stem_for(url: str) -> str:
    """A safe file stem from the last non-empty segment of the URL's path (no extension)."""
    segments = [s for s in urlsplit(url).path.split("/") if s]
    for segment in reversed(segments):
        stem = _safe_stem(unquote(segment, errors="replace"))
        if stem:
            return stem
    return FALLBACK_STEM


def _safe_stem(name: str) -> str:
    name = unicodedata.normalize("NFC", name)
    name = "".join("_" if unicodedata.category(c).startswith("C") else c for c in name)
    name = _UNSAFE.sub("_", name)
    name = re.sub(r"\.{2,}", ".", name).strip(" ._-")
    name = _EXTENSION.sub("", name).rstrip(" ._-")
    return _bounded(name).rstrip(" ._-")


def _bounded(name: str) -> str:
    name = name[:MAX_STEM_CHARS]
    while len(name.encode("utf-8")) > MAX_STEM_BYTES:
        name = name[:-1]
    return name


def url_hash(url: str, length: int = 8) -> str:
    return hashlib.sha256(url.encode("utf-8")).hexdigest()[:length]


def plan_names(urls: Iterable[str], taken: Iterable[str] = ()) -> dict[str, str]:
    """A distinct stem for every URL, derived from the URLs only (not their order).

    URLs whose safe stems clash (case-insensitively: thumbnails of `Photo.png` and `photo.jpg`
    would clash too), or clash with a stem already `taken` by an earlier download in the same
    folder, all get `-<hash of the URL>` appended; the others keep their plain stem.
    """
    urls = sorted(set(urls))
    taken_keys = {t.casefold() for t in taken}
    plain = {u: stem_for(u) for u in urls}
    count: dict[str, int] = {}
    for stem in plain.values():
        count[stem.casefold()] = count.get(stem.casefold(), 0) + 1
    names: dict[str, str] = {}
    used = set(taken_keys)
    for u in urls:
        stem = plain[u]
        key = stem.casefold()
        if count[key] == 1 and key not in taken_keys:
            names[u] = stem
            used.add(key)
    for u in urls:
        if u not in names:
            names[u] = _hashed(u, plain[u], used)
            used.add(names[u].casefold())
    return names


def _hashed(url: str, stem: str, used: set[str]) -> str:
    for length in (8, 16, 64):
        candidate = f"{stem}-{url_hash(url, length)}"
        if candidate.casefold() not in used:
            return candidate
    return f"{stem}-{url_hash(url, 64)}"  # the same URL twice; parse() already dropped those


def file_stem(name: str) -> str:
    """The stem of a recorded download's file name (`a/b/photo.jpg` -> `photo`)."""
    return PurePosixPath(name).stem
