"""Every transfer syntax pydicom knows is accepted and stored byte for byte; unknown storage classes too."""

from __future__ import annotations

import copy
import shutil
import subprocess

import pydicom
import pytest
from pydicom._uid_dict import UID_dictionary
from pydicom.encaps import encapsulate
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.uid import generate_uid

from dicom_node.handlers import SOP_CLASS_NOT_SUPPORTED, SUCCESS
from dicom_node.store import dataset_offset
from dicom_node.syntaxes import ACCEPTED_TRANSFER_SYNTAXES, traits_of
from peers import hostile
from peers.dcmtk import dcmtk_env
from peers.hostile import CT_IMAGE_STORAGE, EXPLICIT, RawPeer
from tests.conftest import copy_with_fresh_uids, sample_path

HTJ2K = ("1.2.840.10008.1.2.4.201", "1.2.840.10008.1.2.4.202", "1.2.840.10008.1.2.4.203")
JPEG_XL = ("1.2.840.10008.1.2.4.110", "1.2.840.10008.1.2.4.111", "1.2.840.10008.1.2.4.112")
BIG_ENDIAN = "1.2.840.10008.1.2.2"
RETIRED_JPEG = ("1.2.840.10008.1.2.4.52", "1.2.840.10008.1.2.4.55", "1.2.840.10008.1.2.4.66")
VIDEO = ("1.2.840.10008.1.2.4.100", "1.2.840.10008.1.2.4.102", "1.2.840.10008.1.2.4.107", "1.2.840.10008.1.2.4.108")
PRIVATE_STORAGE_CLASS = "1.2.826.0.1.3680043.8.498.77.1"  # under pydicom's root: known to nobody
MODALITY_WORKLIST_FIND = "1.2.840.10008.5.1.4.31"


def test_every_transfer_syntax_in_pydicoms_dictionary_is_accepted():
    pydicom_syntaxes = {uid for uid, entry in UID_dictionary.items() if entry[1] == "Transfer Syntax"}
    not_streams = {"1.2.840.10008.1.2.6.1", "1.2.840.10008.1.2.6.2", "1.2.840.10008.1.20"}
    assert pydicom_syntaxes - not_streams <= set(ACCEPTED_TRANSFER_SYNTAXES)
    for named in (*HTJ2K, *JPEG_XL, BIG_ENDIAN, *RETIRED_JPEG, *VIDEO, "1.2.840.10008.1.2.1.99"):
        assert named in ACCEPTED_TRANSFER_SYNTAXES


def _encode(ds: pydicom.Dataset, transfer_syntax: str) -> bytes:
    traits = traits_of(transfer_syntax)
    ds = copy.deepcopy(ds)  # Dataset.copy() shares the elements, and Pixel Data is changed here
    if traits.encapsulated:
        ds.PixelData = encapsulate([b"\xff\x4f\xff\x51" + bytes(200), b"\xff\x4f" + bytes(101)])
        ds["PixelData"].VR = "OB"
        ds["PixelData"].is_undefined_length = True
    buffer = DicomBytesIO()
    buffer.is_little_endian = traits.little_endian
    buffer.is_implicit_VR = not traits.explicit_vr
    write_dataset(buffer, ds)
    encoded = buffer.getvalue()
    return hostile.deflate(encoded) if traits.deflated else encoded


def _stored_dataset(node, sop_instance_uid: str) -> bytes:
    row = node.store.index.instance(sop_instance_uid)
    assert row is not None, sop_instance_uid
    data = node.store.path_of(row).read_bytes()
    return data[dataset_offset(data):]


def test_each_accepted_syntax_is_stored_byte_for_byte(make_node, tmp_path):
    node = make_node()
    base = copy_with_fresh_uids(sample_path("CT_small.dcm"), tmp_path / "ct.dcm")
    syntaxes = list(ACCEPTED_TRANSFER_SYNTAXES)
    contexts = [(2 * i + 1, CT_IMAGE_STORAGE, [ts]) for i, ts in enumerate(syntaxes)]
    with RawPeer("127.0.0.1", node.port, timeout=10) as peer:
        results = peer.associate(contexts)
        assert [cid for cid, result in results.items() if result != 0] == []
        sent = {}
        for (context_id, _, (ts,)) in contexts:
            ds = base.copy()
            ds.SOPInstanceUID = generate_uid()
            encoded = _encode(ds, ts)
            peer.send_store(context_id, hostile.c_store_command(CT_IMAGE_STORAGE, ds.SOPInstanceUID), [encoded])
            response = peer.read_response()
            assert (ts, response.status) == (ts, SUCCESS), response
            sent[ds.SOPInstanceUID] = (ts, encoded)
        peer.release()
    for uid, (ts, encoded) in sent.items():
        assert _stored_dataset(node, uid) == encoded, ts
        assert node.store.index.instance(uid).transfer_syntax == ts


