"""A small ICC profile writer: RGB matrix/TRC profiles and CMYK -> Lab lookup-table profiles.

Pillow ships no ICC profiles and ImageCms can only create sRGB, Lab and XYZ ones. thumbd makes
RGB ones at run time for HEIF that states its primaries in an nclx box, and Adobe RGB for camera
previews tagged so. CMYK images without a profile are read with a profile built from measured
FOGRA39 data (render/profiles/), not with anything made here: the ink model below is off from
those measurements by a mean ΔE2000 of 6 to 7. It stays for the tests, which make CMYK sources
of other printing conditions with it, as they make Adobe RGB, Display P3, ProPhoto and grey ones
with the other writers. Everything here is ICC v2 (ICC.1:2001-04), which LittleCMS reads.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

XY = tuple[float, float]
XYZ = tuple[float, float, float]
Lab = tuple[float, float, float]
Matrix = tuple[XYZ, XYZ, XYZ]

D50: XYZ = (0.9642, 1.0, 0.8249)
D65_XY: XY = (0.3127, 0.3290)
D50_XY: XY = (0.3457, 0.3585)

# Bradford cone response matrix and its inverse (for adapting colorants to the D50 PCS).
_BRADFORD: Matrix = (
    (0.8951, 0.2664, -0.1614),
    (-0.7502, 1.7135, 0.0367),
    (0.0389, -0.0685, 1.0296),
)


# ---------------------------------------------------------------------------------------------
# Tone curves


@dataclass(frozen=True, slots=True)
class Gamma:
    """A pure power curve, value ** gamma (Adobe RGB 563/256, ProPhoto 1.8)."""

    gamma: float


@dataclass(frozen=True, slots=True)
class SrgbCurve:
    """The sRGB curve (IEC 61966-2-1): linear toe, then a 2.4 power. Display P3 uses it too."""


Curve = Gamma | SrgbCurve


def _curve_tag(curve: Curve) -> bytes:
    if isinstance(curve, Gamma):
        # curv with one entry: the gamma as u8Fixed8.
        return b"curv" + bytes(4) + struct.pack(">IH", 1, round(curve.gamma * 256))
    # para type 3: Y = (aX + b)^g for X >= d, Y = cX below.
    params = (2.4, 1 / 1.055, 0.055 / 1.055, 1 / 12.92, 0.04045)
    return b"para" + bytes(4) + struct.pack(">HH", 3, 0) + b"".join(_s15(p) for p in params)


# ---------------------------------------------------------------------------------------------
# RGB matrix/TRC profiles


def rgb_profile(
    description: str,
    red: XY,
    green: XY,
    blue: XY,
    white: XY,
    curve: Curve,
) -> bytes:
    """A display profile from primaries, white point and tone curve (chromaticities xy)."""
    colorants = _adapt_to_d50(_rgb_to_xyz(red, green, blue, white), white)
    trc = _curve_tag(curve)
    tags = [
        (b"desc", _desc_tag(description)),
        (b"cprt", _text_tag("No copyright, use freely")),
        (b"wtpt", _xyz_tag(D50)),
        (b"rXYZ", _xyz_tag(_column(colorants, 0))),
        (b"gXYZ", _xyz_tag(_column(colorants, 1))),
        (b"bXYZ", _xyz_tag(_column(colorants, 2))),
        (b"rTRC", trc),
        (b"gTRC", trc),
        (b"bTRC", trc),
    ]
    return _profile(b"mntr", b"RGB ", b"XYZ ", tags)


def adobe_rgb() -> bytes:
    return rgb_profile(
        "Adobe RGB (1998) compatible",
        (0.64, 0.33),
        (0.21, 0.71),
        (0.15, 0.06),
        D65_XY,
        Gamma(563 / 256),
    )


def display_p3() -> bytes:
    return rgb_profile(
        "Display P3 compatible", (0.680, 0.320), (0.265, 0.690), (0.150, 0.060), D65_XY, SrgbCurve()
    )


def prophoto_rgb() -> bytes:
    return rgb_profile(
        "ProPhoto RGB compatible",
        (0.7347, 0.2653),
        (0.1596, 0.8404),
        (0.0366, 0.0001),
        D50_XY,
        Gamma(1.8),
    )


def gray_profile(description: str, curve: Curve) -> bytes:
    """A grey display profile: one tone curve (as Photoshop's Gray Gamma and Dot Gain ones)."""
    tags = [
        (b"desc", _desc_tag(description)),
        (b"cprt", _text_tag("No copyright, use freely")),
        (b"wtpt", _xyz_tag(D50)),
        (b"kTRC", _curve_tag(curve)),
    ]
    return _profile(b"mntr", b"GRAY", b"XYZ ", tags)


def _xy_to_xyz(xy: XY) -> XYZ:
    x, y = xy
    return x / y, 1.0, (1 - x - y) / y


def _rgb_to_xyz(red: XY, green: XY, blue: XY, white: XY) -> Matrix:
    """The RGB -> XYZ matrix whose columns are the primaries scaled to sum to the white."""
    prim = _transpose((_xy_to_xyz(red), _xy_to_xyz(green), _xy_to_xyz(blue)))
    scale = _apply(_inverse(prim), _xy_to_xyz(white))
    return _rows(tuple(tuple(prim[r][c] * scale[c] for c in range(3)) for r in range(3)))


def _adapt_to_d50(m: Matrix, white: XY) -> Matrix:
    src = _apply(_BRADFORD, _xy_to_xyz(white))
    dst = _apply(_BRADFORD, D50)
    gain: Matrix = ((dst[0] / src[0], 0, 0), (0, dst[1] / src[1], 0), (0, 0, dst[2] / src[2]))
    adapt = _mul(_inverse(_BRADFORD), _mul(gain, _BRADFORD))
    return _mul(adapt, m)


# ---------------------------------------------------------------------------------------------
# CMYK lookup-table profiles


@dataclass(frozen=True, slots=True)
class Inks:
    """Measured Lab of paper, solids and overprints: what characterises a printing condition."""

    paper: Lab
    c: Lab
    m: Lab
    y: Lab
    k: Lab
    my: Lab  # red
    cy: Lab  # green
    cm: Lab  # blue
    cmy: Lab
    darkest: Lab  # all four inks: the floor black can darken towards
    tone_gain: float = 0.14  # dot gain at 50 % (ISO 12647-2: about 14 % on coated paper)


# ISO 12647-2 coated paper (FOGRA39), rounded Lab values of its characterisation data: the
# solids of the data, so that the model's corners are right even where its mixes are not.
COATED = Inks(
    paper=(95.0, 0.0, -2.0),
    c=(55.0, -37.0, -50.0),
    m=(48.0, 74.0, -3.0),
    y=(89.0, -5.0, 93.0),
    k=(16.0, 0.0, 0.0),
    my=(47.0, 68.0, 48.0),
    cy=(50.0, -65.0, 27.0),
    cm=(24.0, 22.0, -46.0),
    cmy=(23.0, 0.0, 0.0),
    darkest=(9.0, 0.0, 0.0),
)


def cmyk_profile(description: str, inks: Inks = COATED, grid: int = 9) -> bytes:
    """An output-class CMYK profile whose A2B0 table models `inks` on paper.

    The model is a Yule-Nielsen modified Neugebauer mix of the 16 solid combinations with dot
    gain: it gives a printing condition's character (paler inks on uncoated paper), not its
    measured colour (a mean ΔE2000 of 6.2 from FOGRA39's own data). The table is relative to
    the paper (paper is PCS white), as a viewer shows a print.
    """
    clut = bytearray()
    for xyz in _neugebauer_grid(inks, grid):  # the first channel varies slowest
        clut += _lab16(_xyz_to_lab(xyz))
    lut = (
        b"mft2"
        + bytes(4)
        + struct.pack(">BBBB", 4, 3, grid, 0)
        + b"".join(_s15(v) for v in (1, 0, 0, 0, 1, 0, 0, 0, 1))
        + struct.pack(">HH", 2, 2)
        + struct.pack(">HH", 0, 65535) * 4  # identity input curves
        + bytes(clut)
        + struct.pack(">HH", 0, 65535) * 3  # identity output curves
    )
    tags = [
        (b"desc", _desc_tag(description)),
        (b"cprt", _text_tag("No copyright, use freely")),
        (b"wtpt", _xyz_tag(D50)),
        (b"A2B0", lut),
    ]
    return _profile(b"prtr", b"CMYK", b"Lab ", tags)


def _neugebauer_grid(inks: Inks, grid: int, n: float = 2.0) -> list[XYZ]:
    """XYZ (relative to the paper: paper = D50) at every node of a CMYK grid, C slowest.

    Demichel's weights make the Neugebauer sum a multilinear interpolation of the 16 solid
    combinations (in Yule-Nielsen space, value ** (1/n)), so the grid is filled one ink axis
    at a time instead of summing 16 weighted terms per node.
    """
    corners = _solid_combinations(inks)  # keyed (c, m, y, k), each 0 or 1
    roots = {key: tuple(v ** (1 / n) for v in xyz) for key, xyz in corners.items()}
    steps = [_dot_gain(i / (grid - 1), inks.tone_gain) for i in range(grid)]

    def fill(fixed: tuple[int, ...]) -> list[tuple[float, ...]]:
        """The grid below `fixed` solid ink bits, interpolated along the remaining axes."""
        if len(fixed) == 4:
            return [roots[(fixed[0], fixed[1], fixed[2], fixed[3])]]
        without, with_ = fill((*fixed, 0)), fill((*fixed, 1))
        return [
            tuple(a + (b - a) * t for a, b in zip(lo, hi, strict=True))
            for t in steps
            for lo, hi in zip(without, with_, strict=True)
        ]

    # fill() puts the outermost axis it interpolates (C) slowest.
    return [(r[0] ** n, r[1] ** n, r[2] ** n) for r in fill(())]


def _dot_gain(v: float, gain_at_half: float) -> float:
    return min(1.0, v + gain_at_half * 4 * v * (1 - v))


def _solid_combinations(inks: Inks) -> dict[tuple[int, int, int, int], XYZ]:
    """XYZ of the 16 solid ink combinations, relative to the paper."""
    paper = _lab_to_xyz(inks.paper)

    def relative(lab: Lab) -> XYZ:
        xyz = _lab_to_xyz(lab)
        return (xyz[0] / paper[0] * D50[0], xyz[1] / paper[1] * D50[1], xyz[2] / paper[2] * D50[2])

    white, floor, black = relative(inks.paper), relative(inks.darkest), relative(inks.k)
    cmy = {
        (0, 0, 0): white,
        (1, 0, 0): relative(inks.c),
        (0, 1, 0): relative(inks.m),
        (0, 0, 1): relative(inks.y),
        (0, 1, 1): relative(inks.my),
        (1, 0, 1): relative(inks.cy),
        (1, 1, 0): relative(inks.cm),
        (1, 1, 1): relative(inks.cmy),
    }
    # Black over anything pulls it towards the darkest ink stack, as black over paper does.
    toward = [(b - f) / (w - f) for b, f, w in zip(black, floor, white, strict=True)]
    solids = {(*key, 0): xyz for key, xyz in cmy.items()}
    solids |= {(*key, 1): _lerp3(floor, xyz, toward) for key, xyz in cmy.items()}
    return solids


def _lerp3(a: XYZ, b: XYZ, t: Sequence[float]) -> XYZ:
    return (a[0] + (b[0] - a[0]) * t[0], a[1] + (b[1] - a[1]) * t[1], a[2] + (b[2] - a[2]) * t[2])


# ---------------------------------------------------------------------------------------------
# Colour maths


def _lab_to_xyz(lab: Lab) -> XYZ:
    L, a, b = lab
    fy = (L + 16) / 116
    fx, fz = fy + a / 500, fy - b / 200

    def finv(t: float) -> float:
        return t**3 if t > 6 / 29 else 3 * (6 / 29) ** 2 * (t - 4 / 29)

    return D50[0] * finv(fx), D50[1] * finv(fy), D50[2] * finv(fz)


def _xyz_to_lab(xyz: XYZ) -> Lab:
    def f(t: float) -> float:
        return t ** (1 / 3) if t > (6 / 29) ** 3 else t / (3 * (6 / 29) ** 2) + 4 / 29

    fx, fy, fz = (f(max(0.0, v) / w) for v, w in zip(xyz, D50, strict=True))
    return 116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)


