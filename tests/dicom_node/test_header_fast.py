"""The fast header reader gives what pydicom's reader gives, on every test file pydicom ships."""

from __future__ import annotations

from io import BytesIO
from pathlib import Path

import pydicom.data
import pytest
from pydicom.filereader import _read_file_meta_info, read_preamble

from dicom_node.errors import InvalidInstanceError
from dicom_node.header import DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN, read_header_from_dataset
from dicom_node.header_fast import header_fields, scan_raw_values


def _dataset_and_syntax(path: Path) -> tuple[bytes, str] | None:
    raw = Path(path).read_bytes()
    fp = BytesIO(raw)
    try:
        read_preamble(fp, force=False)
        meta = _read_file_meta_info(fp)
    except Exception:
        return None
    syntax = str(meta.get("TransferSyntaxUID", ""))
    if not syntax or syntax == DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN:
        return None
    return raw[fp.tell():], syntax


def _pydicom_header(dataset: bytes, syntax: str, monkeypatch):
    with monkeypatch.context() as m:
        m.setattr("dicom_node.header.scan_raw_values", lambda *a, **k: None)
        return read_header_from_dataset(dataset, syntax)


def _outcome(read):
    try:
        return read()
    except InvalidInstanceError as exc:
        return ("refused", str(exc).split(":")[0])


def test_the_fast_reader_agrees_with_pydicom_on_every_test_file(monkeypatch):
    compared = fast = 0
    # pydicom's own folder, not get_testdata_files: that one tries to download more.
    for path in sorted((Path(pydicom.data.__file__).parent / "test_files").rglob("*.dcm")):
        found = _dataset_and_syntax(path)
        if found is None:
            continue
        dataset, syntax = found
        compared += 1
        raw = scan_raw_values(dataset, explicit_vr=syntax != "1.2.840.10008.1.2",
                              little_endian=syntax != "1.2.840.10008.1.2.2")
        fast += raw is not None and header_fields(raw) is not None
        ours = _outcome(lambda: read_header_from_dataset(dataset, syntax))
        reference = _outcome(lambda: _pydicom_header(dataset, syntax, monkeypatch))
        assert ours == reference, path
    assert compared > 50
    assert fast > compared // 2  # the fast path is the common case, not the exception


@pytest.mark.parametrize("value, expected", [(b"7 ", 7), (b" 12", 12), (b"", None), (b"3.0 ", 3), (b"2.5 ", None),
                                             (b"x ", None)])
def test_integer_strings_read_as_pydicom_reads_them(value, expected):
    element = b"\x20\x00\x13\x00IS" + len(value).to_bytes(2, "little") + value
    assert header_fields(scan_raw_values(element, explicit_vr=True))["instance_number"] == expected


def test_a_nul_inside_a_uid_is_kept_so_that_it_fails():
    uid = b"1.2.3\x00.4"
    element = b"\x20\x00\x0d\x00UI" + len(uid).to_bytes(2, "little") + uid
    assert header_fields(scan_raw_values(element, explicit_vr=True))["study_uid"] == "1.2.3\x00.4"


def test_undefined_lengths_and_unknown_charsets_go_to_pydicom():
    undefined_sq = b"\x08\x00\x15\x11SQ\x00\x00\xff\xff\xff\xff"
    assert scan_raw_values(undefined_sq, explicit_vr=True) is None
    charset, name = b"ISO 2022 IR 87", b"Yamada^Tarou"
    data = (b"\x08\x00\x05\x00CS" + len(charset).to_bytes(2, "little") + charset
            + b"\x10\x00\x10\x00PN" + len(name).to_bytes(2, "little") + name)
    assert header_fields(scan_raw_values(data, explicit_vr=True)) is None


@pytest.mark.parametrize("status", [0x0000, 0xA700, 0xC210])
def test_the_hand_encoded_store_response_is_pynetdicoms(status):
    from pynetdicom.dimse_messages import C_STORE_RSP
    from pynetdicom.dimse_primitives import C_STORE
    from pynetdicom.dsutils import encode

    from dicom_node.dimse_fast import encode_store_response

    rsp = C_STORE()
    rsp.MessageID = rsp.MessageIDBeingRespondedTo = 7
    rsp.AffectedSOPInstanceUID = "1.2.826.0.1.3680043.8.498.1"
    rsp.AffectedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    rsp.Status = status
    message = C_STORE_RSP()
    message.primitive_to_message(rsp)
    assert encode_store_response(rsp) == encode(message.command_set, True, True)
    rsp.ErrorComment = "disk full"
    assert encode_store_response(rsp) is None  # left to pynetdicom
