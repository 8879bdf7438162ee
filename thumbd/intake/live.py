"""Live Photos: an iPhone still (`IMG_1234.HEIC` or `.JPG`) and the short `IMG_1234.MOV` beside
it are one photo. With `[thumbnails] live_photos = "still"` (the default) the still gets the
thumbnails and the MOV none, whatever order the two arrive in; deleting the still gives the MOV
back its own. The halves are paired by folder and stem (any case) and the MOV's duration (a
Live Photo's motion lasts about three seconds); Apple's content identifier, in the HEIC's maker
notes and the MOV's QuickTime metadata, is not read: a same-stem still and short clip in one
folder are taken as a pair.
"""

from __future__ import annotations

import os

from thumbd.render.formats import LIVE_MOTION_EXTENSION, LIVE_STILL_EXTENSIONS

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