def _lab16(lab: Lab) -> bytes:
    """Lab in the ICC v2 16-bit encoding lut16Type uses (L 100 -> 0xFF00, a/b +128 -> 0x8000)."""
    L, a, b = lab
    values = (L * 65280 / 100, (a + 128) * 256, (b + 128) * 256)
    return struct.pack(">HHH", *(min(65535, max(0, round(v))) for v in values))


def _transpose(m: Matrix) -> Matrix:
    return _rows(tuple(tuple(m[r][c] for r in range(3)) for c in range(3)))


def _rows(rows: tuple[tuple[float, ...], ...]) -> Matrix:
    (a, b, c), (d, e, f), (g, h, i) = rows
    return (a, b, c), (d, e, f), (g, h, i)


def _column(m: Matrix, c: int) -> XYZ:
    return m[0][c], m[1][c], m[2][c]


def _apply(m: Matrix, v: XYZ) -> XYZ:
    return (
        m[0][0] * v[0] + m[0][1] * v[1] + m[0][2] * v[2],
        m[1][0] * v[0] + m[1][1] * v[1] + m[1][2] * v[2],
        m[2][0] * v[0] + m[2][1] * v[1] + m[2][2] * v[2],
    )


def _mul(a: Matrix, b: Matrix) -> Matrix:
    return _rows(
        tuple(tuple(sum(a[r][k] * b[k][c] for k in range(3)) for c in range(3)) for r in range(3))
    )


