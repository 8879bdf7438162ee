"""CMYK without a profile, checked against measurement, not against a model.

A CMYK file that carries no ICC profile is read as FOGRA39 (ISO 12647-2 coated paper). These
tests take 162 patches of Fogra's own FOGRA39L measurement data (tests/render/data), make CMYK
files of them with Pillow, render them through thumbd, and turn the sRGB pixels back into CIELAB
with the published formulas written out here (IEC 61966-2-1 for sRGB, the Bradford adaptation to
D50, CIE 15 for Lab, and CIEDE2000 as Sharma, Wu and Dalal 2005 give it, checked with that
paper's test data). Nothing here asks LittleCMS, so a wrong transform cannot agree with itself.

A viewer shows a print relative to its paper: the paper is the screen's white. So the reference
is the measured Lab made media-relative as ICC relative colorimetry defines it (XYZ scaled by
D50 / paper, per component). Patches outside sRGB's gamut (found from the reference alone) clip
on any screen; they are reported apart and not held to the bound.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path

import pytest
from PIL import Image, ImageDraw, ImageStat

from thumbd.render import colour, icc
from thumbd.render.pipeline import render
from thumbd.render.spec import RenderSpec

Lab = tuple[float, float, float]
XYZ = tuple[float, float, float]
Matrix = tuple[XYZ, XYZ, XYZ]
CMYK = tuple[int, int, int, int]

DATA = Path(__file__).parent / "data" / "fogra39-patches.tsv"

# The PCS white (ICC.1: D50 as 16-bit fixed point rounds it) and sRGB's D65 (IEC 61966-2-1).
D50: XYZ = (0.9642, 1.0, 0.8249)
D65: XYZ = (0.9505, 1.0, 1.0890)
# sRGB linear RGB -> XYZ (D65), IEC 61966-2-1 Amendment 1.
SRGB_TO_XYZ: Matrix = (
    (0.4124, 0.3576, 0.1805),
    (0.2126, 0.7152, 0.0722),
    (0.0193, 0.1192, 0.9505),
)
BRADFORD: Matrix = (
    (0.8951, 0.2664, -0.1614),
    (-0.7502, 1.7135, 0.0367),
    (0.0389, -0.0685, 1.0296),
)

# ---------------------------------------------------------------------------------------------
# Colorimetry, from the published equations


def mat_vec(m: Matrix, v: XYZ) -> XYZ:
    x, y, z = (sum(m[r][c] * v[c] for c in range(3)) for r in range(3))
    return x, y, z


def mat_mul(a: Matrix, b: Matrix) -> Matrix:
    r0, r1, r2 = (
        (
            sum(a[r][k] * b[k][0] for k in range(3)),
            sum(a[r][k] * b[k][1] for k in range(3)),
            sum(a[r][k] * b[k][2] for k in range(3)),
        )
        for r in range(3)
    )
    return r0, r1, r2


def mat_inv(m: Matrix) -> Matrix:
    (a, b, c), (d, e, f), (g, h, i) = m
    det = a * (e * i - f * h) - b * (d * i - f * g) + c * (d * h - e * g)
    return (
        ((e * i - f * h) / det, (c * h - b * i) / det, (b * f - c * e) / det),
        ((f * g - d * i) / det, (a * i - c * g) / det, (c * d - a * f) / det),
        ((d * h - e * g) / det, (b * g - a * h) / det, (a * e - b * d) / det),
    )


def bradford(src: XYZ, dst: XYZ) -> Matrix:
    """The Bradford chromatic adaptation from white `src` to white `dst`."""
    s, d = mat_vec(BRADFORD, src), mat_vec(BRADFORD, dst)
    gain: Matrix = ((d[0] / s[0], 0, 0), (0, d[1] / s[1], 0), (0, 0, d[2] / s[2]))
    return mat_mul(mat_inv(BRADFORD), mat_mul(gain, BRADFORD))


# sRGB straight to D50 XYZ, and back: what a D50 Lab reading of the screen's colour means.
SRGB_TO_D50: Matrix = mat_mul(bradford(D65, D50), SRGB_TO_XYZ)
D50_TO_SRGB: Matrix = mat_inv(SRGB_TO_D50)


def srgb_decode(v: float) -> float:
    """IEC 61966-2-1: a 0..1 sRGB value to linear light."""
    return v / 12.92 if v <= 0.04045 else ((v + 0.055) / 1.055) ** 2.4


def xyz_to_lab(xyz: XYZ, white: XYZ = D50) -> Lab:
    """CIE 15: XYZ to CIELAB relative to `white`."""

    def f(t: float) -> float:
        return t ** (1 / 3) if t > (6 / 29) ** 3 else t / (3 * (6 / 29) ** 2) + 4 / 29

    fx, fy, fz = (f(v / w) for v, w in zip(xyz, white, strict=True))
    return 116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)


def lab_to_xyz(lab: Lab, white: XYZ = D50) -> XYZ:
    L, a, b = lab
    fy = (L + 16) / 116
    fx, fz = fy + a / 500, fy - b / 200

    def finv(t: float) -> float:
        return t**3 if t > 6 / 29 else 3 * (6 / 29) ** 2 * (t - 4 / 29)

    return white[0] * finv(fx), white[1] * finv(fy), white[2] * finv(fz)


def srgb_to_lab(rgb: Sequence[float]) -> Lab:
    """An 8-bit sRGB colour as CIELAB under D50."""
    r, g, b = (srgb_decode(v / 255) for v in rgb)
    return xyz_to_lab(mat_vec(SRGB_TO_D50, (r, g, b)))


def in_srgb_gamut(lab: Lab, slack: float = 0.0) -> bool:
    """Whether a D50 Lab colour is inside sRGB: its linear RGB lies in 0..1."""
    return all(-slack <= v <= 1 + slack for v in mat_vec(D50_TO_SRGB, lab_to_xyz(lab)))


def media_relative(lab: Lab, paper: Lab) -> Lab:
    """ICC relative colorimetry: XYZ scaled per component so that the paper becomes D50."""
    xyz, white = lab_to_xyz(lab), lab_to_xyz(paper)
    scaled = (xyz[0] * D50[0] / white[0], xyz[1] * D50[1] / white[1], xyz[2] * D50[2] / white[2])
    return xyz_to_lab(scaled)


def delta_e2000(lab1: Lab, lab2: Lab) -> float:
    """CIEDE2000 (kL = kC = kH = 1), as Sharma, Wu and Dalal 2005 spell it out (eq. 1-19)."""
    L1, a1, b1 = lab1
    L2, a2, b2 = lab2
    c_bar = (math.hypot(a1, b1) + math.hypot(a2, b2)) / 2
    g = 0.5 * (1 - math.sqrt(c_bar**7 / (c_bar**7 + 25**7)))
    a1p, a2p = (1 + g) * a1, (1 + g) * a2
    c1p, c2p = math.hypot(a1p, b1), math.hypot(a2p, b2)
    h1p = math.degrees(math.atan2(b1, a1p)) % 360 if c1p else 0.0
    h2p = math.degrees(math.atan2(b2, a2p)) % 360 if c2p else 0.0

    dLp, dCp = L2 - L1, c2p - c1p
    dhp = 0.0
    if c1p * c2p:
        dhp = h2p - h1p
        if dhp > 180:
            dhp -= 360
        elif dhp < -180:
            dhp += 360
    dHp = 2 * math.sqrt(c1p * c2p) * math.sin(math.radians(dhp / 2))

    Lp_bar, Cp_bar = (L1 + L2) / 2, (c1p + c2p) / 2
    hp_bar = h1p + h2p
    if c1p * c2p:
        if abs(h1p - h2p) <= 180:
            hp_bar = (h1p + h2p) / 2
        elif h1p + h2p < 360:
            hp_bar = (h1p + h2p + 360) / 2
        else:
            hp_bar = (h1p + h2p - 360) / 2
    t = (
        1
        - 0.17 * math.cos(math.radians(hp_bar - 30))
        + 0.24 * math.cos(math.radians(2 * hp_bar))
        + 0.32 * math.cos(math.radians(3 * hp_bar + 6))
        - 0.20 * math.cos(math.radians(4 * hp_bar - 63))
    )
    d_theta = 30 * math.exp(-(((hp_bar - 275) / 25) ** 2))
    r_c = 2 * math.sqrt(Cp_bar**7 / (Cp_bar**7 + 25**7))
    s_l = 1 + 0.015 * (Lp_bar - 50) ** 2 / math.sqrt(20 + (Lp_bar - 50) ** 2)
    s_c = 1 + 0.045 * Cp_bar
    s_h = 1 + 0.015 * Cp_bar * t
    r_t = -math.sin(math.radians(2 * d_theta)) * r_c
    return math.sqrt(
        (dLp / s_l) ** 2 + (dCp / s_c) ** 2 + (dHp / s_h) ** 2 + r_t * (dCp / s_c) * (dHp / s_h)
    )


# Sharma, Wu and Dalal 2005, Table 1: all 34 pairs (L1 a1 b1, L2 a2 b2, ΔE00).
SHARMA_PAIRS = [
    ((50.0000, 2.6772, -79.7751), (50.0000, 0.0000, -82.7485), 2.0425),
    ((50.0000, 3.1571, -77.2803), (50.0000, 0.0000, -82.7485), 2.8615),
    ((50.0000, 2.8361, -74.0200), (50.0000, 0.0000, -82.7485), 3.4412),
    ((50.0000, -1.3802, -84.2814), (50.0000, 0.0000, -82.7485), 1.0000),
    ((50.0000, -1.1848, -84.8006), (50.0000, 0.0000, -82.7485), 1.0000),
    ((50.0000, -0.9009, -85.5211), (50.0000, 0.0000, -82.7485), 1.0000),
    ((50.0000, 0.0000, 0.0000), (50.0000, -1.0000, 2.0000), 2.3669),
    ((50.0000, -1.0000, 2.0000), (50.0000, 0.0000, 0.0000), 2.3669),
    ((50.0000, 2.4900, -0.0010), (50.0000, -2.4900, 0.0009), 7.1792),
    ((50.0000, 2.4900, -0.0010), (50.0000, -2.4900, 0.0010), 7.1792),
    ((50.0000, 2.4900, -0.0010), (50.0000, -2.4900, 0.0011), 7.2195),
    ((50.0000, 2.4900, -0.0010), (50.0000, -2.4900, 0.0012), 7.2195),
    ((50.0000, -0.0010, 2.4900), (50.0000, 0.0009, -2.4900), 4.8045),
    ((50.0000, -0.0010, 2.4900), (50.0000, 0.0010, -2.4900), 4.8045),
    ((50.0000, -0.0010, 2.4900), (50.0000, 0.0011, -2.4900), 4.7461),
    ((50.0000, 2.5000, 0.0000), (50.0000, 0.0000, -2.5000), 4.3065),
    ((50.0000, 2.5000, 0.0000), (73.0000, 25.0000, -18.0000), 27.1492),
    ((50.0000, 2.5000, 0.0000), (61.0000, -5.0000, 29.0000), 22.8977),
    ((50.0000, 2.5000, 0.0000), (56.0000, -27.0000, -3.0000), 31.9030),
    ((50.0000, 2.5000, 0.0000), (58.0000, 24.0000, 15.0000), 19.4535),
    ((50.0000, 2.5000, 0.0000), (50.0000, 3.1736, 0.5854), 1.0000),
    ((50.0000, 2.5000, 0.0000), (50.0000, 3.2972, 0.0000), 1.0000),
    ((50.0000, 2.5000, 0.0000), (50.0000, 1.8634, 0.5757), 1.0000),
    ((50.0000, 2.5000, 0.0000), (50.0000, 3.2592, 0.3350), 1.0000),
    ((60.2574, -34.0099, 36.2677), (60.4626, -34.1751, 39.4387), 1.2644),
    ((63.0109, -31.0961, -5.8663), (62.8187, -29.7946, -4.0864), 1.2630),
    ((61.2901, 3.7196, -5.3901), (61.4292, 2.2480, -4.9620), 1.8731),
    ((35.0831, -44.1164, 3.7933), (35.0232, -40.0716, 1.5901), 1.8645),
    ((22.7233, 20.0904, -46.6940), (23.0331, 14.9730, -42.5619), 2.0373),
    ((36.4612, 47.8580, 18.3852), (36.2715, 50.5065, 21.2231), 1.4146),
    ((90.8027, -2.0831, 1.4410), (91.1528, -1.6435, 0.0447), 1.4441),
    ((90.9257, -0.5406, -0.9208), (88.6381, -0.8985, -0.7239), 1.5381),
    ((6.7747, -0.2908, -2.4247), (5.8714, -0.0985, -2.2286), 0.6377),
    ((2.0776, 0.0795, -1.1350), (0.9033, -0.0636, -0.5514), 0.9082),
]


@pytest.mark.parametrize(("lab1", "lab2", "expected"), SHARMA_PAIRS)
def test_delta_e2000_matches_the_published_test_data(lab1: Lab, lab2: Lab, expected: float) -> None:
    assert delta_e2000(lab1, lab2) == pytest.approx(expected, abs=5e-5)
    assert delta_e2000(lab2, lab1) == pytest.approx(expected, abs=5e-5)  # symmetric


def test_srgb_to_lab_formulas_hold_their_anchors() -> None:
    assert srgb_to_lab((255, 255, 255)) == pytest.approx((100, 0, 0), abs=0.05)  # white -> D50
    assert srgb_to_lab((0, 0, 0)) == pytest.approx((0, 0, 0), abs=1e-9)
    grey = srgb_to_lab((119, 119, 119))  # sRGB 119 is close to L* 50 (Y = 0.184)
    assert grey[0] == pytest.approx(50.0, abs=0.3) and abs(grey[1]) + abs(grey[2]) < 0.1
    # sRGB red under D50 (Bradford), as Lindbloom's calculator gives it: 54.29, 80.80, 69.89.
    assert srgb_to_lab((255, 0, 0)) == pytest.approx((54.29, 80.80, 69.89), abs=0.3)
    assert in_srgb_gamut((50, 0, 0)) and not in_srgb_gamut((55, -70, -50))
    assert media_relative((95.0, 0.0, -2.0), (95.0, 0.0, -2.0)) == pytest.approx((100, 0, 0))


# ---------------------------------------------------------------------------------------------
# The measured patches


def measured_patches() -> list[tuple[CMYK, Lab]]:
    """(CMYK as 8-bit values, absolute measured Lab) of the shipped FOGRA39L subset."""
    out = []
    for line in DATA.read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        _, c, m, y, k, L, a, b = line.split("\t")
        ink = tuple(round(float(v) * 255 / 100) for v in (c, m, y, k))
        out.append(((ink[0], ink[1], ink[2], ink[3]), (float(L), float(a), float(b))))
    return out


PATCHES = measured_patches()
PAPER = PATCHES[0][1]  # patch 1: no ink
REFERENCE = [media_relative(lab, PAPER) for _, lab in PATCHES]
IN_GAMUT = [in_srgb_gamut(lab) for lab in REFERENCE]

# px per patch: 16 so that every patch is whole JPEG blocks (8 x 8) of one colour.
BLOCK = 16
COLUMNS = 18
BOUND = 1.0  # mean ΔE2000 over the in-gamut patches: a just noticeable difference


def test_the_shipped_patches_are_what_the_data_says() -> None:
    assert len(PATCHES) == 162 and PAPER == (95.0, 0.0, -2.0)
    assert PATCHES[0][0] == (0, 0, 0, 0)
    # Most of coated paper's gamut fits sRGB; saturated cyans, greens and blues do not.
    assert 120 < sum(IN_GAMUT) < len(PATCHES)


def patch_chart() -> Image.Image:
    """A CMYK image of the patches as BLOCK-sized squares, COLUMNS to a row, in data order."""
    rows = -(-len(PATCHES) // COLUMNS)
    im = Image.new("CMYK", (COLUMNS * BLOCK, rows * BLOCK), (0, 0, 0, 0))
    draw = ImageDraw.Draw(im)
    for i, (ink, _) in enumerate(PATCHES):
        x, y = (i % COLUMNS) * BLOCK, (i // COLUMNS) * BLOCK
        draw.rectangle((x, y, x + BLOCK - 1, y + BLOCK - 1), fill=ink)
    return im


def read_patches(im: Image.Image) -> list[tuple[float, float, float]]:
    """The mean RGB of each square's middle (half its side), where `patch_chart` put it."""
    rgb = im.convert("RGB")
    inset, side = BLOCK // 4, BLOCK // 2
    out = []
    for i in range(len(PATCHES)):
        x, y = (i % COLUMNS) * BLOCK + inset, (i // COLUMNS) * BLOCK + inset
        r, g, b = (
            ImageStat.Stat(band).mean[0] for band in rgb.crop((x, y, x + side, y + side)).split()
        )
        out.append((r, g, b))
    return out


def deltas(rgb: Sequence[Sequence[float]]) -> tuple[list[float], list[float]]:
    """ΔE2000 of each patch's colour from its reference: (inside sRGB's gamut, outside)."""
    inside: list[float] = []
    outside: list[float] = []
    for got, want, fits in zip(rgb, REFERENCE, IN_GAMUT, strict=True):
        (inside if fits else outside).append(delta_e2000(srgb_to_lab(got), want))
    return inside, outside


def mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def p95(values: Sequence[float]) -> float:
    ordered = sorted(values)
    return ordered[math.ceil(0.95 * len(ordered)) - 1]


def report(what: str, inside: Sequence[float], outside: Sequence[float]) -> str:
    return (
        f"{what}: in sRGB gamut ({len(inside)}) mean {mean(inside):.2f} p95 {p95(inside):.2f}"
        f" max {max(inside):.2f}; outside ({len(outside)}) mean {mean(outside):.2f}"
    )


def rendered(path: Path) -> Image.Image:
    """`path` through thumbd's renderer at its own size, as a lossless PNG."""
    width = patch_chart().width
    result = render(str(path), RenderSpec(widths=(width,), format="png"))
    assert result.error is None, result.error
    (thumb,) = result.thumbnails
    im = Image.open(io.BytesIO(thumb.data))
    assert im.size == patch_chart().size and im.mode == "RGB"
    return im


# ---------------------------------------------------------------------------------------------
# The checks


@pytest.mark.parametrize("fmt", ["TIFF", "JPEG"])
def test_cmyk_without_a_profile_renders_as_fogra39_measured(tmp_path: Path, fmt: str) -> None:
    src = tmp_path / f"chart.{fmt.lower()}"
    # Pillow writes CMYK JPEG as Adobe does (inverted, with the APP14 marker), at full
    # chroma resolution; at quality 100 a flat 16 px square comes back within a level.
    patch_chart().save(src, fmt, **({"quality": 100} if fmt == "JPEG" else {}))
    assert "icc_profile" not in Image.open(src).info
    inside, outside = deltas(read_patches(rendered(src)))
    print(report(f"rendered {fmt}", inside, outside))
    assert mean(inside) <= BOUND, report(fmt, inside, outside)
    assert p95(inside) <= 2 * BOUND, report(fmt, inside, outside)
    # Out of gamut, the screen cannot show the ink; it must still be the nearest thing, not a
    # different colour (the naive formula is 10 to 30 off there).
    assert mean(outside) <= 6, report(fmt, inside, outside)


def test_the_colour_step_alone_matches_the_measurements() -> None:
    chart = patch_chart()
    profile = colour.profile_to_convert(chart)
    assert profile == colour.DEFAULT_CMYK  # no profile: the built-in one
    inside, outside = deltas(read_patches(colour.to_srgb(chart, profile)))
    print(report("colour.to_srgb", inside, outside))
    assert mean(inside) <= BOUND and p95(inside) <= 2 * BOUND, report("to_srgb", inside, outside)


def test_the_check_tells_a_wrong_conversion_apart() -> None:
    # The naive formula (R = 255 - C - K ...) and thumbd's former ink model of coated paper
    # (icc.cmyk_profile) must fail the bound by far, or the checks above prove nothing.
    chart = patch_chart()
    naive, _ = deltas(read_patches(chart.convert("RGB")))
    assert mean(naive) > 5 * BOUND, mean(naive)  # 10.5
    model, _ = deltas(read_patches(colour.to_srgb(chart, icc.cmyk_profile("model of coated"))))
    assert mean(model) > 3 * BOUND, mean(model)  # 7.4
