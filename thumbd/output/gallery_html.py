"""The HTML of one gallery page (`outgoing/<folder>/index.html`), from a folder's listing.

One self-contained file: inline CSS, and one inline script that draws each thumbnail's
ThumbHash placeholder (the decoder is thumbd/render/thumbhash.py's, in JavaScript) and marks
each figure `data-loaded` once its image is there (`data-broken` if it cannot load). Without
script the page works the same, less the placeholders. A Content-Security-Policy in the page
allows that one script (by its hash) and images from the page's own place only.

Names come from a folder listing, that is from whoever named the sources: every one is escaped
for HTML, and percent-encoded in URLs (its bytes, so a name that is not UTF-8 still links).
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from html import escape
from urllib.parse import quote

GALLERY = "index.html"
MARK = '<meta name="generator" content="thumbd gallery">'  # what tells our pages from others

_COLOUR = re.compile(r"#[0-9a-fA-F]{6}")
_THUMBHASH = re.compile(r"[A-Za-z0-9+/]{8,120}={0,2}")


@dataclass(frozen=True, slots=True)
class Shot:
    """One thumbnail file of an item: its name in the folder and its size (height 0: unknown)."""

    file: str
    width: int
    height: int = 0


@dataclass(slots=True)
class Item:
    """One source's thumbnails in a folder, as the listing (and its index, if any) tells."""

    key: str  # the file names' common part: `x` of x_200.jpg, or `x.png` of x.png_200.jpg
    widths: list[Shot] = field(default_factory=list)  # thumbnails made at a width
    named: list[Shot] = field(default_factory=list)  # [[thumbnails.size]] ones
    name: str = ""  # the source's file name, when the index says it
    source_size: tuple[int, int] | None = None
    thumbhash: str | None = None
    colour: str | None = None

    @property
    def shown(self) -> str:
        return self.name or self.key


def page(folder: str, items: Sequence[Item], subfolders: Sequence[str]) -> bytes:
    """The page of `folder` ("" is outgoing/ itself)."""
    parts = folder.split("/") if folder else []
    crumbs = _breadcrumbs(parts)
    nav = _subfolders(subfolders, bool(parts))
    figures = "\n".join(_figure(item) for item in sorted(items, key=_order))
    count = f"{len(items)} thumbnail{'s' if len(items) != 1 else ''}" if items else "no thumbnails"
    where = parts[-1] if parts else "outgoing"
    return (
        "<!DOCTYPE html>\n"
        f'<html lang="en"><head><meta charset="utf-8">\n{MARK}\n'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{text(where)} · {count}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n"
        f'<header><h1>{crumbs}</h1><p class="count">{count}</p></header>\n{nav}\n'
        f'<main class="grid">\n{figures}\n</main>\n<script>{SCRIPT}</script>\n</body></html>\n'
    ).encode()


def _order(item: Item) -> tuple[str, str]:
    return item.shown.casefold(), item.key


def _breadcrumbs(parts: list[str]) -> str:
    """outgoing / a / b, each but the last a link to its page."""
    names = ["outgoing", *parts]
    crumbs = []
    for depth, name in enumerate(names):
        up = len(names) - 1 - depth
        if up == 0:
            crumbs.append(f'<span class="here">{text(name)}</span>')
        else:
            crumbs.append(f'<a href="{"../" * up}{GALLERY}">{text(name)}</a>')
    return ' <span class="sep">/</span> '.join(crumbs)


def _subfolders(subfolders: Sequence[str], has_parent: bool) -> str:
    links = [f'<li><a class="up" href="../{GALLERY}">..</a></li>'] if has_parent else []
    links += [
        f'<li><a class="folder" href="{url(name)}/{GALLERY}">{text(name)}/</a></li>'
        for name in sorted(subfolders, key=lambda n: (n.casefold(), n))
    ]
    return f'<nav><ul class="folders">{"".join(links)}</ul></nav>' if links else ""