def _inverse(m: Matrix) -> Matrix:
    (a, b, c), (d, e, f), (g, h, i) = m
    det = a * (e * i - f * h) - b * (d * i - f * g) + c * (d * h - e * g)
    return _rows(
        (
            ((e * i - f * h) / det, (c * h - b * i) / det, (b * f - c * e) / det),
            ((f * g - d * i) / det, (a * i - c * g) / det, (c * d - a * f) / det),
            ((d * h - e * g) / det, (b * g - a * h) / det, (a * e - b * d) / det),
        )
    )


# ---------------------------------------------------------------------------------------------
# Encoding


def _s15(v: float) -> bytes:
    return struct.pack(">i", round(v * 65536))


def _xyz_tag(xyz: XYZ) -> bytes:
    return b"XYZ " + bytes(4) + b"".join(_s15(v) for v in xyz)


def _text_tag(text: str) -> bytes:
    return b"text" + bytes(4) + text.encode("ascii") + b"\0"


def _desc_tag(text: str) -> bytes:
    ascii_ = text.encode("ascii") + b"\0"
    # ASCII part, then empty Unicode and ScriptCode parts (the ScriptCode part is fixed-size).
    return (
        b"desc"
        + bytes(4)
        + struct.pack(">I", len(ascii_))
        + ascii_
        + struct.pack(">II", 0, 0)
        + struct.pack(">HB", 0, 0)
        + bytes(67)
    )


