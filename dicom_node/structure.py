"""Walk the element structure of an encoded dataset as it streams in, without decoding any value.

Tags, VRs and lengths are checked against each other and against the end of the data: every
element fits inside its item and sequence, sequences and items of undefined length are closed,
encapsulated Pixel Data is a run of items ended by a sequence delimiter, and the data ends between
two top-level elements. That is what a receiver must know before it answers success; the values
themselves are the reader's business. Cost: a few generator steps per element, nothing per byte.

`StructureWalker.feed(chunk)` takes the bytes in any slicing; `finish()` raises
`DatasetStructureError` unless the data ended whole.
"""

from __future__ import annotations

import struct
from collections.abc import Generator

from dicom_node.errors import DatasetStructureError

_LONG_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"})
_SHORT_VRS = frozenset({b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FD", b"FL", b"IS", b"LO", b"LT",
                        b"PN", b"SH", b"SL", b"SS", b"ST", b"TM", b"UI", b"UL", b"US"})
UNDEFINED_LENGTH = 0xFFFFFFFF
_PLAIN_LONG_VRS = _LONG_VRS - {b"SQ", b"UN"}  # long-length VRs whose value is opaque bytes
# (byte order) -> the layouts of an explicit header, an implicit header, a tag, a 32- and a 16-bit length
_LAYOUTS = {order: (struct.Struct(order + "HH2sH"), struct.Struct(order + "HHI"), struct.Struct(order + "HH"),
                    struct.Struct(order + "I"), struct.Struct(order + "H")) for order in "<>"}
_ITEM = 0xFFFEE000
_ITEM_END = 0xFFFEE00D
_SEQUENCE_END = 0xFFFEE0DD
_PIXEL_DATA = 0x7FE00010
# Sequences nest a handful of levels in real objects; a bound keeps a hostile stream from
# building an unbounded chain of generators.
_MAX_DEPTH = 32

_READ, _SKIP = 0, 1
_Request = tuple[int, int, bool]  # (read or skip, byte count, at a top-level element boundary)
_AT_TOP: _Request = (_READ, 4, True)  # the one request the walk makes between top-level elements
_Walk = Generator[_Request, bytes | None, None]


