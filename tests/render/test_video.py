"""Video poster frames: real clips made by ffmpeg (tests/media.py), decoded by PyAV.

Colour references are the RGB the clips were made from; rotation references are what the
ffmpeg program itself shows; cost is counted in frames decoded and bytes read, not in time.
"""

from __future__ import annotations

import io
import pickle
import random
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import av
import pytest
from PIL import Image, ImageChops, ImageDraw, ImageStat

from tests import media
from thumbd.render.decoders.video import VIDEO_EXTENSIONS, Poster, VideoRefused, poster
from thumbd.render.spec import FailKind

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

pytestmark = media.needs_ffmpeg

PATCHES = [  # saturated colours, where a wrong matrix or a missed tone map shows most
    (200, 40, 40),
    (40, 180, 60),
    (50, 70, 210),
    (230, 200, 40),
    (180, 60, 190),
    (240, 240, 240),
]


def make(
    path: Path, largest: int = 100, max_pixels: int = 10**8, max_seconds: float | None = None
) -> Poster:
    return poster(str(path), largest=largest, max_pixels=max_pixels, max_seconds=max_seconds)


def luma(im: Image.Image) -> tuple[float, float]:
    stat = ImageStat.Stat(im.convert("L"))
    return stat.mean[0], stat.stddev[0]


def saturation(im: Image.Image) -> float:
    return float(ImageStat.Stat(im.convert("HSV")).mean[1])