def _pad(data: bytes) -> bytes:
    return data + bytes(-len(data) % 4)


def _profile(device: bytes, space: bytes, pcs: bytes, tags: list[tuple[bytes, bytes]]) -> bytes:
    table_size = 4 + 12 * len(tags)
    offset = 128 + table_size
    entries, blobs, placed = [], [], {}
    for sig, data in tags:
        if data not in placed:  # identical tags (the three TRCs) share one copy
            placed[data] = offset
            blobs.append(_pad(data))
            offset += len(blobs[-1])
        entries.append(sig + struct.pack(">II", placed[data], len(data)))
    body = struct.pack(">I", len(tags)) + b"".join(entries) + b"".join(blobs)
    header = (
        struct.pack(">I", 128 + len(body))
        + b"lcms"
        + struct.pack(">I", 0x02100000)
        + device
        + space
        + pcs
        + struct.pack(">6H", 2024, 1, 1, 0, 0, 0)
        + b"acsp"
        + bytes(4 + 4 + 4 + 4 + 8)  # platform, flags, manufacturer, model, attributes
        + struct.pack(">I", 0)  # rendering intent: perceptual
        + b"".join(_s15(v) for v in D50)
        + b"lcms"
        + bytes(16 + 28)  # profile ID, reserved
    )
    assert len(header) == 128
    return header + body
