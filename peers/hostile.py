"""A hand-built DICOM sender for tests and benchmarks that play a broken or hostile peer.

`RawPeer` speaks the upper layer protocol (PS3.8) byte by byte over a plain socket, so it can send
what no well-behaved library would: a PDU header that claims 4 GB, half an A-ASSOCIATE-RQ, a dataset
cut short, a C-STORE on the Verification context. Datasets go out from an iterable of chunks, so the
sender itself never holds a large one.
"""

from __future__ import annotations

import socket
import struct
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset

APPLICATION_CONTEXT = "1.2.840.10008.3.1.1.1"
IMPLEMENTATION_UID = "1.2.826.0.1.3680043.9.9999.1"
VERIFICATION = "1.2.840.10008.1.1"
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
IMPLICIT = "1.2.840.10008.1.2"
EXPLICIT = "1.2.840.10008.1.2.1"
DEFLATED = "1.2.840.10008.1.2.1.99"
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"


def _uid(value: str) -> bytes:
    raw = value.encode("ascii")
    return raw + b"\0" if len(raw) % 2 else raw


def _item(item_type: int, body: bytes) -> bytes:
    return struct.pack(">BBH", item_type, 0, len(body)) + body


def associate_rq(contexts: Sequence[tuple[int, str, Sequence[str]]], called: str = "RADDRAFT",
                 calling: str = "HOSTILE", max_pdu: int = 16384) -> bytes:
    """An A-ASSOCIATE-RQ PDU proposing (context id, abstract syntax, transfer syntaxes)."""
    body = struct.pack(">HH16s16s32s", 1, 0, called.ljust(16).encode(), calling.ljust(16).encode(), b"")
    body += _item(0x10, APPLICATION_CONTEXT.encode())
    for context_id, abstract, syntaxes in contexts:
        sub = _item(0x30, abstract.encode()) + b"".join(_item(0x40, ts.encode()) for ts in syntaxes)
        body += _item(0x20, struct.pack(">BBBB", context_id, 0, 0, 0) + sub)
    user = _item(0x51, struct.pack(">L", max_pdu)) + _item(0x52, IMPLEMENTATION_UID.encode())
    body += _item(0x50, user)
    return struct.pack(">BBL", 0x01, 0, len(body)) + body


def pdu_header(pdu_type: int, length: int) -> bytes:
    return struct.pack(">BBL", pdu_type, 0, length)


def p_data(context_id: int, control: int, fragment: bytes) -> bytes:
    """A P-DATA-TF PDU with one PDV; control: 0 dataset, 2 last dataset, 1 command, 3 last command."""
    pdv = struct.pack(">LBB", len(fragment) + 2, context_id, control) + fragment
    return pdu_header(0x04, len(pdv)) + pdv


def c_store_command(sop_class: str, sop_instance: str, message_id: int = 1) -> bytes:
    cmd = Dataset()
    cmd.AffectedSOPClassUID = sop_class
    cmd.CommandField = 0x0001
    cmd.MessageID = message_id
    cmd.Priority = 0
    cmd.CommandDataSetType = 0x0000
    cmd.AffectedSOPInstanceUID = sop_instance
    return _command_bytes(cmd)


def c_echo_command(message_id: int = 1) -> bytes:
    cmd = Dataset()
    cmd.AffectedSOPClassUID = VERIFICATION
    cmd.CommandField = 0x0030
    cmd.MessageID = message_id
    cmd.CommandDataSetType = 0x0101
    return _command_bytes(cmd)


def _command_bytes(cmd: Dataset) -> bytes:
    body = encode_dataset(cmd, implicit=True)
    group_length = struct.pack("<HHLL", 0x0000, 0x0000, 4, len(body))
    return group_length + body


def encode_dataset(ds: Dataset, *, implicit: bool) -> bytes:
    buffer = DicomBytesIO()
    buffer.is_little_endian = True
    buffer.is_implicit_VR = implicit
    write_dataset(buffer, ds)
    return buffer.getvalue()


def deflate(data: bytes) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    out = compressor.compress(data) + compressor.flush()
    return out + b"\0" if len(out) % 2 else out


@dataclass
class Response:
    kind: str  # "status", "abort", "closed", "reject", "release"
    status: int | None = None
    comment: str = ""


