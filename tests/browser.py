"""Headless Chromium for tests: a page's DOM after its scripts ran, its console, a screenshot.

Debian's `chromium` (installed by `make system-deps`) runs headless as root with --no-sandbox.
Each run gets a profile of its own (two tests at once must not share one: a second Chromium on a
profile hands its URL to the first and exits). --virtual-time-budget lets timers, image loads
and fetches run to completion without waiting for them in real time.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None,
    reason="chromium is not installed (`make system-deps` installs Debian's chromium)",
)

_CONSOLE = re.compile(r":CONSOLE[:(]\d*\)?\] (.*)$")
# What a page that works never makes Chromium say: an exception, a blocked script or resource.
_PROBLEMS = ("Uncaught", "Content Security Policy", "Failed to load resource", "Refused to")


@dataclass
class Page:
    dom: str  # the document as it was once the time budget ran out
    console: list[str]  # what the page logged to its console, errors included

    @property
    def errors(self) -> list[str]:
        return [line for line in self.console if any(p in line for p in _PROBLEMS)]

    def elements(self, tag: str) -> list[dict[str, str]]:
        """The attributes of every `tag` element, in document order."""
        return [attrs for name, attrs in parse(self.dom).elements if name == tag]

    def text(self) -> str:
        """The document's text (outside script and style), entities decoded."""
        return parse(self.dom).text()


def _run(args: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        command = [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-extensions",
            "--hide-scrollbars",
            f"--user-data-dir={profile}",
            "--enable-logging=stderr",
            "--v=0",
            *args,
        ]
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


def load(url: str, *, size: tuple[int, int] = (1280, 1000), budget_ms: int = 3000) -> Page:
    """Load `url`, let it run for `budget_ms` of virtual time, and return its DOM."""
    r = _run(
        [
            f"--window-size={size[0]},{size[1]}",
            f"--virtual-time-budget={budget_ms}",
            "--dump-dom",
            url,
        ],
        timeout=120,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    console = [m[1] for line in r.stderr.splitlines() if (m := _CONSOLE.search(line))]
    return Page(r.stdout, console)


def screenshot(
    url: str, file: Path, *, size: tuple[int, int] = (1280, 1000), budget_ms: int = 3000
) -> Path:
    """A PNG of `url` as a window of `size` shows it; the path is printed (a test artifact)."""
    r = _run(
        [f"--window-size={size[0]},{size[1]}", f"--virtual-time-budget={budget_ms}",
         f"--screenshot={file}", url],
        timeout=120,
    )  # fmt: skip
    assert r.returncode == 0 and file.exists(), r.stderr[-2000:]
    print(f"screenshot of {url}: {file}")
    return file


class _Parser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict[str, str]]] = []
        self.texts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, {k: v or "" for k, v in attrs}))
        if tag in ("script", "style"):
            self._skip += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style") and self._skip:
            self._skip -= 1

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.texts.append(data)

    def text(self) -> str:
        return " ".join(" ".join(self.texts).split())


def parse(html: str) -> _Parser:
    parser = _Parser()
    parser.feed(html)
    parser.close()
    return parser