class StructureWalker:
    """Streaming structure check of one dataset.

    explicit_vr: Explicit VR (every accepted syntax but Implicit VR Little Endian).
    little_endian: False only for Explicit VR Big Endian (its items and delimiters are big-endian too).
    encapsulated: the syntax compresses pixels, so top-level Pixel Data must be encapsulated
    (undefined length); in a native syntax it must have a defined length.
    header_last_tag: `header_end` records where the first top-level element after it starts.
    """

    def __init__(self, *, explicit_vr: bool, encapsulated: bool, header_last_tag: int = 0x00200013,
                 little_endian: bool = True) -> None:
        (self._explicit_header, self._implicit_header, self._tag, self._u32,
         self._u16) = _LAYOUTS["<" if little_endian else ">"]
        self.offset = 0
        self.header_end: int | None = None
        self._explicit = explicit_vr
        self._encapsulated = encapsulated
        self._header_last_tag = header_last_tag
        self._pending = bytearray()
        self._error: DatasetStructureError | None = None
        self._fast_skip = False  # a skip started by `_scan_plain_elements`, outside the walk
        self._walk = self._top_level()
        self._request: _Request = next(self._walk)

    @property
    def error(self) -> DatasetStructureError | None:
        return self._error

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        if self._error is not None:
            return
        view = memoryview(data).cast("B")
        pos, size = 0, len(view)
        while pos < size:
            if self._request is _AT_TOP and not self._pending:
                pos = self._scan_plain_elements(view, pos, size)
                if pos >= size:
                    return
            kind, need, _ = self._request
            if kind == _SKIP:
                take = min(need, size - pos)
                pos += take
                self.offset += take
                if take < need:
                    self._request = (_SKIP, need - take, False)
                    return
                if self._fast_skip:
                    self._fast_skip = False
                    self._request = _AT_TOP
                    continue
                self._advance(None)
            else:
                take = min(need - len(self._pending), size - pos)
                self._pending += view[pos:pos + take]
                pos += take
                self.offset += take
                if len(self._pending) < need:
                    return
                chunk = bytes(self._pending)
                self._pending.clear()
                self._advance(chunk)
            if self._error is not None:
                return

    def _scan_plain_elements(self, view: memoryview, pos: int, size: int) -> int:
        """The common case without a generator step per element: top-level elements of defined length that
        are not sequences, nor Pixel Data, read straight from the chunk. Stops (leaving the rest to the
        walk) at anything else, at a header cut by the chunk's end, or at a value that runs past it
        (skipped here, after which the walk resumes at the next top-level element)."""
        explicit, header_last = self._explicit, self._header_last_tag
        short_vrs, long_vrs = _SHORT_VRS, _PLAIN_LONG_VRS
        explicit_header, implicit_header, u32 = self._explicit_header, self._implicit_header, self._u32
        while pos + 12 <= size:
            if explicit:
                group, element, vr, length = explicit_header.unpack_from(view, pos)
                if vr in short_vrs:
                    header = 8
                elif vr in long_vrs:
                    length, header = u32.unpack_from(view, pos + 8)[0], 12
                else:
                    break
            else:
                group, element, length = implicit_header.unpack_from(view, pos)
                header = 8
            tag = group << 16 | element
            if group == 0xFFFE or tag == _PIXEL_DATA:
                break
            if length == UNDEFINED_LENGTH:
                break
            if self.header_end is None and tag > header_last:
                self.header_end = self.offset
            end = pos + header + length
            if end > size:
                self.offset += size - pos
                self._request = (_SKIP, end - size, False)
                self._fast_skip = True
                return size
            self.offset += end - pos
            pos = end
        return pos

    def finish(self) -> None:
        """Raise DatasetStructureError unless everything fed so far is one whole dataset."""
        if self._error is not None:
            raise self._error
        kind, _, at_boundary = self._request
        if kind != _READ or not at_boundary or self._pending:
            raise DatasetStructureError(f"the data ends inside an element, item or sequence (at byte {self.offset})")
        if self.offset == 0:
            raise DatasetStructureError("the dataset is empty")

    def _advance(self, value: bytes | None) -> None:
        try:
            self._request = self._walk.send(value)
        except DatasetStructureError as exc:
            self._error = exc
        except StopIteration:  # pragma: no cover - the top level never returns
            self._error = DatasetStructureError("the structure walk ended early")

    def _fail(self, message: str) -> DatasetStructureError:
        return DatasetStructureError(f"{message} (at byte {self.offset})")

    # -- the walk: generators that yield what they need next --------------------------------------
    def _top_level(self) -> _Walk:
        yield from self._elements(self._explicit, end=None, depth=0)

    def _elements(self, explicit: bool, end: int | None, depth: int) -> _Walk:
        """Elements of the top-level dataset (depth 0) or of one item (until `end`, or its delimiter)."""
        top = depth == 0
        while True:
            if end is not None and self.offset >= end:
                if self.offset > end:
                    raise self._fail("an element runs past the end of its item")
                return
            raw = yield (_AT_TOP if top else (_READ, 4, False))
            group, element = self._tag.unpack(raw)
            tag = group << 16 | element
            if group == 0xFFFE:
                length = self._u32.unpack((yield (_READ, 4, False)))[0]
                if tag == _ITEM_END and end is None and not top:
                    if length != 0:
                        raise self._fail("an item delimiter with a non-zero length")
                    return
                raise self._fail(f"a misplaced delimiter or item tag ({group:04X},{element:04X})")
            if top and self.header_end is None and tag > self._header_last_tag:
                self.header_end = self.offset - 4
            vr, length = yield from self._element_header(explicit)
            yield from self._value(tag, vr, length, explicit, end, depth)

    def _element_header(self, explicit: bool) -> Generator[_Request, bytes | None, tuple[bytes | None, int]]:
        if not explicit:
            return None, self._u32.unpack((yield (_READ, 4, False)))[0]
        vr = yield (_READ, 2, False)
        if vr in _LONG_VRS:
            rest = yield (_READ, 6, False)
            return vr, self._u32.unpack_from(rest, 2)[0]
        if vr in _SHORT_VRS:
            return vr, self._u16.unpack((yield (_READ, 2, False)))[0]
        raise self._fail(f"unknown VR {vr!r}: not {'explicit' if explicit else 'implicit'} VR data")

    def _value(self, tag: int, vr: bytes | None, length: int, explicit: bool, end: int | None, depth: int) -> _Walk:
        top = depth == 0
        if tag == _PIXEL_DATA and top:
            if self._encapsulated and length != UNDEFINED_LENGTH:
                raise self._fail("native Pixel Data on a compressed transfer syntax")
            if not self._encapsulated and length == UNDEFINED_LENGTH:
                raise self._fail("encapsulated Pixel Data on an uncompressed transfer syntax")
        if length == UNDEFINED_LENGTH:
            if depth >= _MAX_DEPTH:
                raise self._fail(f"sequences nested deeper than {_MAX_DEPTH} levels")
            if tag == _PIXEL_DATA and vr in (None, b"OB", b"OW"):
                yield from self._fragments()
            elif vr in (None, b"SQ"):
                yield from self._sequence(explicit, None, depth + 1)
            elif vr == b"UN":  # PS3.5 6.2.2: content of an undefined-length UN is Implicit VR
                yield from self._sequence(False, None, depth + 1)
            else:
                raise self._fail(f"undefined length on a {vr.decode('ascii', 'replace')} element")
            return
        if end is not None and self.offset + length > end:
            raise self._fail("an element is longer than the item that holds it")
        if vr == b"SQ" and length:
            if depth >= _MAX_DEPTH:
                raise self._fail(f"sequences nested deeper than {_MAX_DEPTH} levels")
            yield from self._sequence(explicit, self.offset + length, depth + 1)
        elif length:
            yield (_SKIP, length, False)

    def _sequence(self, explicit: bool, end: int | None, depth: int) -> _Walk:
        while True:
            if end is not None and self.offset >= end:
                if self.offset > end:
                    raise self._fail("an item runs past the end of its sequence")
                return
            raw = yield (_READ, 8, False)
            tag = self._tag.unpack_from(raw)
            length = self._u32.unpack_from(raw, 4)[0]
            tag_value = tag[0] << 16 | tag[1]
            if tag_value == _SEQUENCE_END and end is None:
                if length != 0:
                    raise self._fail("a sequence delimiter with a non-zero length")
                return
            if tag_value != _ITEM:
                raise self._fail(f"expected an item in a sequence, found ({tag[0]:04X},{tag[1]:04X})")
            if length == UNDEFINED_LENGTH:
                yield from self._elements(explicit, None, depth)
            else:
                if end is not None and self.offset + length > end:
                    raise self._fail("an item is longer than its sequence")
                yield from self._elements(explicit, self.offset + length, depth)

    def _fragments(self) -> _Walk:
        """Encapsulated Pixel Data: the offset table and fragments as items, then a sequence delimiter."""
        while True:
            raw = yield (_READ, 8, False)
            tag_value = self._tag.unpack_from(raw)
            length = self._u32.unpack_from(raw, 4)[0]
            tag = tag_value[0] << 16 | tag_value[1]
            if tag == _SEQUENCE_END:
                return
            if tag != _ITEM or length == UNDEFINED_LENGTH:
                raise self._fail("encapsulated Pixel Data holds something other than fragments")
            if length:
                yield (_SKIP, length, False)