class RawPeer:
    """One TCP connection to a DICOM node, driven PDU by PDU."""

    def __init__(self, host: str, port: int, timeout: float = 10.0, source_host: str | None = None) -> None:
        # source_host: another loopback address (127.0.0.2) plays a second peer address on one machine.
        source = (source_host, 0) if source_host else None
        self.sock = socket.create_connection((host, port), timeout=timeout, source_address=source)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.max_pdu = 16384

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def reset(self) -> None:
        """Close with an RST instead of a FIN (as a crashed sender's kernel would)."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close()

    def __enter__(self) -> RawPeer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read_pdu(self) -> tuple[int, bytes] | None:
        """The next PDU (type, body); None when the node closed the connection."""
        header = self._read_exactly(6)
        if header is None:
            return None
        pdu_type, _, length = struct.unpack(">BBL", header)
        body = self._read_exactly(length)
        return None if body is None else (pdu_type, body)

    def _read_exactly(self, n: int) -> bytes | None:
        data = bytearray()
        while len(data) < n:
            try:
                chunk = self.sock.recv(n - len(data))
            except (ConnectionResetError, BrokenPipeError):
                return None
            if not chunk:
                return None
            data += chunk
        return bytes(data)

    def closed_by_node(self) -> bool:
        """Wait (up to the socket timeout) for the node to close; True if it did (FIN or RST)."""
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
        except (ConnectionResetError, BrokenPipeError):
            return True
        except TimeoutError:
            return False

    def associate(self, contexts: Sequence[tuple[int, str, Sequence[str]]], called: str = "RADDRAFT") -> dict[int, int]:
        """Send an A-ASSOCIATE-RQ; return {context id: result} (0 accepted) from the A-ASSOCIATE-AC."""
        self.send(associate_rq(contexts, called=called))
        pdu = self.read_pdu()
        if pdu is None or pdu[0] != 0x02:
            raise ConnectionError(f"association not accepted: {pdu!r:.80}")
        results, max_pdu = _accepted_contexts(pdu[1])
        self.max_pdu = min(max_pdu or (1 << 20), 1 << 20)
        return results

    def send_store(self, context_id: int, command: bytes, dataset: Iterable[bytes], *, last: bool = True) -> None:
        """A C-STORE-RQ: the command, then the dataset's chunks in fragments of at most max_pdu."""
        self.send(p_data(context_id, 0x03, command))
        fragment = self.max_pdu - 6
        pending = b""
        for chunk in _reslice(dataset, fragment):
            if pending:
                self.send(p_data(context_id, 0x00, pending))
            pending = chunk
        self.send(p_data(context_id, 0x02 if last else 0x00, pending))

    def read_response(self) -> Response:
        """The node's answer to a request: a status from a response command, or how the node ended it."""
        command = b""
        while True:
            pdu = self.read_pdu()
            if pdu is None:
                return Response("closed")
            pdu_type, body = pdu
            if pdu_type == 0x07:
                return Response("abort")
            if pdu_type == 0x03:
                return Response("reject")
            if pdu_type != 0x04:
                return Response(f"pdu 0x{pdu_type:02x}")
            offset = 0
            while offset < len(body):
                (length,) = struct.unpack_from(">L", body, offset)
                control = body[offset + 5]
                command += body[offset + 6:offset + 4 + length]
                offset += 4 + length
                if control & 3 == 3:
                    return _status_of(command)

    def release(self) -> None:
        self.send(pdu_header(0x05, 4) + b"\0\0\0\0")
        self.read_pdu()
        self.close()


def _reslice(chunks: Iterable[bytes], size: int) -> Iterator[bytes]:
    buffer = bytearray()
    for chunk in chunks:
        buffer += chunk
        while len(buffer) >= size:
            yield bytes(buffer[:size])
            del buffer[:size]
    if buffer:
        yield bytes(buffer)


def _accepted_contexts(body: bytes) -> tuple[dict[int, int], int]:
    """({context id: result}, the acceptor's maximum PDU length or 0) from an A-ASSOCIATE-AC body."""
    results: dict[int, int] = {}
    max_pdu = 0
    offset = 68
    while offset + 4 <= len(body):
        item_type, _, length = struct.unpack_from(">BBH", body, offset)
        if item_type == 0x21:
            results[body[offset + 4]] = body[offset + 6]
        elif item_type == 0x50:
            sub = offset + 4
            while sub + 4 <= offset + 4 + length:
                sub_type, _, sub_length = struct.unpack_from(">BBH", body, sub)
                if sub_type == 0x51:
                    (max_pdu,) = struct.unpack_from(">L", body, sub + 4)
                sub += 4 + sub_length
        offset += 4 + length
    return results, max_pdu


def _status_of(command: bytes) -> Response:
    from pydicom.filereader import read_dataset
    import io

    ds = read_dataset(io.BytesIO(command), is_implicit_VR=True, is_little_endian=True)
    return Response("status", int(ds.Status), str(ds.get("ErrorComment", "")))


def _unclosed_sequence(encoded: bytes) -> bytes:
    # An undefined-length sequence with one open item and no delimiters, as the last element.
    return encoded + b"\x08\x00\x15\x11SQ\x00\x00\xff\xff\xff\xff" + b"\xfe\xff\x00\xe0\xff\xff\xff\xff" \
        + b"\x08\x00\x50\x11UI\x04\x001.2\0"


@dataclass(frozen=True)
class BrokenStore:
    """A C-STORE that must not succeed: its dataset bytes, the context's syntax and SOP classes."""

    dataset: bytes
    syntax: str
    command_sop_class: str = CT_IMAGE_STORAGE
    context_sop_class: str = CT_IMAGE_STORAGE


def broken_stores(ds: Dataset) -> dict[str, BrokenStore]:
    """The cases the hostile-sender review found stored with success, built from one whole CT dataset
    (Pixel Data last): each must be answered with a failure and leave nothing stored."""
    explicit = encode_dataset(ds, implicit=False)
    deflated = deflate(explicit)
    other_class = ds.copy()
    other_class.SOPClassUID = MR_IMAGE_STORAGE
    return {
        "unclosed sequence": BrokenStore(_unclosed_sequence(explicit), EXPLICIT),
        "Pixel Data longer than sent": BrokenStore(explicit[:-1000], EXPLICIT),
        "explicit VR bytes, implicit context": BrokenStore(explicit, IMPLICIT),
        "implicit VR bytes, explicit context": BrokenStore(encode_dataset(ds, implicit=True), EXPLICIT),
        "native pixels, JPEG Baseline context": BrokenStore(explicit, JPEG_BASELINE),
        "deflate stream cut at 60 %": BrokenStore(deflated[: len(deflated) * 6 // 10], DEFLATED),
        "dataset SOP Class differs": BrokenStore(encode_dataset(other_class, implicit=False), EXPLICIT),
        "C-STORE on the Verification context": BrokenStore(encode_dataset(ds, implicit=True), IMPLICIT,
                                                          context_sop_class=VERIFICATION),
    }