def patches(tmp_path: Path) -> Path:
    im = Image.new("RGB", media.SIZE)
    draw = ImageDraw.Draw(im)
    for i, colour in enumerate(PATCHES):
        x, y = (i % 3) * 106, (i // 3) * 120
        draw.rectangle((x, y, x + 105, y + 119), fill=colour)
    path = tmp_path / "patches.png"
    im.save(path)
    return path


def patch_colours(im: Image.Image) -> list[tuple[int, ...]]:
    """The middle of each patch, in a poster of any size."""
    sx, sy = im.width / media.SIZE[0], im.height / media.SIZE[1]
    centres = [((i % 3) * 106 + 53, (i // 3) * 120 + 60) for i in range(len(PATCHES))]
    return [tuple(im.getpixel((round(x * sx), round(y * sy)))) for x, y in centres]  # type: ignore[arg-type]


def assert_close(
    got: Sequence[tuple[int, ...]], want: Sequence[tuple[int, ...]], tolerance: int
) -> None:
    worst = max(
        abs(g - w) for gs, ws in zip(got, want, strict=True) for g, w in zip(gs, ws, strict=True)
    )
    assert worst <= tolerance, f"{got} != {want} (off by {worst})"


# --- containers, size, facts --------------------------------------------------------------


@pytest.mark.parametrize("ext", sorted(VIDEO_EXTENSIONS))
def test_every_container_gives_a_poster_of_the_clips_aspect(tmp_path: Path, ext: str) -> None:
    p = make(media.clip(tmp_path / f"clip{ext}"))
    assert p.image.mode == "RGB"
    assert p.image.size == (200, 150)  # about 2 x largest (100), 4:3 like the clip
    mean, spread = luma(p.image)
    assert mean > 40 and spread > 20, f"{ext}: poster looks blank ({mean=}, {spread=})"
    assert p.facts["kind"] == "video"
    assert p.facts["frame_size"] == [320, 240]
    assert isinstance(p.facts["codec"], str) and p.facts["codec"]
    duration = p.facts["duration"]
    assert duration is None or abs(float(duration) - 3) < 0.5  # type: ignore[arg-type]


def test_facts_of_an_mp4(tmp_path: Path) -> None:
    p = make(media.clip(tmp_path / "a.mp4"))
    assert p.facts == {
        "kind": "video",
        "duration": 3.0,
        "frame_size": [320, 240],
        "poster_time": 0.0,  # the key frame at or before 0.3 s (10% of 3 s)
        "codec": "h264",
    }


def test_never_upscales_and_reads_a_file_object(tmp_path: Path) -> None:
    path = media.clip(tmp_path / "a.mp4")
    with path.open("rb") as f:
        p = poster(f, largest=400, max_pixels=10**8)
        assert not f.closed  # the caller's file stays the caller's
    assert p.image.size == (320, 240)


def test_a_one_pixel_video(tmp_path: Path) -> None:
    path = tmp_path / "dot.mkv"
    media.ffmpeg(
        "-f", "lavfi", "-i", "color=red:size=2x2:rate=5:duration=1", "-vf", "scale=1:1",
        "-c:v", "ffv1", path,
    )  # fmt: skip
    p = make(path)
    assert p.image.size == (1, 1)
    r, g, b = p.image.getpixel((0, 0))  # type: ignore[misc]
    assert r > 200 and g < 30 and b < 30


def test_anamorphic_frames_are_shown_at_their_display_aspect(tmp_path: Path) -> None:
    # 320x240 stored, pixels twice as wide as tall: shown 640x240.
    path = tmp_path / "wide.mp4"
    media.ffmpeg(*media.testsrc(), "-vf", "setsar=2", "-c:v", "libx264", path)
    p = make(path, largest=200)
    assert p.image.size == (400, 150)
    assert p.facts["frame_size"] == [640, 240]


# --- a representative frame ---------------------------------------------------------------


def test_a_black_first_second_is_skipped(tmp_path: Path) -> None:
    path = media.clip(tmp_path / "intro.mp4", black_until=1)
    p = make(path)
    mean, spread = luma(p.image)
    assert mean > 40 and spread > 20
    assert float(p.facts["poster_time"]) >= 1.0  # type: ignore[arg-type]


def test_the_search_stops_when_its_cpu_budget_is_spent(tmp_path: Path) -> None:
    # With no budget left after the first candidate, that (black) key frame is the poster.
    path = media.clip(tmp_path / "intro.mp4", black_until=1)
    p = make(path, max_seconds=0.0)
    assert p.decoded == 1
    assert luma(p.image)[0] < 20


def test_an_all_black_clip_still_gets_its_best_frame(tmp_path: Path) -> None:
    path = media.clip(tmp_path / "night.mp4", black_until=10)
    p = make(path)
    assert p.image.size == (200, 150)
    assert luma(p.image)[0] < 20
    assert p.decoded <= 3  # one per moment looked at, never the whole clip


def test_a_long_clip_costs_what_a_short_one_does(tmp_path: Path) -> None:
    short = media.clip(tmp_path / "short.mp4", seconds=3, size=(160, 120), fps=2, keyint=4)
    long = media.clip(tmp_path / "long.mp4", seconds=600, size=(160, 120), fps=2, keyint=4)
    costs = {}
    for path in (short, long):
        with CountingFile(path) as f:
            p = poster(f, largest=100, max_pixels=10**8)
            costs[path.stem] = (p.decoded, p.packets, f.read_bytes)
    assert costs["long"][0] == costs["short"][0] == 1
    assert costs["long"][1] <= costs["short"][1] + 2
    size = long.stat().st_size
    assert 0 < costs["long"][2] < size / 10, f"read {costs['long'][2]} of {size} bytes"


def test_long_intro_key_frames_only(tmp_path: Path) -> None:
    # A 60 s clip, black for 20 s: the quarter-way (15 s) key frame is black, the half-way
    # one (30 s) is not; only key frames are decoded, one per moment.
    path = media.clip(tmp_path / "intro.mp4", seconds=60, size=(160, 120), fps=2, black_until=20)
    p = make(path)
    assert luma(p.image)[0] > 40
    assert p.decoded == 3
    assert 20 <= float(p.facts["poster_time"]) <= 30  # type: ignore[arg-type]


class CountingFile(io.FileIO):
    """A file that counts the bytes read from it."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, "r")
        self.read_bytes = 0

    def read(self, size: int | None = -1, /) -> bytes:
        data = super().read(size)
        self.read_bytes += len(data)
        return data

    def readinto(self, buffer: WriteableBuffer, /) -> int:
        n = super().readinto(buffer)
        self.read_bytes += n
        return n


# --- upright ------------------------------------------------------------------------------


@pytest.mark.parametrize("degrees", [90, 270, 180])
def test_a_rotated_phone_clip_comes_out_upright(tmp_path: Path, degrees: int) -> None:
    source = media.clip(tmp_path / "landscape.mp4")
    path = media.rotated(tmp_path / "phone.mov", source, degrees)
    p = poster(str(path), largest=200, max_pixels=10**8)
    portrait = degrees in (90, 270)
    assert p.image.size == ((240, 320) if portrait else (320, 240))
    assert p.facts["frame_size"] == list(p.image.size)
    reference = media.decoded_by_ffmpeg(path, tmp_path / "ref.png")
    assert reference.size == p.image.size
    diff = ImageStat.Stat(ImageChops.difference(p.image, reference)).mean
    assert max(diff) < 6, f"poster is not turned as ffmpeg turns it ({diff})"


# --- colour -------------------------------------------------------------------------------


@pytest.mark.parametrize("matrix", ["bt709", "bt601"])
@pytest.mark.parametrize("full_range", [False, True])
def test_colour_matrix_and_range_are_honoured(
    tmp_path: Path, matrix: str, full_range: bool
) -> None:
    path = media.colour_clip(
        tmp_path / f"{matrix}.mp4", patches(tmp_path), matrix, full_range=full_range
    )
    p = make(path, largest=200)
    assert_close(patch_colours(p.image), PATCHES, tolerance=4)


@pytest.mark.parametrize(("size", "matrix"), [((320, 240), "bt601"), ((1280, 720), "bt709")])
def test_untagged_clips_get_the_matrix_of_their_size(
    tmp_path: Path, size: tuple[int, int], matrix: str
) -> None:
    # What players assume with no tags: SD is BT.601, HD BT.709.
    image = Image.open(patches(tmp_path)).resize(size, Image.Resampling.NEAREST)
    image.save(tmp_path / "big.png")
    path = media.colour_clip(tmp_path / "old.mp4", tmp_path / "big.png", matrix, tagged=False)
    p = make(path, largest=200)
    assert_close(patch_colours(p.image), PATCHES, tolerance=4)


def test_the_wrong_matrix_would_be_seen(tmp_path: Path) -> None:
    # Decoding BT.709 as BT.601 shifts these patches well past the tolerance above, so the
    # matrix test has teeth.
    path = media.colour_clip(tmp_path / "709.mp4", patches(tmp_path), "bt709")
    with av.open(str(path)) as container:
        frame = next(container.decode(video=0))
        wrong = frame.reformat(format="rgb24", src_colorspace="ITU601", src_color_range=1,
                               dst_color_range=2)  # fmt: skip
        got = patch_colours(Image.fromarray(wrong.to_ndarray(), "RGB"))
    with pytest.raises(AssertionError):
        assert_close(got, PATCHES, tolerance=8)


def hdr_clip(tmp_path: Path, transfer: str, source: Path) -> Path:
    if transfer == "hlg":
        return media.hlg_clip(tmp_path / "hlg.mov", source, tmp_path)
    return media.pq_clip(tmp_path / "pq.mov", source)


@pytest.mark.parametrize("transfer", ["hlg", "pq"])
def test_hdr_is_tone_mapped_to_look_like_its_sdr_rendering(tmp_path: Path, transfer: str) -> None:
    source = tmp_path / "scene.png"
    media.decoded_by_ffmpeg(media.clip(tmp_path / "scene.mp4"), source, at=1)
    hdr = make(hdr_clip(tmp_path, transfer, source), largest=200).image
    sdr = make(media.sdr_clip(tmp_path / "sdr.mp4", source), largest=200).image
    assert abs(saturation(hdr) - saturation(sdr)) < 0.15 * saturation(sdr)
    assert abs(luma(hdr)[0] - luma(sdr)[0]) < 0.12 * luma(sdr)[0]


@pytest.mark.parametrize("transfer", ["hlg", "pq"])
def test_hdr_patches_keep_their_colours(tmp_path: Path, transfer: str) -> None:
    # Below SDR white the tone curve is nearly the identity: the colours come back.
    hdr = make(hdr_clip(tmp_path, transfer, patches(tmp_path)))
    assert_close(patch_colours(hdr.image), PATCHES, tolerance=12)


@pytest.mark.parametrize("transfer", ["hlg", "pq"])
def test_hdr_shown_as_sdr_would_be_washed_out(tmp_path: Path, transfer: str) -> None:
    # What a decoder that ignores the transfer shows: the HDR tests above have teeth.
    source = tmp_path / "scene.png"
    media.decoded_by_ffmpeg(media.clip(tmp_path / "scene.mp4"), source, at=1)
    with av.open(str(hdr_clip(tmp_path, transfer, source))) as container:
        naive = next(container.decode(video=0)).to_image()  # type: ignore[no-untyped-call]
    assert saturation(naive) < 0.7 * saturation(Image.open(source))


# --- refusals -----------------------------------------------------------------------------


def refused(path: Path, capfd: pytest.CaptureFixture[str], max_pixels: int = 10**8) -> VideoRefused:
    with pytest.raises(VideoRefused) as caught:
        make(path, max_pixels=max_pixels)
    out, err = capfd.readouterr()
    assert err == "" and out == "", f"FFmpeg printed: {err!r} {out!r}"
    return caught.value


def test_an_empty_file(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty.mp4").write_bytes(b"")
    e = refused(tmp_path / "empty.mp4", capfd)
    assert e.failure.kind is FailKind.EMPTY
    assert "empty" in e.failure.reason


def test_a_truncated_mp4_with_no_moov(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    whole = media.clip(tmp_path / "whole.mp4")  # ffmpeg writes the moov atom last
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    capfd.readouterr()
    e = refused(cut, capfd)
    assert e.failure.kind is FailKind.TRUNCATED
    assert "no moov atom" in e.failure.reason


def test_an_audio_only_mp4(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    path = media.audio_only(tmp_path / "voice.mp4")
    capfd.readouterr()
    e = refused(path, capfd)
    assert e.failure.kind is FailKind.UNSUPPORTED
    assert e.failure.reason == "no video stream (audio only)"


def test_garbage_bytes(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "noise.mp4"
    path.write_bytes(random.Random(7).randbytes(64 * 1024))
    e = refused(path, capfd)
    assert e.failure.kind is FailKind.UNDECODABLE
    assert "invalid data" in e.failure.reason


def test_a_frame_over_max_pixels_is_refused_before_decoding(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    path = media.clip(tmp_path / "a.mp4")
    capfd.readouterr()
    e = refused(path, capfd, max_pixels=320 * 240 - 1)
    assert e.failure.kind is FailKind.TOO_LARGE
    assert e.failure.reason.startswith("frame 320x240 exceeds max_pixels")


def test_a_playlist_cannot_make_ffmpeg_open_other_files(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    inner = media.clip(tmp_path / "inner.ts")
    path = tmp_path / "list.m3u8"
    path.write_text(f"#EXTM3U\n#EXT-X-TARGETDURATION:3\n#EXTINF:3,\n{inner}\n#EXT-X-ENDLIST\n")
    capfd.readouterr()
    e = refused(path, capfd)
    assert e.failure.kind is FailKind.UNSUPPORTED
    assert "not a video container thumbd reads" in e.failure.reason


def test_a_cut_clip_with_its_index_first(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    # moov first (as phones and web uploads write), the frames cut off: whatever is left
    # decodes, or the clip is refused as a value; never an exception of another kind.
    whole = tmp_path / "whole.mp4"
    media.ffmpeg(*media.testsrc(), "-c:v", "libx264", "-movflags", "+faststart", whole)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(whole.read_bytes()[:4096])
    capfd.readouterr()
    try:
        p = make(cut)
        assert p.image.size == (200, 150)
    except VideoRefused as e:
        assert e.failure.kind in (FailKind.UNDECODABLE, FailKind.TRUNCATED)
    out, err = capfd.readouterr()
    assert err == "" and out == ""


def test_a_refusal_pickles_across_the_pool(tmp_path: Path) -> None:
    e = VideoRefused(FailKind.TRUNCATED, "truncated video: no moov atom")
    back = pickle.loads(pickle.dumps(e))
    assert back.failure == e.failure
    assert str(back) == "truncated video: no moov atom"
