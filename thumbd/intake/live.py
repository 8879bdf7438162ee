"""Live Photos: an iPhone still (`IMG_1234.HEIC` or `.JPG`) and the short `IMG_1234.MOV` beside
it are one photo. With `[thumbnails] live_photos = "still"` (the default) the still gets the
thumbnails and the MOV none, whatever order the two arrive in; deleting the still gives the MOV
back its own. The halves are paired by Apple's content identifier where both carry it (the
still's maker notes, the clip's QuickTime metadata: render/apple.py, kept in the state), whatever
their names, in one folder; else by folder and stem (any case) and the clip's duration (a Live
Photo's motion lasts about three seconds). A same-stem still and clip whose identifiers differ
are two photos.
"""

from __future__ import annotations

import os

from thumbd.render.formats import LIVE_MOTION_EXTENSION, LIVE_STILL_EXTENSIONS, VIDEO_EXTENSIONS

LIVE_MAX_SECONDS = 6.0  # a Live Photo's motion is 1.5 to 3 s; anything longer is a video


def is_motion_name(rel: str) -> bool:
    return os.path.splitext(rel)[1].lower() == LIVE_MOTION_EXTENSION


def is_still_name(rel: str) -> bool:
    return os.path.splitext(rel)[1].lower() in LIVE_STILL_EXTENSIONS


def still_of(root: str, rel: str) -> str | None:
    """The still beside the motion file `rel`, if its folder has one."""
    return _sibling(root, rel, LIVE_STILL_EXTENSIONS) if is_motion_name(rel) else None


def motion_of(root: str, rel: str) -> str | None:
    """The motion file beside the still `rel`, if its folder has one."""
    return _sibling(root, rel, frozenset({LIVE_MOTION_EXTENSION})) if is_still_name(rel) else None


def partner(root: str, rel: str, same_id: list[str], *, motion: bool) -> str | None:
    """Of the sources recorded with `rel`'s content identifier (`same_id`), the other half: in
    `rel`'s folder, still there, a clip (`motion`) or a still."""
    folder = os.path.dirname(rel)
    kinds = VIDEO_EXTENSIONS if motion else LIVE_STILL_EXTENSIONS
    for other in same_id:
        if other == rel or os.path.dirname(other) != folder:
            continue
        if os.path.splitext(other)[1].lower() in kinds and os.path.lexists(f"{root}/{other}"):
            return other
    return None


def differ(one: str | None, other: str | None) -> bool:
    """Both halves carry a content identifier, and not the same: two photos, not a pair."""
    return one is not None and other is not None and one != other


def _sibling(root: str, rel: str, extensions: frozenset[str]) -> str | None:
    """A file beside `rel` with its stem and one of `extensions`, in the case cameras write
    them (IMG_1.MOV beside IMG_1.HEIC; img_1.mov beside img_1.jpg): a few lstat calls, not a
    listing of the folder, since every still published asks."""
    stem = os.path.splitext(rel)[0]
    for ext in sorted(extensions):
        for candidate in (stem + ext.upper(), stem + ext):
            if os.path.lexists(os.path.join(root, candidate)):
                return candidate
    return None
