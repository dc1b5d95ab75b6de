"""Priors from a real PACS: Orthanc holds a patient's earlier CR chest study and its report SR; the current
study is routed by Orthanc to RadDraft's workstation (node, priors lookup, drafting queue with the embedded
model), which C-FINDs the earlier study at Orthanc, C-MOVEs it to its own AE title (RadDraft registered in
Orthanc as a modality) and drafts the current study only once the prior is there. The prior is stored,
marked "prior", never drafted and never in the worklist; priors_of() gives its images and its report.
Orthanc down, or no prior at Orthanc: drafted without a prior, the reason recorded. C-GET as well.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dicom_node.index import StudyState
from dicom_node.priors import NONE_FOUND, RETRIEVED, UNREACHABLE, PriorRetriever, prior_status, priors_of
from dicom_node.settings import PacsSettings, StoreSettings
from dicom_node.store import Store
from dicom_node.worklist import worklist_rows
from peers.dcmtk import storescu_send
from peers.orthanc import Modality, Orthanc
from raddraft.config import load_config
from raddraft.workstation import Workstation
from tests.conftest import wait_until
from tests.dicom_node.priors_fixtures import WrittenStudy, put_all, write_cr_study, write_report_sr
from tests.e2e.orthanc_site import PACS_AE, RADDRAFT_AE, ROUTE, route_to, routing_orthanc, start_workstation

ARCHIVE_AE, MODALITY_AE = "ARCHIVE", "CRROOM1"
# a prior is looked up before drafting: an unreachable PACS must not hold the draft up for long
PRIOR_TIMEOUTS = {"pacs.find_timeout_s": 5.0, "pacs.move_timeout_s": 20.0}
PATIENT = "PRIORS-0001"
PRIOR_FINDINGS = "Moderate right pleural effusion. No pneumothorax."
PRIOR_IMPRESSION = "Right pleural effusion."


@pytest.fixture
def orthanc(tmp_path: Path) -> Iterator[Orthanc]:
    """Orthanc routing what modalities store to RadDraft, but not what the archive migrates into it (the
    prior) nor what RadDraft sends."""
    with routing_orthanc(tmp_path / "orthanc", never_route_from=[ARCHIVE_AE]) as running:
        yield running


def store_prior_in_pacs(orthanc: Orthanc, out: Path) -> tuple[WrittenStudy, Path]:
    prior = write_cr_study(out, PATIENT, "20240302")
    sr = write_report_sr(out, prior, PRIOR_FINDINGS, PRIOR_IMPRESSION)
    storescu_send([*prior.paths, sr], orthanc.dicom_port, PACS_AE, calling_ae=ARCHIVE_AE)
    assert len(orthanc.study_instances(orthanc.study_id(prior.study_uid))) == 3
    return prior, sr


def drafted(workstation: Workstation, study_uid: str) -> bool:
    row = workstation.store.index.study(study_uid)
    return row is not None and row.state == StudyState.DRAFTED


@pytest.mark.peers
@pytest.mark.slow
def test_the_prior_is_moved_from_orthanc_before_the_draft_and_kept_out_of_the_worklist(
        orthanc: Orthanc, tmp_path: Path) -> None:
    prior, _sr = store_prior_in_pacs(orthanc, tmp_path / "prior")
    other = write_cr_study(tmp_path / "other", "PRIORS-0002", "20240101")  # another patient: never a prior
    storescu_send(other.paths, orthanc.dicom_port, PACS_AE, calling_ae=ARCHIVE_AE)
    workstation = start_workstation(tmp_path, orthanc.dicom_port, PRIOR_TIMEOUTS)
    try:
        route_to(orthanc, workstation)
        current = write_cr_study(tmp_path / "current", PATIENT, "20250110")
        storescu_send(current.paths, orthanc.dicom_port, PACS_AE, calling_ae=MODALITY_AE)
        index = workstation.store.index
        wait_until(lambda: drafted(workstation, current.study_uid), 90,
                   f"the current study to be drafted\n{orthanc.log_tail()}")

        assert prior_status(index, current.study_uid) == (RETRIEVED, "prior of 2024-03-02 ready")
        (found,) = priors_of(index, current.study_uid)
        assert (found.study_uid, found.study_date, found.modality) == (prior.study_uid, "20240302", "CR")
        assert [row.view_position for row in found.instances] == ["PA", "LL"]
        assert (found.findings, found.impression, found.report_source) == (PRIOR_FINDINGS, PRIOR_IMPRESSION, "sr")

        # stored like any instance, as a prior: not completed, not drafted, not in the worklist
        prior_row = index.study(prior.study_uid)
        assert prior_row.state == StudyState.PRIOR and prior_row.num_instances == 3
        assert [event.to_state for event in index.study_events(prior.study_uid)] == ["prior"]
        assert workstation.open_study(prior.study_uid, mark=False).draft is None
        assert [row.study_uid for row in worklist_rows(index)] == [current.study_uid]
        assert index.study(other.study_uid) is None
        # the prior was there before the draft was made
        retrieved_at = index.reader().execute("SELECT retrieved_at FROM priors WHERE prior_study_uid = ?",
                                              (prior.study_uid,)).fetchone()[0]
        draft = workstation.open_study(current.study_uid, mark=False).draft
        assert retrieved_at < draft.created_at
        time.sleep(1.5)  # past the quiet period: the prior is still not drafted
        assert index.study(prior.study_uid).state == StudyState.PRIOR
        # what the app reads, and its "look again": the prior is in the store, nothing is moved twice
        assert workstation.priors(current.study_uid) == ([found], (RETRIEVED, "prior of 2024-03-02 ready"))
        again = workstation.look_for_priors(current.study_uid)
        assert again.priors == (prior.study_uid,) and again.retrieve_s < 1.0
        assert index.study(prior.study_uid).num_instances == 3
    finally:
        workstation.stop()


@pytest.mark.peers
@pytest.mark.slow
def test_orthanc_down_or_without_a_prior_drafts_without_one_saying_why(orthanc: Orthanc, tmp_path: Path) -> None:
    other = write_cr_study(tmp_path / "other", "PRIORS-0002", "20240101")
    storescu_send(other.paths, orthanc.dicom_port, PACS_AE, calling_ae=ARCHIVE_AE)
    workstation = start_workstation(tmp_path, orthanc.dicom_port, PRIOR_TIMEOUTS)
    try:
        index = workstation.store.index
        route_to(orthanc, workstation)
        lonely = write_cr_study(tmp_path / "lonely", PATIENT, "20250110")
        storescu_send(lonely.paths, orthanc.dicom_port, PACS_AE, calling_ae=MODALITY_AE)
        wait_until(lambda: drafted(workstation, lonely.study_uid), 90, f"the study to be drafted\n{orthanc.log_tail()}")
        state, reason = prior_status(index, lonely.study_uid)
        assert state == NONE_FOUND and "no earlier study of this patient" in reason
        assert priors_of(index, lonely.study_uid) == []

        assert orthanc.stop() == 0
        unreached = write_cr_study(tmp_path / "unreached", "PRIORS-0003", "20250111")
        started = time.monotonic()
        storescu_send(unreached.paths, workstation.node.port, RADDRAFT_AE, calling_ae=MODALITY_AE)
        wait_until(lambda: drafted(workstation, unreached.study_uid), 60, "the study to be drafted")
        assert time.monotonic() - started < 20
        state, reason = prior_status(index, unreached.study_uid)
        assert state == UNREACHABLE and "cannot be reached" in reason and reason.startswith("drafted without a prior")
    finally:
        workstation.stop()


@pytest.mark.peers
def test_c_get_retrieves_the_prior_without_a_move_destination(orthanc: Orthanc, tmp_path: Path) -> None:
    prior, _sr = store_prior_in_pacs(orthanc, tmp_path / "prior")
    # Orthanc answers C-FIND and C-GET only to modalities it knows; no port is needed for C-GET.
    orthanc.add_modality(Modality(ROUTE, RADDRAFT_AE, "127.0.0.1", 1))
    current = write_cr_study(tmp_path / "current", PATIENT, "20250110")
    store = Store(StoreSettings(tmp_path / "store"))
    try:
        put_all(store, current.paths)
        settings = PacsSettings(ae_title=PACS_AE, host="127.0.0.1", port=orthanc.dicom_port, calling_ae=RADDRAFT_AE,
                                retrieve="get")
        outcome = PriorRetriever(settings, store.index, store, move_destination=RADDRAFT_AE).retrieve_for(
            current.study_uid)
        assert outcome.state == RETRIEVED, outcome.reason
        (found,) = priors_of(store.index, current.study_uid)
        assert found.study_uid == prior.study_uid and len(found.instances) == 2
        assert (found.findings, found.impression) == (PRIOR_FINDINGS, PRIOR_IMPRESSION)
        assert store.index.study(prior.study_uid).state == StudyState.PRIOR
    finally:
        store.close()


@pytest.mark.slow
def test_a_study_left_complete_by_a_restart_has_its_priors_looked_up_before_its_draft(tmp_path: Path) -> None:
    """No PACS: the prior is an earlier study of the patient in the store, found when the queue takes up again
    the studies a previous run left complete."""
    earlier = write_cr_study(tmp_path / "earlier", PATIENT, "20231105")
    current = write_cr_study(tmp_path / "current", PATIENT, "20250110")
    store = Store(StoreSettings(tmp_path / "store"))
    try:
        put_all(store, [*earlier.paths, *current.paths])
        for study in (earlier, current):
            store.index.transition(study.study_uid, StudyState.STABLE)
    finally:
        store.close()
    config_file = tmp_path / "raddraft.toml"
    config_file.write_text("")
    overrides = {"store.root": str(tmp_path / "store"), "node.port": 0}
    workstation = Workstation.start(load_config(config_file, overrides), config_path=config_file, overrides=overrides)
    try:
        wait_until(lambda: drafted(workstation, current.study_uid), 90, "the current study to be drafted")
        state, reason = prior_status(workstation.store.index, current.study_uid)
        assert (state, reason) == (RETRIEVED, "prior of 2023-11-05 ready")
        assert [p.study_uid for p in priors_of(workstation.store.index, current.study_uid)] == [earlier.study_uid]
        # the earlier study is a study of its own: drafted too, without a prior of its own
        wait_until(lambda: drafted(workstation, earlier.study_uid), 90, "the earlier study to be drafted")
        assert prior_status(workstation.store.index, earlier.study_uid)[0] == "disabled"
    finally:
        workstation.stop()