def test_a_big_endian_dataset_is_walked_whole_and_a_cut_one_refused(make_node, tmp_path):
    node = make_node()
    ds = copy_with_fresh_uids(sample_path("MR_small_bigendian.dcm"), tmp_path / "mr.dcm")
    encoded = _encode(ds, BIG_ENDIAN)
    sop_class = str(ds.SOPClassUID)
    with RawPeer("127.0.0.1", node.port, timeout=10) as peer:
        peer.associate([(1, sop_class, [BIG_ENDIAN])])
        peer.send_store(1, hostile.c_store_command(sop_class, ds.SOPInstanceUID), [encoded[:-20]])
        assert peer.read_response().status != SUCCESS
        peer.send_store(1, hostile.c_store_command(sop_class, ds.SOPInstanceUID, message_id=2), [encoded])
        assert peer.read_response().status == SUCCESS
        peer.release()
    stored = node.store.path_of(node.store.index.instance(ds.SOPInstanceUID))
    assert pydicom.dcmread(stored).PixelData == ds.PixelData


def test_an_unknown_storage_class_is_accepted_and_a_known_other_service_is_not(make_node, tmp_path):
    node = make_node()
    ds = copy_with_fresh_uids(sample_path("CT_small.dcm"), tmp_path / "ct.dcm")
    ds.SOPClassUID = PRIVATE_STORAGE_CLASS
    encoded = _encode(ds, EXPLICIT)
    with RawPeer("127.0.0.1", node.port, timeout=10) as peer:
        results = peer.associate([(1, PRIVATE_STORAGE_CLASS, [EXPLICIT]), (3, MODALITY_WORKLIST_FIND, [EXPLICIT])])
        assert results[1] == 0 and results[3] != 0
        peer.send_store(1, hostile.c_store_command(PRIVATE_STORAGE_CLASS, ds.SOPInstanceUID), [encoded])
        assert peer.read_response().status == SUCCESS
        peer.release()
    assert _stored_dataset(node, ds.SOPInstanceUID) == encoded
    assert node.store.index.instance(ds.SOPInstanceUID).sop_class_uid == PRIVATE_STORAGE_CLASS


def test_a_c_store_on_the_verification_context_is_still_refused(make_node, tmp_path):
    node = make_node()
    ds = copy_with_fresh_uids(sample_path("CT_small.dcm"), tmp_path / "ct.dcm")
    with RawPeer("127.0.0.1", node.port, timeout=10) as peer:
        peer.associate([(1, "1.2.840.10008.1.1", [EXPLICIT])])
        peer.send_store(1, hostile.c_store_command("1.2.840.10008.1.1", ds.SOPInstanceUID), [_encode(ds, EXPLICIT)])
        assert peer.read_response().status == SOP_CLASS_NOT_SUPPORTED
        peer.release()


# storescu's options for syntaxes it proposes (-R: only that one) for files already in them.
STORESCU_PROPOSES = {"1.2.840.10008.1.2.4.100": "-xm", "1.2.840.10008.1.2.4.101": "-xh",
                     "1.2.840.10008.1.2.4.102": "-xn", "1.2.840.10008.1.2.4.103": "-xl",
                     "1.2.840.10008.1.2.4.104": "-x2", "1.2.840.10008.1.2.4.105": "-x3",
                     "1.2.840.10008.1.2.4.106": "-xo", "1.2.840.10008.1.2.4.107": "-x4",
                     "1.2.840.10008.1.2.4.108": "-x5", "1.2.840.10008.1.2.1.99": "-xd"}


@pytest.mark.parametrize("transfer_syntax", sorted(STORESCU_PROPOSES))
def test_storescu_sends_video_and_deflated_files_and_they_are_stored(make_node, tmp_path, transfer_syntax):
    if shutil.which("storescu") is None:
        pytest.skip("storescu is not installed (apt-get install dcmtk)")
    node = make_node()
    ds = copy_with_fresh_uids(sample_path("CT_small.dcm"), tmp_path / "ct.dcm")
    path = tmp_path / "sent.dcm"
    ds.file_meta.TransferSyntaxUID = transfer_syntax
    prefix = ds.file_meta
    encoded = _encode(ds, transfer_syntax)
    part10 = DicomBytesIO()
    from pydicom.filewriter import write_file_meta_info

    part10.write(b"\0" * 128 + b"DICM")
    write_file_meta_info(part10, prefix, enforce_standard=True)
    path.write_bytes(part10.getvalue() + encoded)
    result = subprocess.run(["storescu", STORESCU_PROPOSES[transfer_syntax], "-R", "-aec", "RADDRAFT", "127.0.0.1",
                             str(node.port), str(path)], capture_output=True, text=True, timeout=60, env=dcmtk_env())
    assert result.returncode == 0, result.stderr[-800:]
    # storescu re-encodes a dataset from its own reading of the file (and deflates it again), so what
    # arrived is its encoding, not the file's bytes (the byte-for-byte check is the RawPeer test's): the
    # stored file must hold the sent syntax and the very same pixel bytes.
    stored = pydicom.dcmread(node.store.path_of(node.store.index.instance(ds.SOPInstanceUID)))
    expected = pydicom.dcmread(path)
    assert stored.file_meta.TransferSyntaxUID == transfer_syntax
    assert stored.PixelData == expected.PixelData and stored.SOPInstanceUID == expected.SOPInstanceUID
