"""No leak under churn: 1,000 associations that store, reset mid-PDU, abort, or just close."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest

from peers import hostile
from peers.hostile import CT_IMAGE_STORAGE, EXPLICIT, RawPeer
from tests.conftest import copy_with_fresh_uids, sample_path


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


def _normal_store(port: int, dataset: bytes, sop_instance: str) -> None:
    with RawPeer("127.0.0.1", port) as peer:
        peer.associate([(1, CT_IMAGE_STORAGE, [EXPLICIT])])
        peer.send_store(1, hostile.c_store_command(CT_IMAGE_STORAGE, sop_instance), [dataset])
        assert peer.read_response().status == 0x0000
        peer.release()


def _reset_mid_pdu(port: int, dataset: bytes, sop_instance: str) -> None:
    peer = RawPeer("127.0.0.1", port)
    peer.associate([(1, CT_IMAGE_STORAGE, [EXPLICIT])])
    peer.send(hostile.p_data(1, 0x03, hostile.c_store_command(CT_IMAGE_STORAGE, sop_instance)))
    peer.send(hostile.p_data(1, 0x02, dataset)[: len(dataset) // 2])
    peer.reset()


def _abort(port: int, dataset: bytes, sop_instance: str) -> None:
    with RawPeer("127.0.0.1", port) as peer:
        peer.associate([(1, CT_IMAGE_STORAGE, [EXPLICIT])])
        peer.send(hostile.p_data(1, 0x03, hostile.c_store_command(CT_IMAGE_STORAGE, sop_instance)))
        peer.send(hostile.pdu_header(0x07, 4) + b"\0\0\0\0")


def _fin_after_associate(port: int, dataset: bytes, sop_instance: str) -> None:
    with RawPeer("127.0.0.1", port) as peer:
        peer.associate([(1, CT_IMAGE_STORAGE, [EXPLICIT])])


def _fin_before_associate(port: int, dataset: bytes, sop_instance: str) -> None:
    socket.create_connection(("127.0.0.1", port)).close()


KINDS = [_normal_store, _reset_mid_pdu, _abort, _fin_after_associate, _fin_before_associate]


def _settled(node, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if node.node.active_associations() == 0 and node.node.pending_connections == 0:
            return
        time.sleep(0.05)
    raise AssertionError("associations did not end")


@pytest.mark.slow
def test_fds_threads_and_memory_stay_flat_over_1000_mixed_associations(make_node, tmp_path: Path):
    node = make_node(network_timeout_s=2.0, artim_timeout_s=2.0)
    ds = copy_with_fresh_uids(sample_path("CT_small.dcm"), tmp_path / "ct.dcm")
    dataset = hostile.encode_dataset(ds, implicit=False)

    def churn(count: int) -> None:
        for i in range(count):
            KINDS[i % len(KINDS)](node.port, dataset, ds.SOPInstanceUID)  # stores after the first: duplicates
        _settled(node)

    churn(100)  # warm-up: caches, the index's connections, first allocations
    fds, rss = _open_fds(), _rss_mb()
    churn(1000)
    assert _open_fds() - fds <= 2
    assert _rss_mb() - rss < 30
    assert list(node.store.incoming_folder.iterdir()) == []
    assert node.store.index.study(ds.StudyInstanceUID).num_instances == 1
    assert node.node._slots.used == 0
