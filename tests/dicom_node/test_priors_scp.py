"""A PACS that answers the C-FIND but whose C-MOVE never finishes (a pynetdicom Query/Retrieve SCP on
loopback): the lookup gives up after `move_timeout_s`, the study has no prior and says why, and the prior's
instances that arrive late are still stored as a prior, never as new work."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE, evt
from pynetdicom.sop_class import (
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelMove,
)

from dicom_node.index import StudyState
from dicom_node.priors import NONE_FOUND, TIMEOUT, PriorRetriever, prior_status, priors_of
from dicom_node.settings import PacsSettings
from dicom_node.worklist import worklist_rows
from tests.dicom_node.priors_fixtures import (
    BASIC_TEXT_SR,
    CR_STORAGE,
    c_store,
    put_all,
    write_cr_study,
    write_report_sr,
)

PATIENT = "SLOW-0001"


class HangingPacs:
    """Answers C-FIND with the prior study; a C-MOVE waits until `release` and then sends the prior."""

    def __init__(self, prior_paths: list[Path], prior_date: str, prior_uid: str) -> None:
        self.answer_patient_id: str | None = None  # None: answers without Patient ID
        self.paths = prior_paths
        self.prior = [pydicom.dcmread(p) for p in prior_paths]
        self.prior_date, self.prior_uid = prior_date, prior_uid
        self.release = threading.Event()
        self.move_requested = threading.Event()
        self.ae = AE(ae_title="SLOWPACS")
        self.ae.add_supported_context(StudyRootQueryRetrieveInformationModelFind)
        self.ae.add_supported_context(StudyRootQueryRetrieveInformationModelMove)
        self.ae.add_requested_context(CR_STORAGE)
        self.ae.add_requested_context(BASIC_TEXT_SR)
        self.destination_port = 0
        self.server = self.ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=[
            (evt.EVT_C_FIND, self._find), (evt.EVT_C_MOVE, self._move)])

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    def _find(self, event):
        if event.identifier.QueryRetrieveLevel != "STUDY":
            return
        answer = Dataset()
        answer.QueryRetrieveLevel = "STUDY"
        answer.StudyInstanceUID = self.prior_uid
        answer.StudyDate = self.prior_date
        answer.StudyTime = "101500"
        answer.ModalitiesInStudy = ["CR", "SR"]
        answer.StudyDescription = "CHEST"
        answer.NumberOfStudyRelatedInstances = len(self.prior)
        if self.answer_patient_id is not None:
            answer.PatientID = self.answer_patient_id
        yield 0xFF00, answer

    def _move(self, event):
        self.move_requested.set()
        yield "127.0.0.1", self.destination_port
        yield len(self.prior)
        self.release.wait(30)
        yield 0xFE00, None  # cancelled: the images come later by another route (the test sends them)

    def stop(self) -> None:
        self.release.set()
        self.server.shutdown()


@pytest.fixture
def hanging_pacs(tmp_path: Path) -> Iterator[tuple[HangingPacs, object]]:
    prior = write_cr_study(tmp_path / "prior", PATIENT, "20240302")
    sr = write_report_sr(tmp_path / "prior", prior, "Left effusion.", "Effusion.")
    pacs = HangingPacs([*prior.paths, sr], prior.study_date, prior.study_uid)
    yield pacs, prior
    pacs.stop()


def test_a_c_move_that_hangs_gives_up_after_move_timeout_and_late_images_stay_a_prior(
        make_node, tmp_path: Path, hanging_pacs) -> None:
    pacs, prior = hanging_pacs
    running = make_node(stable_after_s=0.3, speculative_after_s=0)
    pacs.destination_port = running.port
    store, index = running.store, running.store.index
    current = write_cr_study(tmp_path / "current", PATIENT, "20250110")
    put_all(store, current.paths)
    settings = PacsSettings(ae_title="SLOWPACS", host="127.0.0.1", port=pacs.port, find_timeout_s=5,
                            move_timeout_s=1.0)
    started = time.monotonic()
    outcome = PriorRetriever(settings, index, store, move_destination="RADDRAFT").retrieve_for(current.study_uid)
    elapsed = time.monotonic() - started
    assert pacs.move_requested.is_set()
    assert elapsed < 4.0, elapsed
    assert outcome.state == TIMEOUT and outcome.reason.startswith("drafted without a prior: retrieving it failed")
    assert prior_status(index, current.study_uid)[0] == TIMEOUT and priors_of(index, current.study_uid) == []

    # a PACS may well go on with the sub-operations after we gave up: the prior arrives late
    c_store(running.port, pacs.paths)
    time.sleep(0.8)  # past the quiet period
    late = index.study(prior.study_uid)
    assert late is not None and late.state == StudyState.PRIOR and late.num_instances == 3
    assert running.stable == []
    assert [row.study_uid for row in worklist_rows(index)] == [current.study_uid]


def test_answers_for_another_patient_are_never_taken_as_priors(make_node, tmp_path: Path, hanging_pacs) -> None:
    """'*' and '?' in a Patient ID are wildcards to the PACS: its answers for other patients are left out."""
    pacs, _prior = hanging_pacs
    pacs.answer_patient_id = "SOMEONE-ELSE"
    running = make_node()
    store, index = running.store, running.store.index
    current = write_cr_study(tmp_path / "current", "SLOW*", "20250110")
    put_all(store, current.paths)
    settings = PacsSettings(ae_title="SLOWPACS", host="127.0.0.1", port=pacs.port, move_timeout_s=1.0)
    outcome = PriorRetriever(settings, index, store, move_destination="RADDRAFT").retrieve_for(current.study_uid)
    assert outcome.state == NONE_FOUND and not pacs.move_requested.is_set()