def _figure(item: Item) -> str:
    shots = _srcset_shots(item)
    largest = shots[-1] if shots else item.named[0]
    attrs = [f'src="{url(largest.file)}"', f'alt="{text(item.shown)}"', 'loading="lazy"']
    attrs.append('decoding="async"')
    if len(shots) > 1:
        srcset = ", ".join(f"{url(s.file)} {s.width}w" for s in shots)
        attrs += [f'srcset="{srcset}"', f'sizes="{SIZES}"']
    if largest.height:
        attrs += [f'width="{largest.width}"', f'height="{largest.height}"']
    if item.colour is not None and _COLOUR.fullmatch(item.colour):
        attrs.append(f'style="background-color: {item.colour}"')  # until the placeholder
    placeholder = ""
    if item.thumbhash is not None and _THUMBHASH.fullmatch(item.thumbhash):
        placeholder = f' data-thumbhash="{item.thumbhash}"'
    caption = text(item.shown)
    if item.source_size is not None:
        w, h = item.source_size
        caption += f' <span class="dims">{w}×{h}</span>'
    return (
        f'<figure{placeholder}><a class="frame" href="{url(largest.file)}">'
        f"<img {' '.join(attrs)}></a><figcaption>{caption}</figcaption></figure>"
    )


def _srcset_shots(item: Item) -> list[Shot]:
    """The width thumbnails by width, one per distinct width: a source narrower than the
    widths asked for has several at its own width (never upscaled)."""
    by_width: dict[int, Shot] = {}
    for shot in sorted(item.widths, key=lambda s: (s.width, s.file)):
        by_width.setdefault(shot.width, shot)
    return list(by_width.values())


def text(value: str) -> str:
    """A name as HTML text or attribute value: escaped, quotes too; bytes that are not UTF-8
    (kept as surrogates by os.listdir) shown as U+FFFD."""
    return escape(value.encode("utf-8", "surrogateescape").decode("utf-8", "replace"), quote=True)


def url(name: str) -> str:
    """A file name as a relative URL: every byte but letters, digits and `_.-~` escaped, so
    `#`, `?`, `%`, `:` and quotes stay part of the name."""
    return quote(name.encode("utf-8", "surrogateescape"), safe="")


SIZES = "(max-width: 520px) 46vw, 240px"  # what a grid cell takes: the browser picks the width

