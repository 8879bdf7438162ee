"""Acceptance for videos and Live Photos: clips made by ffmpeg, dropped into a running daemon.

Each container gets upright, non-black thumbnails named like a still's; a phone's rotated clip
is portrait; an HLG clip is not washed out next to the SDR rendering of the same picture; the
index says what a clip is; broken clips fail with a reason and nothing else; a Live Photo's
MOV gets no thumbnails of its own, whichever half arrives first, until its still is deleted.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from PIL import Image, ImageStat

from tests import images, media
from tests.conftest import Daemon, wait_until
from tests.render.test_video import patches, saturation

pytestmark = media.needs_ffmpeg

CONTAINERS = (".mp4", ".mov", ".m4v", ".3gp", ".mkv", ".webm", ".avi")


def mean_luma(path: Path) -> float:
    with Image.open(path) as im:
        return float(ImageStat.Stat(im.convert("L")).mean[0])


def test_videos_get_upright_non_black_thumbnails_and_an_index(
    daemon: Daemon, tmp_path: Path
) -> None:
    daemon.write_config({"thumbnails": {"index": True}})
    made = tmp_path / "made"
    made.mkdir()
    clips = [
        media.clip(made / f"c{ext.replace('.', '_')}{ext}", black_until=0.6) for ext in CONTAINERS
    ]
    portrait = media.rotated(made / "phone.mov", media.clip(made / "wide.mp4"), 90)
    (made / "empty.mov").write_bytes(b"")
    whole = (made / "c_mp4.mp4").read_bytes()
    (made / "cut.mp4").write_bytes(whole[: len(whole) // 3])  # moov at the end: cut off
    media.audio_only(made / "song.mp4")
    daemon.start()
    for f in [*clips, portrait, made / "empty.mov", made / "cut.mp4", made / "song.mp4"]:
        shutil.copy(f, daemon.incoming / f.name)
    for clip in clips:
        stem = clip.stem  # the index comes last: when it is there, so are the thumbnails
        index_file = daemon.outgoing / f"{stem}.json"
        wait_until(index_file.exists, 60, f"{clip.name}'s thumbnails and index")
        with Image.open(daemon.outgoing / f"{stem}_200.jpg") as im:
            assert im.size == (200, 150), clip.name  # 320x240, aspect kept
        assert mean_luma(daemon.outgoing / f"{stem}_200.jpg") > 40, "a black poster"
        index = json.loads(index_file.read_text())
        source = index["source"]
        assert source["kind"] == "video" and source["frame_size"] == [320, 240], source
        assert 2.5 < source["duration"] < 3.5 and source["poster_time"] >= 0.6, source
    wait_until(lambda: daemon.done("phone.mov"), 60, "the rotated clip")
    with Image.open(daemon.outgoing / "phone_200.jpg") as im:
        assert im.height > im.width  # portrait, as the phone shows it
    status = daemon.recorded(done=len(clips) + 1, failed=3)
    reasons = {f["source"]: f["reason"] for f in status["failures"]}
    assert reasons["empty.mov"] == "empty file (0 bytes)"
    assert "moov" in reasons["cut.mp4"], reasons
    assert reasons["song.mp4"] == "no video stream (audio only)"
    assert not list(daemon.outgoing.glob("empty*")) and not list(daemon.outgoing.glob("song*"))


def test_an_hlg_clip_is_not_washed_out(daemon: Daemon, tmp_path: Path) -> None:
    picture = patches(tmp_path)
    daemon.start()
    media.hlg_clip(daemon.incoming / "hdr.mov", picture, tmp_path)
    media.sdr_clip(daemon.incoming / "sdr.mp4", picture)
    wait_until(lambda: daemon.done("hdr.mov") and daemon.done("sdr.mp4"), 60, "both clips")
    with (
        Image.open(daemon.outgoing / "hdr_200.jpg") as hdr,
        Image.open(daemon.outgoing / "sdr_200.jpg") as sdr,
    ):
        assert saturation(hdr) > 0.85 * saturation(sdr), (saturation(hdr), saturation(sdr))
        hdr_luma, sdr_luma = (
            ImageStat.Stat(hdr.convert("L")).mean[0],
            ImageStat.Stat(sdr.convert("L")).mean[0],
        )
        assert abs(hdr_luma - sdr_luma) < 0.12 * sdr_luma, (hdr_luma, sdr_luma)


@pytest.mark.parametrize("motion_first", [False, True])
def test_a_live_photo_is_one_photo_whichever_half_arrives_first(
    daemon: Daemon, tmp_path: Path, motion_first: bool
) -> None:
    daemon.write_config({"thumbnails": {"index": True}})
    mov = media.clip(tmp_path / "IMG_0001.MOV", seconds=2)
    still = images.make_jpeg(tmp_path / "IMG_0001.JPG", (400, 300))
    daemon.start()
    first, second = (mov, still) if motion_first else (still, mov)
    shutil.copy(first, daemon.incoming / first.name)
    if motion_first:  # a sync client brings the MOV first: it is a video until its still comes
        wait_until(lambda: daemon.done("IMG_0001.MOV"), 60, "the MOV on its own")
    else:
        wait_until(lambda: daemon.done("IMG_0001.JPG"), 60, "the still")
    shutil.copy(second, daemon.incoming / second.name)
    log_line = "IMG_0001.MOV is the motion of Live Photo IMG_0001.JPG"
    wait_until(lambda: log_line in daemon.read_log(), 60, "the pair")
    daemon.recorded(done=2, failed=0)  # the still's record follows its thumbnails and index
    names = sorted(p.name for p in daemon.outgoing.iterdir() if p.is_file())
    # The MOV's own thumbnails (had it any) went; the still's are named after the plain stem.
    assert names == ["IMG_0001.json", "IMG_0001_200.jpg", "IMG_0001_32.jpg", "IMG_0001_64.jpg"]
    index = json.loads((daemon.outgoing / "IMG_0001.json").read_text())
    assert index["source"]["motion"] == "IMG_0001.MOV"
    # Its still deleted, the MOV is a video of its own again.
    (daemon.incoming / "IMG_0001.JPG").unlink()
    index_file = daemon.outgoing / "IMG_0001.json"

    def the_videos_index() -> bool:  # the still's went with it; the MOV's comes last
        return (
            index_file.exists()
            and json.loads(index_file.read_text())["source"].get("kind") == "video"
        )

    wait_until(the_videos_index, 60, "the MOV's own thumbnails and index")
    assert daemon.done("IMG_0001.MOV")
    assert "motion" not in json.loads(index_file.read_text())["source"]


def test_live_photos_both_takes_the_motion_as_a_video(daemon: Daemon, tmp_path: Path) -> None:
    daemon.write_config({"thumbnails": {"live_photos": "both"}})
    daemon.start()
    images.make_jpeg(daemon.incoming / "IMG_0002.JPG", (400, 300))
    media.clip(daemon.incoming / "IMG_0002.MOV", seconds=2)
    wait_until(lambda: daemon.done("IMG_0002.JPG"), 60, "the still")
    # Same stem: the second to be written takes its whole file name (output/names.py).
    wait_until(
        lambda: (
            (daemon.outgoing / "IMG_0002.MOV_200.jpg").exists()
            or (daemon.outgoing / "IMG_0002.JPG_200.jpg").exists()
        ),
        60,
        "the MOV's own thumbnails",
    )


def test_a_clip_whose_decode_hangs_times_out_alone(daemon: Daemon, tmp_path: Path) -> None:
    hang = "THUMBD-TEST-HANG-MARKER"  # the worker hangs on it, as a stuck decoder would
    daemon.write_config({"resize": {"timeout": 2}})
    daemon.start(env={"THUMBD_TEST_HANG_MARKER": hang})
    stuck = media.clip(tmp_path / "stuck.mp4")
    with stuck.open("ab") as f:
        f.write(hang.encode())
    shutil.copy(stuck, daemon.incoming / "stuck.mp4")
    media.clip(daemon.incoming / "fine.mp4")
    status = daemon.recorded(done=1, failed=1)
    assert status["failures"] == [{"source": "stuck.mp4", "reason": "timed out after 2 s"}]
    assert daemon.done("fine.mp4")


LIVE_ID = "5A8C3F1E-2B4D-4E6F-8A9B-0C1D2E3F4A5B"
OTHER_ID = "0B9E7D6C-5A4B-4C3D-9E2F-1A0B9C8D7E6F"


@pytest.mark.parametrize("motion_first", [True, False])
def test_a_live_photo_pairs_by_content_identifier_whatever_the_names(
    daemon: Daemon, tmp_path: Path, motion_first: bool
) -> None:
    # Named by capture time, as some camera uploads do: the halves' stems differ by a second.
    daemon.write_config({"thumbnails": {"index": True}})
    mov = media.clip(tmp_path / "2024-05-01 12.00.01.mov", seconds=2, content_id=LIVE_ID)
    still = images.make_apple_jpeg(tmp_path / "2024-05-01 12.00.00.jpg", (400, 300), LIVE_ID)
    daemon.start()
    first, second = (mov, still) if motion_first else (still, mov)
    shutil.copy(first, daemon.incoming / first.name)
    wait_until(lambda: daemon.done(first.name), 60, f"{first.name} on its own")
    shutil.copy(second, daemon.incoming / second.name)
    log_line = f"{mov.name} is the motion of Live Photo {still.name}"
    wait_until(lambda: log_line in daemon.read_log(), 60, "the pair")
    daemon.recorded(done=2, failed=0)
    names = sorted(p.name for p in daemon.outgoing.iterdir() if p.is_file())
    stem = "2024-05-01 12.00.00"
    assert names == [f"{stem}.json", f"{stem}_200.jpg", f"{stem}_32.jpg", f"{stem}_64.jpg"]
    index = json.loads((daemon.outgoing / f"{stem}.json").read_text())
    assert index["source"]["motion"] == mov.name
    assert index["source"]["content_id"] == LIVE_ID
    # Its still deleted, the clip is a video of its own again.
    (daemon.incoming / still.name).unlink()
    wait_until(lambda: daemon.done(mov.name), 60, "the clip's own thumbnails")
    assert not daemon.thumbs(still.name)[0].exists()


def test_a_same_stem_still_and_clip_of_two_photos_are_not_a_pair(
    daemon: Daemon, tmp_path: Path
) -> None:
    # Two phones' IMG_0001: a still and a short clip whose content identifiers differ.
    mov = media.clip(tmp_path / "IMG_0001.MOV", seconds=2, content_id=OTHER_ID)
    still = images.make_apple_jpeg(tmp_path / "IMG_0001.JPG", (400, 300), LIVE_ID)
    daemon.start()
    shutil.copy(still, daemon.incoming / still.name)
    wait_until(lambda: daemon.done("IMG_0001.JPG"), 60, "the still")
    shutil.copy(mov, daemon.incoming / mov.name)
    # Same stem: the second to be written takes its whole file name (output/names.py).
    wait_until(lambda: (daemon.outgoing / "IMG_0001.MOV_200.jpg").exists(), 60, "the clip's own")
    daemon.recorded(done=2, failed=0)
    assert "is the motion of Live Photo" not in daemon.read_log()
    assert daemon.done("IMG_0001.JPG")
