"""The node against broken and hostile senders: hand-built PDUs over raw sockets (peers/hostile.py).

Every test configures short timeouts, so each one ends by itself within seconds.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterable
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import generate_uid
from pynetdicom.sop_class import CTImageStorage, Verification

from dicom_node.handlers import (CANNOT_UNDERSTAND, DATASET_DOES_NOT_MATCH_SOP_CLASS, MISSING_OR_BAD_UID,
                                 OUT_OF_RESOURCES, SOP_CLASS_NOT_SUPPORTED, SUCCESS)
from peers import hostile
from peers.hostile import CT_IMAGE_STORAGE, EXPLICIT, IMPLICIT, JPEG_BASELINE, RawPeer
from tests.conftest import copy_with_fresh_uids, sample_path
from tests.dicom_node.conftest import associate

FAST = dict(artim_timeout_s=0.5, network_timeout_s=1.0, pdu_timeout_s=0.5, acse_timeout_s=2.0, shutdown_grace_s=0.5)


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _wait_until(predicate, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def _ct_dataset(tmp_path: Path, **uids) -> pydicom.Dataset:
    return copy_with_fresh_uids(sample_path("CT_small.dcm"), tmp_path / f"{generate_uid()}.dcm", **uids)


def _encoded(ds: pydicom.Dataset, implicit: bool = False) -> bytes:
    return hostile.encode_dataset(ds, implicit=implicit)


def _store_raw(node, dataset: bytes | Iterable[bytes], *, sop_class: str = CT_IMAGE_STORAGE, sop_instance: str,
               syntax: str = EXPLICIT, context_sop_class: str | None = None) -> hostile.Response:
    with RawPeer("127.0.0.1", node.port) as peer:
        accepted = peer.associate([(1, context_sop_class or sop_class, [syntax])])
        assert accepted[1] == 0, "the context was not accepted"
        chunks = [dataset] if isinstance(dataset, (bytes, bytearray)) else dataset
        peer.send_store(1, hostile.c_store_command(sop_class, sop_instance), chunks)
        response = peer.read_response()
        if response.kind == "status":
            peer.release()
        return response


def _nothing_kept(node) -> bool:
    return node.store.index.studies() == [] and list(node.store.incoming_folder.iterdir()) == []


# -- memory follows our limits, never the peer's claims ----------------------------------------------
def test_a_pdu_longer_than_we_advertised_is_aborted_without_reading_it(make_node):
    node = make_node(**FAST)
    before = _rss_bytes()
    peers = []
    for _ in range(10):
        peer = RawPeer("127.0.0.1", node.port, timeout=3)
        peer.associate([(1, CT_IMAGE_STORAGE, [EXPLICIT])])
        peer.send(hostile.pdu_header(0x04, 0xFFFFFFF0))  # 4 GB claimed, nothing sent
        peers.append(peer)
    for peer in peers:
        pdu = peer.read_pdu()
        assert pdu is not None and pdu[0] == 0x07, "expected an A-ABORT"
        assert peer.closed_by_node()
        peer.close()
    assert _rss_bytes() - before < 50 << 20
    assert _wait_until(lambda: node.node.active_associations() == 0, 3)


def test_an_associate_rq_claiming_4_gb_is_aborted_at_once(make_node):
    node = make_node(**FAST)
    with RawPeer("127.0.0.1", node.port, timeout=2) as peer:
        peer.send(hostile.pdu_header(0x01, 0xFFFFFFF0))
        started = time.monotonic()
        pdu = peer.read_pdu()
        assert pdu is not None and pdu[0] == 0x07
        assert peer.closed_by_node() and time.monotonic() - started < 1.0


def test_non_dicom_bytes_are_answered_and_closed_at_once(make_node):
    node = make_node(**FAST)
    for garbage in (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", os.urandom(4096), b"\x16\x03\x01\x02\x00\x01"):
        with RawPeer("127.0.0.1", node.port, timeout=2) as peer:
            peer.send(b"\x02" + garbage[1:] if garbage[0] == 1 else garbage)
            started = time.monotonic()
            assert peer.closed_by_node()
            assert time.monotonic() - started < 0.5
    assert associate(node.port, [Verification]).is_established


def test_a_large_instance_streams_to_disk_and_its_duplicate_too(make_node, tmp_path):
    node = make_node(**FAST)
    ds = _ct_dataset(tmp_path)
    pixels = 96 << 20
    encoded = _encoded(ds)
    head = encoded[:encoded.index(b"\xe0\x7f\x10\x00OW")]  # everything before Pixel Data
    block = os.urandom(1 << 20)

    def dataset():
        yield head + b"\xe0\x7f\x10\x00OW\x00\x00" + pixels.to_bytes(4, "little")
        for _ in range(pixels // len(block)):
            yield block

    before = _rss_bytes()
    for _ in range(2):  # the second time it is a duplicate: compared by digest, not in memory
        response = _store_raw(node, dataset(), sop_instance=ds.SOPInstanceUID)
        assert response.status == 0x0000, response
    assert _rss_bytes() - before < 60 << 20
    row = node.store.index.instance(ds.SOPInstanceUID)
    assert row.size > pixels and node.store.index.store_events("replaced") == []
    assert list(node.store.incoming_folder.iterdir()) == []


def test_a_deflated_dataset_over_the_inflate_cap_is_refused(make_node, tmp_path):
    node = make_node(max_inflated_bytes=4 << 20, **FAST)
    ds = _ct_dataset(tmp_path)
    ds.PixelData = bytes(16 << 20)  # zeros: inflates 1000-fold
    ds.Rows, ds.Columns = 2048, 4096
    response = _store_raw(node, hostile.deflate(_encoded(ds)), sop_instance=ds.SOPInstanceUID,
                          syntax=hostile.DEFLATED)
    assert response.status == OUT_OF_RESOURCES and "inflates" in response.comment
    assert _nothing_kept(node)


# -- slots cannot be starved ---------------------------------------------------------------------------
@pytest.mark.parametrize("first_bytes", [b"", b"\x01\x00\x00", "half-rq"])
def test_connections_without_a_whole_associate_rq_are_closed_by_artim(make_node, first_bytes):
    node = make_node(**FAST)
    if first_bytes == "half-rq":
        rq = hostile.associate_rq([(1, CT_IMAGE_STORAGE, [EXPLICIT])])
        first_bytes = rq[: len(rq) // 2]
    with RawPeer("127.0.0.1", node.port, timeout=3) as peer:
        peer.send(first_bytes)
        started = time.monotonic()
        assert peer.closed_by_node()
        assert 0.3 < time.monotonic() - started < 2.0


def test_closed_connections_free_their_slot_at_once(make_node):
    node = make_node(max_associations=2, **FAST)
    for _ in range(11):  # a port scan, a load balancer's health check
        socket.create_connection(("127.0.0.1", node.port)).close()
    started = time.monotonic()
    assoc = associate(node.port, [Verification])
    assert assoc.is_established and time.monotonic() - started < 0.5
    assoc.release()


def test_idle_and_half_header_connections_do_not_starve_a_sender(make_node, tmp_path):
    storescu = pytest.importorskip("peers.dcmtk")
    from tests.conftest import require_tool

    require_tool("storescu")
    node = make_node(artim_timeout_s=10.0, network_timeout_s=5.0)
    threads_before = threading.active_count()
    idle = [socket.create_connection(("127.0.0.1", node.port)) for _ in range(200)]
    half = []
    for _ in range(20):
        s = socket.create_connection(("127.0.0.1", node.port))
        s.sendall(b"\x01\x00\x00")
        half.append(s)
    study_uid = generate_uid()
    paths = []
    for i in range(5):
        path = tmp_path / f"ct{i}.dcm"
        copy_with_fresh_uids(sample_path("CT_small.dcm"), path, study_uid=study_uid)
        paths.append(path)
    started = time.monotonic()
    storescu.storescu_send(paths, node.port, "RADDRAFT", timeout=20)
    elapsed = time.monotonic() - started
    assert node.store.index.study(study_uid).num_instances == 5
    assert elapsed < 5.0
    assert threading.active_count() - threads_before < 10  # no thread per idle socket
    assert node.node.pending_connections <= node.node.settings.max_pending_per_peer
    for s in idle + half:
        s.close()


def test_peers_stalled_inside_a_pdu_from_one_address_leave_slots_to_other_senders(make_node, tmp_path):
    # pdu_timeout_s far beyond the test: the stalled peers hold their associations throughout.
    node = make_node(max_associations=10, max_associations_per_peer=4,
                     **{**FAST, "pdu_timeout_s": 30.0, "network_timeout_s": 30.0})
    stalled, rejected = [], 0
    for _ in range(10):
        peer = RawPeer("127.0.0.1", node.port, timeout=4, source_host="127.0.0.2")
        try:
            peer.associate([(1, CT_IMAGE_STORAGE, [EXPLICIT])])
        except ConnectionError:
            rejected += 1
            peer.close()
            continue
        peer.send(hostile.pdu_header(0x04, 1000) + b"\0" * 100)  # half a P-DATA-TF, then silence
        stalled.append(peer)
    try:
        assert (len(stalled), rejected) == (4, 6)
        assert node.node.active_associations() == 4
        ds = _ct_dataset(tmp_path)
        started = time.monotonic()
        assoc = associate(node.port, [CTImageStorage])
        assert assoc.is_established
        assert assoc.send_c_store(ds).Status == SUCCESS
        assoc.release()
        assert time.monotonic() - started < 2.0
        assert node.store.index.instance(ds.SOPInstanceUID) is not None
    finally:
        for peer in stalled:
            peer.close()
    assert _wait_until(lambda: node.node.active_associations() == 0, 3)
    again = RawPeer("127.0.0.1", node.port, timeout=4, source_host="127.0.0.2")
    with again:  # the address's share is free again once its peers are gone
        again.associate([(1, CT_IMAGE_STORAGE, [EXPLICIT])])
        again.release()


def test_a_peer_stuck_inside_a_pdu_loses_its_association(make_node):
    node = make_node(**{**FAST, "network_timeout_s": 30.0})  # the PDU timeout, not the idle one, must end it
    with RawPeer("127.0.0.1", node.port, timeout=4) as peer:
        peer.associate([(1, CT_IMAGE_STORAGE, [EXPLICIT])])
        peer.send(hostile.pdu_header(0x04, 1000) + b"\0" * 100)  # half a P-DATA-TF, then silence
        started = time.monotonic()
        assert peer.closed_by_node()
        assert time.monotonic() - started < 2.0
    assert _wait_until(lambda: node.node.active_associations() == 0, 3)


def test_a_peer_stuck_inside_a_dataset_loses_its_association_and_leaves_nothing(make_node, tmp_path):
    node = make_node(**FAST)
    ds = _ct_dataset(tmp_path)
    encoded = _encoded(ds)
    with RawPeer("127.0.0.1", node.port, timeout=4) as peer:
        peer.associate([(1, CT_IMAGE_STORAGE, [EXPLICIT])])
        peer.send(hostile.p_data(1, 0x03, hostile.c_store_command(CT_IMAGE_STORAGE, ds.SOPInstanceUID)))
        peer.send(hostile.p_data(1, 0x00, encoded[: len(encoded) // 2]))
        assert _wait_until(lambda: len(list(node.store.incoming_folder.iterdir())) == 1, 2)
        assert peer.closed_by_node()
    assert _wait_until(lambda: node.node.active_associations() == 0, 3)
    assert _wait_until(lambda: _nothing_kept(node), 2)


# -- shutdown always finishes --------------------------------------------------------------------------
def test_stop_finishes_with_stuck_peers(make_node, tmp_path):
    node = make_node(artim_timeout_s=30.0, network_timeout_s=60.0, shutdown_grace_s=0.5)
    stuck = []
    for partial in (b"", hostile.pdu_header(0x04, 1000) + b"\0" * 10):
        peer = RawPeer("127.0.0.1", node.port, timeout=5)
        peer.associate([(1, CT_IMAGE_STORAGE, [EXPLICIT])])
        peer.send(partial)
        stuck.append(peer)
    pending = RawPeer("127.0.0.1", node.port, timeout=5)
    pending.send(b"\x01\x00")
    assert _wait_until(lambda: node.node.active_associations() == 2, 2)
    started = time.monotonic()
    node.node.stop()
    assert time.monotonic() - started < 3.0
    for peer in [*stuck, pending]:
        assert peer.closed_by_node()
        peer.close()


def test_sigterm_with_stuck_peers_exits_0_after_the_grace(tmp_path):
    from tests.conftest import start_service

    config = tmp_path / "node.toml"
    config.write_text("[node]\nshutdown_grace_s = 1.0\nnetwork_timeout_s = 120.0\npdu_timeout_s = 60.0\n"
                      "artim_timeout_s = 60.0\n")
    service = start_service(tmp_path / "store", "--no-draft", "--config", str(config))
    try:
        peer = RawPeer("127.0.0.1", service.port, timeout=10)
        peer.associate([(1, CT_IMAGE_STORAGE, [EXPLICIT])])
        peer.send(hostile.pdu_header(0x04, 1000) + b"\0" * 10)
        half = RawPeer("127.0.0.1", service.port, timeout=10)
        half.send(b"\x01\x00\x00")
        time.sleep(0.3)
        started = time.monotonic()
        assert service.stop(timeout=15) == 0
        assert time.monotonic() - started < 6.0
        assert peer.closed_by_node() and half.closed_by_node()
    finally:
        if service.process.poll() is None:
            service.process.kill()


# -- success only for a whole, consistent dataset ------------------------------------------------------
EXPECTED_STATUS = {
    "dataset SOP Class differs": DATASET_DOES_NOT_MATCH_SOP_CLASS,
    "C-STORE on the Verification context": SOP_CLASS_NOT_SUPPORTED,
}


BROKEN_CASES = ["unclosed sequence", "Pixel Data longer than sent", "explicit VR bytes, implicit context",
                "implicit VR bytes, explicit context", "native pixels, JPEG Baseline context",
                "deflate stream cut at 60 %", "dataset SOP Class differs", "C-STORE on the Verification context"]


def test_the_broken_cases_are_all_tested(tmp_path):
    assert sorted(hostile.broken_stores(_ct_dataset(tmp_path))) == sorted(BROKEN_CASES)


@pytest.mark.parametrize("case", BROKEN_CASES)
def test_a_dataset_that_is_not_whole_or_not_what_was_announced_gets_a_failure(make_node, tmp_path, case):
    node = make_node(**FAST)
    ds = _ct_dataset(tmp_path)
    broken = hostile.broken_stores(ds)[case]
    response = _store_raw(node, broken.dataset, sop_instance=ds.SOPInstanceUID, syntax=broken.syntax,
                          sop_class=broken.command_sop_class, context_sop_class=broken.context_sop_class)
    assert response.kind == "status" and response.status == EXPECTED_STATUS.get(case, CANNOT_UNDERSTAND), response
    assert _nothing_kept(node)


def test_the_datasets_sop_class_must_match_the_context(make_node, tmp_path):
    node = make_node(**FAST)
    ds = _ct_dataset(tmp_path)
    ds.SOPClassUID = hostile.MR_IMAGE_STORAGE
    response = _store_raw(node, _encoded(ds), sop_instance=ds.SOPInstanceUID)
    assert response.status == DATASET_DOES_NOT_MATCH_SOP_CLASS
    ds2 = _ct_dataset(tmp_path)
    response = _store_raw(node, _encoded(ds2), sop_class=hostile.MR_IMAGE_STORAGE, sop_instance=ds2.SOPInstanceUID,
                          context_sop_class=CT_IMAGE_STORAGE)
    assert response.status == DATASET_DOES_NOT_MATCH_SOP_CLASS
    assert _nothing_kept(node)


def test_a_whole_dataset_with_sequences_and_encapsulated_pixels_is_stored(make_node, tmp_path):
    node = make_node(**FAST)
    ds = _ct_dataset(tmp_path)
    inner = pydicom.Dataset()
    inner.CodeValue, inner.CodingSchemeDesignator = "T-D0050", "SRT"
    ds.AnatomicRegionSequence = [inner, inner]
    response = _store_raw(node, _encoded(ds), sop_instance=ds.SOPInstanceUID)
    assert response.status == 0x0000
    assert node.store.index.instance(ds.SOPInstanceUID) is not None


# -- the index -----------------------------------------------------------------------------------------
def test_a_uid_with_a_nul_inside_is_refused_not_merged(make_node, tmp_path):
    node = make_node(**FAST)
    ds = _ct_dataset(tmp_path, study_uid="1.2.3.4")
    encoded = _encoded(ds).replace(b"1.2.3.4\0", b"1.2.3\x00.4", 1)
    assert b"1.2.3\x00.4" in encoded
    response = _store_raw(node, encoded, sop_instance=ds.SOPInstanceUID)
    assert response.status == MISSING_OR_BAD_UID
    assert _nothing_kept(node)


def test_an_instance_resent_under_another_study_leaves_no_empty_study(make_node, tmp_path):
    node = make_node(stable_after_s=0.3, **FAST)
    first, second = generate_uid(), generate_uid()
    ds = _ct_dataset(tmp_path, study_uid=first)
    assoc = associate(node.port, [CTImageStorage])
    assert assoc.send_c_store(ds).Status == 0
    ds.StudyInstanceUID = second
    assert assoc.send_c_store(ds).Status == 0
    assoc.release()
    assert node.store.index.study(first) is None
    assert node.store.index.study(second).num_instances == 1
    assert _wait_until(lambda: [e.study_uid for e in node.stable] == [second], 3)
    time.sleep(0.5)
    assert [e.study_uid for e in node.stable] == [second]