# The placeholder decoder follows thumbd/render/thumbhash.py's decode() line by line.
SCRIPT = """
(() => {
  const sum = (ac, nx, ny, fx, fy) => {
    let t = 0, j = 0;
    for (let cy = 0; cy < ny; cy++)
      for (let cx = cy ? 0 : 1; cx * ny < nx * (ny - cy); cx++) t += ac[j++] * fx[cx] * fy[cy] * 2;
    return t;
  };
  const decode = (hash) => {
    const h24 = hash[0] | (hash[1] << 8) | (hash[2] << 16), h16 = hash[3] | (hash[4] << 8);
    const lDc = (h24 & 63) / 63, pDc = ((h24 >> 6) & 63) / 31.5 - 1;
    const qDc = ((h24 >> 12) & 63) / 31.5 - 1, lScale = ((h24 >> 18) & 31) / 31;
    const alpha = h24 >> 23, pScale = ((h16 >> 3) & 63) / 63, qScale = ((h16 >> 9) & 63) / 63;
    const landscape = h16 >> 15;
    const lx = Math.max(3, landscape ? (alpha ? 5 : 7) : h16 & 7);
    const ly = Math.max(3, landscape ? h16 & 7 : (alpha ? 5 : 7));
    const aDc = alpha ? (hash[5] & 15) / 15 : 1, aScale = alpha ? (hash[5] >> 4) / 15 : 0;
    let start = alpha ? 6 : 5, n = 0;
    const channel = (nx, ny, scale) => {
      const ac = [];
      for (let cy = 0; cy < ny; cy++)
        for (let cx = cy ? 0 : 1; cx * ny < nx * (ny - cy); cx++, n++)
          ac.push((((hash[start + (n >> 1)] >> ((n & 1) << 2)) & 15) / 7.5 - 1) * scale);
      return ac;
    };
    const lAc = channel(lx, ly, lScale), pAc = channel(3, 3, pScale * 1.25);
    const qAc = channel(3, 3, qScale * 1.25), aAc = alpha ? channel(5, 5, aScale) : [];
    const rx = landscape ? (alpha ? 5 : 7) : hash[3] & 7;
    const ry = landscape ? hash[3] & 7 : (alpha ? 5 : 7);
    const ratio = rx / ry;
    const w = Math.round(ratio > 1 ? 32 : 32 * ratio), h = Math.round(ratio > 1 ? 32 / ratio : 32);
    const rgba = new Uint8ClampedArray(w * h * 4);
    const nfx = Math.max(lx, alpha ? 5 : 3), nfy = Math.max(ly, alpha ? 5 : 3);
    for (let y = 0, i = 0; y < h; y++) {
      const fy = [];
      for (let cy = 0; cy < nfy; cy++) fy.push(Math.cos(Math.PI / h * (y + 0.5) * cy));
      for (let x = 0; x < w; x++, i += 4) {
        const fx = [];
        for (let cx = 0; cx < nfx; cx++) fx.push(Math.cos(Math.PI / w * (x + 0.5) * cx));
        const l = lDc + sum(lAc, lx, ly, fx, fy), p = pDc + sum(pAc, 3, 3, fx, fy);
        const q = qDc + sum(qAc, 3, 3, fx, fy), a = aDc + (alpha ? sum(aAc, 5, 5, fx, fy) : 0);
        const b = l - 2 / 3 * p, r = (3 * l - b + q) / 2, g = r - q;
        [r, g, b, a].forEach((v, k) => {
          rgba[i + k] = Math.floor(Math.max(0, 255 * Math.min(1, v)));
        });
      }
    }
    return [w, h, rgba];
  };
  const placeholder = (figure) => {
    const bytes = Uint8Array.from(atob(figure.dataset.thumbhash), (c) => c.charCodeAt(0));
    const [w, h, rgba] = decode(bytes);
    const canvas = document.createElement("canvas");
    canvas.width = w;
    canvas.height = h;
    canvas.getContext("2d").putImageData(new ImageData(rgba, w, h), 0, 0);
    figure.querySelector("img").style.backgroundImage = `url(${canvas.toDataURL()})`;
  };
  for (const figure of document.querySelectorAll("figure[data-thumbhash]")) {
    try { placeholder(figure); } catch (e) { /* a damaged hash: the plain colour stays */ }
  }
  for (const img of document.querySelectorAll("figure img")) {
    const figure = img.closest("figure");
    const mark = () => { figure.dataset[img.naturalWidth > 0 ? "loaded" : "broken"] = ""; };
    if (img.complete && img.naturalWidth > 0) mark();
    else { img.addEventListener("load", mark); img.addEventListener("error", mark); }
  }
})();
"""
_SCRIPT_HASH = base64.b64encode(hashlib.sha256(SCRIPT.encode()).digest()).decode()
CSP = (
    f"default-src 'none'; script-src 'sha256-{_SCRIPT_HASH}'; style-src 'unsafe-inline'; "
    "img-src 'self' data:; base-uri 'none'; form-action 'none'"
)

_STYLE = """
:root { color-scheme: light dark; --muted: #778; --card: #eef1f5; }
@media (prefers-color-scheme: dark) { :root { --card: #22272e; } }
body { font: 15px/1.4 system-ui, sans-serif; margin: 0 auto; padding: 1rem 1.5rem;
  max-width: 1400px; }
h1 { font-size: 1.3rem; margin: 0; overflow-wrap: anywhere; }
.sep, .count, .dims { color: var(--muted); }
.count { margin: .2rem 0 .8rem; }
ul.folders { list-style: none; padding: 0; margin: 0 0 1rem; display: flex; flex-wrap: wrap;
  gap: .4rem; }
ul.folders a { display: block; padding: .3rem .7rem; border-radius: .4rem; background: var(--card);
  text-decoration: none; overflow-wrap: anywhere; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(180px, 1fr)); gap: 1rem; }
figure { margin: 0; }
.grid { align-items: start; }
.frame { display: block; border-radius: .4rem; overflow: hidden; background: var(--card); }
.frame img { display: block; margin: 0 auto; max-width: 100%; height: auto;
  background: center / cover no-repeat; }
figcaption { font-size: .85rem; margin-top: .3rem; overflow-wrap: anywhere; }
figure[data-broken] .frame { min-height: 4rem; }
"""
