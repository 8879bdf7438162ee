"""ThumbHash: a ~25-byte placeholder a web page can show while the thumbnail loads.

A port of Evan Wallace's reference encoder and decoder (github.com/evanw/thumbhash, MIT): the
average colour, the aspect ratio and a few DCT terms of luminance, two chroma channels and
alpha. The PyPI ports are unmaintained since 2023, and the algorithm is small; this version
computes the DCT one axis at a time, so a 100x100 input costs milliseconds in pure Python.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

MAX_SIDE = 100  # the reference refuses larger inputs: more pixels add nothing


def _round(v: float) -> int:
    """JavaScript's Math.round (halves up), which the reference uses; Python's rounds to even."""
    return math.floor(v + 0.5)


def encode(w: int, h: int, rgba: Sequence[int]) -> bytes:
    """The ThumbHash of a w x h image given as RGBA bytes (row by row)."""
    if not (0 < w <= MAX_SIDE and 0 < h <= MAX_SIDE):
        raise ValueError(f"{w}x{h} does not fit in {MAX_SIDE}x{MAX_SIDE}")
    n = w * h
    alpha = [rgba[i * 4 + 3] / 255 for i in range(n)]
    avg_a = sum(alpha)
    avg = [0.0, 0.0, 0.0]
    for i in range(n):
        for c in range(3):
            avg[c] += alpha[i] / 255 * rgba[i * 4 + c]
    if avg_a:
        avg = [v / avg_a for v in avg]

    has_alpha = avg_a < n
    l_limit = 5 if has_alpha else 7  # fewer luminance terms when alpha needs the room
    lx = max(1, _round(l_limit * w / max(w, h)))
    ly = max(1, _round(l_limit * h / max(w, h)))

    # RGBA -> LPQA, composited over the average colour.
    lum, p, q = [0.0] * n, [0.0] * n, [0.0] * n
    for i in range(n):
        a = alpha[i]
        r, g, b = (avg[c] * (1 - a) + a / 255 * rgba[i * 4 + c] for c in range(3))
        lum[i] = (r + g + b) / 3
        p[i] = (r + g) / 2 - b
        q[i] = r - g

    l_dc, l_ac, l_scale = _encode_channel(lum, w, h, max(3, lx), max(3, ly))
    p_dc, p_ac, p_scale = _encode_channel(p, w, h, 3, 3)
    q_dc, q_ac, q_scale = _encode_channel(q, w, h, 3, 3)

    landscape = w > h
    header24 = (
        _round(63 * l_dc)
        | (_round(31.5 + 31.5 * p_dc) << 6)
        | (_round(31.5 + 31.5 * q_dc) << 12)
        | (_round(31 * l_scale) << 18)
        | (int(has_alpha) << 23)
    )
    header16 = (
        (ly if landscape else lx)
        | (_round(63 * p_scale) << 3)
        | (_round(63 * q_scale) << 9)
        | (int(landscape) << 15)
    )
    head = [header24 & 255, (header24 >> 8) & 255, header24 >> 16, header16 & 255, header16 >> 8]
    channels = [l_ac, p_ac, q_ac]
    if has_alpha:
        a_dc, a_ac, a_scale = _encode_channel(alpha, w, h, 5, 5)
        head.append(_round(15 * a_dc) | (_round(15 * a_scale) << 4))
        channels.append(a_ac)
    factors = [f for ac in channels for f in ac]
    body = [0] * ((len(factors) + 1) // 2)
    for i, f in enumerate(factors):
        body[i >> 1] |= _round(15 * f) << ((i & 1) << 2)
    return bytes(head + body)


def _encode_channel(
    channel: list[float], w: int, h: int, nx: int, ny: int
) -> tuple[float, list[float], float]:
    """DC term, AC terms normalised to 0..1, and their scale."""
    terms = [(cx, cy) for cy in range(ny) for cx in range(nx) if cx * ny < nx * (ny - cy)]
    cos_x = [[math.cos(math.pi / w * cx * (x + 0.5)) for x in range(w)] for cx in range(nx)]
    cos_y = [[math.cos(math.pi / h * cy * (y + 0.5)) for y in range(h)] for cy in range(ny)]
    rows = [channel[y * w : (y + 1) * w] for y in range(h)]
    # Sum along x first: by_x[cx][y] = sum_x channel[x, y] * cos_x[cx][x].
    by_x = [
        [sum(v * c for v, c in zip(row, cos_x[cx], strict=True)) for row in rows]
        for cx in range(nx)
    ]
    dc, ac, scale = 0.0, [], 0.0
    for cx, cy in terms:
        f = sum(v * c for v, c in zip(by_x[cx], cos_y[cy], strict=True)) / (w * h)
        if cx or cy:
            ac.append(f)
            scale = max(scale, abs(f))
        else:
            dc = f
    if scale:
        ac = [0.5 + 0.5 / scale * f for f in ac]
    return dc, ac, scale


def decode(thumbhash: bytes) -> tuple[int, int, bytes]:
    """(w, h, RGBA bytes) of the placeholder image, at most 32 px on its longer side."""
    header24 = thumbhash[0] | (thumbhash[1] << 8) | (thumbhash[2] << 16)
    header16 = thumbhash[3] | (thumbhash[4] << 8)
    l_dc = (header24 & 63) / 63
    p_dc = ((header24 >> 6) & 63) / 31.5 - 1
    q_dc = ((header24 >> 12) & 63) / 31.5 - 1
    l_scale = ((header24 >> 18) & 31) / 31
    has_alpha = bool(header24 >> 23)
    p_scale = ((header16 >> 3) & 63) / 63
    q_scale = ((header16 >> 9) & 63) / 63
    landscape = bool(header16 >> 15)
    lx = max(3, (5 if has_alpha else 7) if landscape else header16 & 7)
    ly = max(3, header16 & 7 if landscape else (5 if has_alpha else 7))
    a_dc = (thumbhash[5] & 15) / 15 if has_alpha else 1.0
    a_scale = (thumbhash[5] >> 4) / 15 if has_alpha else 0.0

    nibbles = _Nibbles(thumbhash, 6 if has_alpha else 5)
    l_ac = nibbles.channel(lx, ly, l_scale)
    # Saturation boosted 1.25x to make up for quantisation, as the reference does.
    p_ac = nibbles.channel(3, 3, p_scale * 1.25)
    q_ac = nibbles.channel(3, 3, q_scale * 1.25)
    a_ac = nibbles.channel(5, 5, a_scale) if has_alpha else []

    ratio = aspect_ratio(thumbhash)
    w = _round(32 if ratio > 1 else 32 * ratio)
    h = _round(32 / ratio if ratio > 1 else 32)
    out = bytearray(w * h * 4)
    nfx, nfy = max(lx, 5 if has_alpha else 3), max(ly, 5 if has_alpha else 3)
    for y in range(h):
        fy = [math.cos(math.pi / h * (y + 0.5) * cy) for cy in range(nfy)]
        for x in range(w):
            fx = [math.cos(math.pi / w * (x + 0.5) * cx) for cx in range(nfx)]
            lum = l_dc + _sum_terms(l_ac, lx, ly, fx, fy)
            p = p_dc + _sum_terms(p_ac, 3, 3, fx, fy)
            q = q_dc + _sum_terms(q_ac, 3, 3, fx, fy)
            a = a_dc + (_sum_terms(a_ac, 5, 5, fx, fy) if has_alpha else 0.0)
            b = lum - 2 / 3 * p
            r = (3 * lum - b + q) / 2
            g = r - q
            i = (y * w + x) * 4
            out[i : i + 4] = bytes(int(max(0.0, 255 * min(1.0, v))) for v in (r, g, b, a))
    return w, h, bytes(out)


def _sum_terms(ac: list[float], nx: int, ny: int, fx: list[float], fy: list[float]) -> float:
    total, j = 0.0, 0
    for cy in range(ny):
        fy2 = fy[cy] * 2
        cx = 0 if cy else 1
        while cx * ny < nx * (ny - cy):
            total += ac[j] * fx[cx] * fy2
            cx += 1
            j += 1
    return total


class _Nibbles:
    """Reads the 4-bit AC factors in order, across channels."""

    def __init__(self, data: bytes, start: int) -> None:
        self.data, self.start, self.index = data, start, 0

    def channel(self, nx: int, ny: int, scale: float) -> list[float]:
        ac = []
        for cy in range(ny):
            cx = 0 if cy else 1
            while cx * ny < nx * (ny - cy):
                byte = self.data[self.start + (self.index >> 1)]
                nibble = (byte >> ((self.index & 1) << 2)) & 15
                ac.append((nibble / 7.5 - 1) * scale)
                self.index += 1
                cx += 1
        return ac


def aspect_ratio(thumbhash: bytes) -> float:
    """Width / height of the original, approximately."""
    header = thumbhash[3]
    has_alpha = thumbhash[2] & 0x80
    landscape = thumbhash[4] & 0x80
    lx = (5 if has_alpha else 7) if landscape else header & 7
    ly = header & 7 if landscape else (5 if has_alpha else 7)
    return lx / ly


def average_rgba(thumbhash: bytes) -> tuple[float, float, float, float]:
    """The average colour stored in the hash, each channel 0..1."""
    header = thumbhash[0] | (thumbhash[1] << 8) | (thumbhash[2] << 16)
    lum = (header & 63) / 63
    p = ((header >> 6) & 63) / 31.5 - 1
    q = ((header >> 12) & 63) / 31.5 - 1
    a = (thumbhash[5] & 15) / 15 if header >> 23 else 1.0
    b = lum - 2 / 3 * p
    r = (3 * lum - b + q) / 2
    g = r - q
    return max(0.0, min(1.0, r)), max(0.0, min(1.0, g)), max(0.0, min(1.0, b)), a
