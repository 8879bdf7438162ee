"""A decoder module plugged in the way video and RAW decoders are: upright RGB plus facts.

Its file format (for the tests only): `THUMBDTEST` then width and height as two ASCII numbers
and an RGB colour in hex, e.g. `THUMBDTEST 300 200 ff0000`. "refuse" in place of the colour
makes it refuse the file; "pass" hands it back to the generic decoder.
"""

from __future__ import annotations

from typing import IO

from PIL import Image

from thumbd.render.decoders import Decoded, Refused
from thumbd.render.spec import FailKind, RenderSpec

MAGIC = b"THUMBDTEST"


def sniff(head: bytes) -> bool:
    return head.startswith(MAGIC)


def decode(f: IO[bytes], spec: RenderSpec) -> Decoded | None:
    words = f.read(200).split()
    if len(words) != 4 or words[0] != MAGIC:
        raise Refused(FailKind.UNDECODABLE, "cannot decode test file: expected 4 words")
    width, height, colour = int(words[1]), int(words[2]), words[3].decode()
    if colour == "refuse":
        raise Refused(FailKind.UNSUPPORTED, "unsupported format: the test file says so")
    if colour == "pass":
        return None
    picture = Image.new("RGB", (width, height), "#" + colour)
    return Decoded(picture, facts={"duration_s": 1.5, "decoder": "plugin"})
