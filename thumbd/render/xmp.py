"""A kept XMP packet without its orientation and, unless `gps` is kept, without its location.

XMP repeats EXIF: tiff:Orientation (which Pillow, exiftool-based tools and photo managers apply
to an upright thumbnail a second time) and exif:GPS* (the location `gps` may withhold). Those
properties are cut out of the packet's bytes, so the rest stays as it was (prefixes, comments,
the xpacket wrapper). Where they are comes from one pass of expat over the packet: the positions
of the tags it reports, and a scan of each start tag's attributes; the cost is linear in the
packet, whatever it holds (a packet of 20,000 unclosed `exif:GPS` tags is refused in
milliseconds). A packet expat cannot parse, one that declares a DTD, or one that is not UTF-8 is
dropped whole; the result is parsed again to prove nothing withheld is left.
"""

from __future__ import annotations

import re
from xml.etree import ElementTree
from xml.parsers import expat

TIFF_NS = "http://ns.adobe.com/tiff/1.0/"
EXIF_NS = ("http://ns.adobe.com/exif/1.0/", "http://cipa.jp/exif/1.0/")
_XML_NS = "http://www.w3.org/XML/1998/namespace"

# One attribute of a start tag (after its name), and the tag's end.
_ATTRIBUTE = re.compile(rb"""\s+([^\s=/>]+)\s*=\s*(?:"[^"]*"|'[^']*')""")
_TAG_NAME = re.compile(rb"<[^\s/>]+")
_TAG_END = re.compile(rb"\s*(/?)>")


class _Refused(Exception):
    """The packet is not one thumbd carries over."""


def withheld(uri: str, local: str, *, keep_gps: bool) -> bool:
    """Whether the property `{uri}local` must not reach a thumbnail."""
    if uri == TIFF_NS and local == "Orientation":
        return True
    return uri in EXIF_NS and local.startswith("GPS") and not keep_gps


class _Cutter:
    """One expat pass over a packet: the byte ranges to cut, in order."""

    def __init__(self, data: bytes, *, keep_gps: bool) -> None:
        self.data = data
        self.keep_gps = keep_gps
        self.scopes: list[dict[str, str]] = [{"xml": _XML_NS}]
        self.cuts: list[tuple[int, int]] = []
        self.skipping = 0  # depth inside a withheld element
        self.skip_from = 0
        self.empty: list[int] = []  # per open element: the end of its start tag when it is `<x/>`
        self.parser = expat.ParserCreate(encoding="utf-8")
        self.parser.ordered_attributes = True
        self.parser.StartElementHandler = self._start
        self.parser.EndElementHandler = self._end
        self.parser.StartDoctypeDeclHandler = self._doctype

    def run(self) -> list[tuple[int, int]]:
        self.parser.Parse(self.data, True)
        return self.cuts

    def _doctype(self, *_: object) -> None:
        raise _Refused("a DTD")

    def _resolve(self, qname: str, scope: dict[str, str], *, attribute: bool) -> tuple[str, str]:
        prefix, colon, local = qname.partition(":")
        if not colon:
            return ("" if attribute else scope.get("", "")), qname
        return scope.get(prefix, ""), local

    def _start(self, name: str, attrs: list[str]) -> None:
        index = self.parser.CurrentByteIndex
        if self.skipping:
            self.skipping += 1
            return
        scope = self.scopes[-1]
        declarations = {
            key[6:] if key.startswith("xmlns:") else "": value
            for key, value in zip(attrs[::2], attrs[1::2], strict=True)
            if key == "xmlns" or key.startswith("xmlns:")
        }
        if declarations:
            scope = {**scope, **declarations}
        self.scopes.append(scope)
        attribute_cuts, tag_end, empty = self._start_tag(index, scope)
        self.empty.append(tag_end if empty else -1)
        uri, local = self._resolve(name, scope, attribute=False)
        if withheld(uri, local, keep_gps=self.keep_gps):
            self.skipping = 1
            self.skip_from = index
            return
        self.cuts.extend(attribute_cuts)

    def _start_tag(
        self, index: int, scope: dict[str, str]
    ) -> tuple[list[tuple[int, int]], int, bool]:
        """The withheld attributes' ranges in the start tag at `index`, its end, and `<x/>`."""
        name = _TAG_NAME.match(self.data, index)
        if name is None:
            raise _Refused("a start tag expat reported where there is none")
        position, cuts = name.end(), []
        while attribute := _ATTRIBUTE.match(self.data, position):
            qname = attribute.group(1).decode("utf-8")
            uri, local = self._resolve(qname, scope, attribute=True)
            if withheld(uri, local, keep_gps=self.keep_gps):
                cuts.append((attribute.start(), attribute.end()))
            position = attribute.end()
        end = _TAG_END.match(self.data, position)
        if end is None:
            raise _Refused("a start tag whose end was not found")
        return cuts, end.end(), bool(end.group(1))

    def _end(self, _name: str) -> None:
        index = self.parser.CurrentByteIndex
        if self.skipping > 1:
            self.skipping -= 1
            return
        self.scopes.pop()
        empty = self.empty.pop()
        if not self.skipping:
            return
        self.skipping = 0
        if empty >= 0:
            self.cuts.append((self.skip_from, empty))
        else:
            close = self.data.find(b">", index)
            if close < 0:
                raise _Refused("an end tag without its end")
            self.cuts.append((self.skip_from, close + 1))


def cleaned(packet: bytes, *, keep_gps: bool) -> bytes | None:
    """`packet` without the withheld properties, or None when it cannot be read."""
    data = packet.strip(b"\x00")  # some writers end the packet with a NUL
    try:
        data.decode("utf-8")
        cuts = _Cutter(data, keep_gps=keep_gps).run()
    except (UnicodeDecodeError, expat.ExpatError, _Refused, ValueError):
        return None
    pieces, position = [], 0
    for start, end in cuts:
        pieces.append(data[position:start])
        position = end
    pieces.append(data[position:])
    result = b"".join(pieces)
    return result if _is_clean(result, keep_gps=keep_gps) else None


def _is_clean(data: bytes, *, keep_gps: bool) -> bool:
    try:
        root = ElementTree.fromstring(data)
    except (ElementTree.ParseError, ValueError):
        return False

    def held(qualified: str) -> bool:
        uri, _, local = qualified[1:].partition("}") if qualified.startswith("{") else ("", "", "")
        return withheld(uri, local, keep_gps=keep_gps)

    return not any(
        held(element.tag) or any(held(name) for name in element.attrib)
        for element in root.iter()
        if isinstance(element.tag, str)
    )
