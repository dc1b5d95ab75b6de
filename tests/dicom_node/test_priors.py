"""Priors without a PACS peer: the prior's report read from SRs, the "prior" state of an expected prior's
arrival (over real C-STOREs to the node), priors from the store, and a PACS that is down or black-holed
(a real closed port, a real socket that never answers) giving a reason within the configured timeout."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dicom_node.errors import SettingsError
from dicom_node.index import StudyState
from dicom_node.prior_report import read_sr_report, report_from_dataset
from dicom_node.priors import (
    DISABLED,
    NONE_FOUND,
    RETRIEVED,
    TIMEOUT,
    UNREACHABLE,
    PriorLookups,
    PriorRetriever,
    images_frontal_first,
    prior_for,
    prior_status,
    priors_of,
)
from dicom_node.reports import SignedReport, sign_report
from dicom_node.settings import PacsSettings, StoreSettings
from dicom_node.sr import build_report_sr
from dicom_node.store import Store
from dicom_node.worklist import worklist_row, worklist_rows
from peers.orthanc import free_port
from tests.dicom_node.priors_fixtures import (
    c_store,
    put_all,
    report_sr,
    write_cr_study,
    write_report_sr,
)

PATIENT = "PRI-0001"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = Store(StoreSettings(tmp_path / "store"))
    yield opened
    opened.close()


# -- the prior's report --------------------------------------------------------------------------------
def test_report_read_from_dcm_coded_sections(tmp_path: Path) -> None:
    study = write_cr_study(tmp_path / "s", PATIENT, "20240302")
    path = write_report_sr(tmp_path / "s", study, "Right pleural effusion.\nNo pneumothorax.", "Right effusion.")
    report = read_sr_report(path)
    assert report is not None
    assert (report.findings, report.impression) == ("Right pleural effusion.\nNo pneumothorax.", "Right effusion.")
    assert report.completed and report.verified


def test_report_read_by_concept_meaning_when_codes_are_local(tmp_path: Path) -> None:
    study = write_cr_study(tmp_path / "s", PATIENT, "20240302")
    ds = report_sr(study, "Cardiomegaly.", "Stable heart size.", coded_by_meaning=True)
    report = report_from_dataset(ds)
    assert report is not None and (report.findings, report.impression) == ("Cardiomegaly.", "Stable heart size.")


def test_an_sr_without_sections_keeps_its_text_as_findings(tmp_path: Path) -> None:
    study = write_cr_study(tmp_path / "s", PATIENT, "20240302")
    ds = report_sr(study, "Lungs clear.", "Normal.")
    ds.ContentSequence = [item.ContentSequence[0] for item in ds.ContentSequence]  # TEXT items without headings
    for item in ds.ContentSequence:
        item.ConceptNameCodeSequence[0].CodeValue = "T9"
        item.ConceptNameCodeSequence[0].CodeMeaning = "Text"
    report = report_from_dataset(ds)
    assert report is not None and (report.findings, report.impression) == ("Lungs clear.\nNormal.", "")


def test_raddraft_s_own_sr_reads_back_as_signed_without_the_communication_or_the_ai_statements(
        store, tmp_path: Path) -> None:
    study = write_cr_study(tmp_path / "s", PATIENT, "20240302")
    put_all(store, study.paths)
    store.index.transition(study.study_uid, StudyState.DRAFTED)
    signed = sign_report(store.index, SignedReport(
        study.study_uid, "Large right pneumothorax.", "Right pneumothorax.", "Reader^A",
        detail={"critical_communication": {"text": "Told Dr Lee by telephone at 10:05."}}))
    row = store.index.study(study.study_uid)
    ds = build_report_sr(signed, row, store.index.instances_of(study.study_uid))
    impressions = next(item for item in ds.ContentSequence
                       if item.ValueType == "CONTAINER" and item.ConceptNameCodeSequence[0].CodeValue == "121072")
    assert "Told Dr Lee by telephone at 10:05." in [str(i.TextValue) for i in impressions.ContentSequence]
    report = report_from_dataset(ds)
    assert report is not None
    assert (report.findings, report.impression) == ("Large right pneumothorax.", "Right pneumothorax.")


def test_an_image_is_no_report(tmp_path: Path) -> None:
    study = write_cr_study(tmp_path / "s", PATIENT, "20240302")
    assert read_sr_report(study.paths[0]) is None


# -- the "prior" state ---------------------------------------------------------------------------------
def test_an_expected_prior_arrives_as_prior_never_completed_nor_listed(make_node, tmp_path: Path) -> None:
    running = make_node(stable_after_s=0.3, speculative_after_s=0.1)
    store, index = running.store, running.store.index
    current = write_cr_study(tmp_path / "current", PATIENT, "20250110")
    prior = write_cr_study(tmp_path / "prior", PATIENT, "20240302")
    sr = write_report_sr(tmp_path / "prior", prior, "Right pleural effusion.", "Right effusion.")
    c_store(running.port, current.paths)
    assert running.stable_seen.wait(10)
    with index.transaction() as conn:  # what PriorRetriever records before its C-MOVE
        conn.execute("INSERT INTO priors(study_uid, prior_study_uid, prior_date, state) VALUES (?,?,?,?)",
                     (current.study_uid, prior.study_uid, prior.study_date, "expected"))
    running.stable.clear()
    c_store(running.port, [*prior.paths, sr])
    time.sleep(1.0)  # longer than the quiet period: a study arriving so would be stable by now
    row = index.study(prior.study_uid)
    assert row is not None and row.state == StudyState.PRIOR and row.num_instances == 3
    assert [e.to_state for e in index.study_events(prior.study_uid)] == ["prior"]
    assert running.stable == []
    assert [r.study_uid for r in worklist_rows(index)] == [current.study_uid]
    assert worklist_row(index, prior.study_uid) is None
    assert prior_for(index, prior.study_uid) == [current.study_uid]
    frontal_first = images_frontal_first(index, prior.study_uid)
    assert [r.view_position for r in frontal_first] == ["PA", "LL"]  # the lateral came first
    assert store.index.study(current.study_uid).state == StudyState.STABLE


# -- priors from the store -----------------------------------------------------------------------------
def test_a_study_signed_here_before_is_the_prior_with_its_signed_report(store, tmp_path: Path) -> None:
    earlier = write_cr_study(tmp_path / "earlier", PATIENT, "20231105")
    older = write_cr_study(tmp_path / "older", PATIENT, "20220101")
    later = write_cr_study(tmp_path / "later", PATIENT, "20260101")  # after the current one: no prior
    other_patient = write_cr_study(tmp_path / "other", "PRI-0002", "20240101")
    current = write_cr_study(tmp_path / "current", PATIENT, "20250110")
    for study in (earlier, older, later, other_patient, current):
        put_all(store, study.paths)
    store.index.transition(earlier.study_uid, StudyState.DRAFTED)
    sign_report(store.index, SignedReport(earlier.study_uid, "Left lower lobe opacity.", "Pneumonia.", "Reader^A"))
    outcome = PriorRetriever(PacsSettings(), store.index, store, move_destination="RADDRAFT").retrieve_for(
        current.study_uid)
    assert outcome.state == RETRIEVED and outcome.priors == (earlier.study_uid,)
    assert prior_status(store.index, current.study_uid) == (RETRIEVED, "prior of 2023-11-05 ready")
    (prior,) = priors_of(store.index, current.study_uid)
    assert (prior.study_uid, prior.study_date, prior.modality) == (earlier.study_uid, "20231105", "CR")
    assert (prior.findings, prior.impression, prior.report_source) == (
        "Left lower lobe opacity.", "Pneumonia.", "raddraft")
    assert [r.view_position for r in prior.instances] == ["PA", "LL"]
    # it stays a study of its own: in the worklist with its state
    assert store.index.study(earlier.study_uid).state == StudyState.SIGNED


@pytest.mark.parametrize("sop_class", ["1.2.840.10008.5.1.4.1.1.88.11", "1.2.840.10008.5.1.4.1.1.88.22",
                                       "1.2.840.10008.5.1.4.1.1.88.33"], ids=["basic", "enhanced", "comprehensive"])
def test_an_sr_in_the_prior_gives_its_report(store, tmp_path: Path, sop_class: str) -> None:
    earlier = write_cr_study(tmp_path / "earlier", PATIENT, "20231105")
    sr = write_report_sr(tmp_path / "earlier", earlier, "Cardiomegaly.", "Enlarged heart.", sop_class=sop_class)
    current = write_cr_study(tmp_path / "current", PATIENT, "20250110")
    put_all(store, [*earlier.paths, sr, *current.paths])
    PriorRetriever(PacsSettings(), store.index, store, move_destination="RADDRAFT").retrieve_for(current.study_uid)
    (prior,) = priors_of(store.index, current.study_uid)
    assert (prior.findings, prior.impression, prior.report_source) == ("Cardiomegaly.", "Enlarged heart.", "sr")
    assert len(prior.instances) == 2  # its images, not the SR


def test_two_priors_newest_first_and_other_body_parts_left_out(store, tmp_path: Path) -> None:
    newest = write_cr_study(tmp_path / "a", PATIENT, "20241201", body_part="ABDOMEN")
    second = write_cr_study(tmp_path / "b", PATIENT, "20240601")
    third = write_cr_study(tmp_path / "c", PATIENT, "20230101")
    current = write_cr_study(tmp_path / "current", PATIENT, "20250110")
    for study in (newest, second, third, current):
        put_all(store, study.paths)
    retriever = PriorRetriever(PacsSettings(priors=2), store.index, store, move_destination="RADDRAFT")
    assert retriever.retrieve_for(current.study_uid).priors == (second.study_uid, third.study_uid)
    assert [p.study_uid for p in priors_of(store.index, current.study_uid)] == [second.study_uid, third.study_uid]
    assert all(p.report_source == "" and p.findings == "" for p in priors_of(store.index, current.study_uid))


def test_without_pacs_or_prior_the_reason_says_so(store, tmp_path: Path) -> None:
    current = write_cr_study(tmp_path / "current", PATIENT, "20250110")
    put_all(store, current.paths)
    assert prior_status(store.index, current.study_uid)[0] == DISABLED  # never looked up
    outcome = PriorRetriever(PacsSettings(), store.index, store, move_destination="RADDRAFT").retrieve_for(
        current.study_uid)
    assert outcome.state == DISABLED and "no PACS configured" in outcome.reason
    assert priors_of(store.index, current.study_uid) == []


def test_only_studies_of_the_modality_family_have_or_are_priors(store, tmp_path: Path) -> None:
    ct_before = write_cr_study(tmp_path / "ct", PATIENT, "20240601", modality="CT")
    cr_before = write_cr_study(tmp_path / "cr", PATIENT, "20230601")
    cr_now = write_cr_study(tmp_path / "now", PATIENT, "20250110")
    ct_now = write_cr_study(tmp_path / "ctnow", PATIENT, "20250111", modality="CT")
    for study in (ct_before, cr_before, cr_now, ct_now):
        put_all(store, study.paths)
    retriever = PriorRetriever(PacsSettings(), store.index, store, move_destination="RADDRAFT")
    assert retriever.retrieve_for(cr_now.study_uid).priors == (cr_before.study_uid,)  # the newer CT is no prior
    outcome = retriever.retrieve_for(ct_now.study_uid)
    assert outcome.state == DISABLED and "not CT" in outcome.reason and priors_of(store.index, ct_now.study_uid) == []


# -- a PACS that is down or silent ---------------------------------------------------------------------
def test_a_pacs_that_is_down_means_no_prior_and_the_reason(store, tmp_path: Path) -> None:
    current = write_cr_study(tmp_path / "current", PATIENT, "20250110")
    put_all(store, current.paths)
    pacs = PacsSettings(ae_title="ARCHIVE", host="127.0.0.1", port=free_port(), find_timeout_s=5)
    started = time.monotonic()
    outcome = PriorRetriever(pacs, store.index, store, move_destination="RADDRAFT").retrieve_for(current.study_uid)
    assert time.monotonic() - started < 4
    assert outcome.state == UNREACHABLE and not outcome.has_prior
    state, reason = prior_status(store.index, current.study_uid)
    assert state == UNREACHABLE and "ARCHIVE@127.0.0.1" in reason and "cannot be reached" in reason


@pytest.fixture
def silent_pacs():
    """A TCP listener that accepts and never says a word (a hung PACS, or a firewall that lets SYN through)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join(2)
    for conn in accepted:
        conn.close()
    server.close()


def test_a_silent_pacs_times_out_after_the_configured_find_timeout(store, tmp_path: Path, silent_pacs) -> None:
    current = write_cr_study(tmp_path / "current", PATIENT, "20250110")
    put_all(store, current.paths)
    pacs = PacsSettings(ae_title="ARCHIVE", host="127.0.0.1", port=silent_pacs, find_timeout_s=1.0)
    started = time.monotonic()
    outcome = PriorRetriever(pacs, store.index, store, move_destination="RADDRAFT").retrieve_for(current.study_uid)
    elapsed = time.monotonic() - started
    assert 0.9 <= elapsed < 3.0, elapsed
    assert outcome.state == TIMEOUT and "within 1 s" in outcome.reason


def test_a_settled_lookup_is_not_repeated_and_lookups_always_hand_the_study_on(store, tmp_path: Path) -> None:
    current = write_cr_study(tmp_path / "current", PATIENT, "20250110")
    put_all(store, current.paths)
    retriever = PriorRetriever(PacsSettings(), store.index, store, move_destination="RADDRAFT")
    with store.index.transaction() as conn:
        conn.execute("INSERT INTO prior_lookups(study_uid, state, reason, finished_at) VALUES (?,?,?,?)",
                     (current.study_uid, NONE_FOUND, "recorded before", time.time()))
    assert retriever.retrieve_for(current.study_uid).reason == "recorded before"
    assert retriever.retrieve_for(current.study_uid, again=True).state == DISABLED
    handed_on: list[str] = []
    done = threading.Event()
    lookups = PriorLookups(retriever)
    lookups.submit("1.2.3.4.unknown", lambda uid: (handed_on.append(uid), done.set()))
    assert done.wait(10) and handed_on == ["1.2.3.4.unknown"]
    assert prior_status(store.index, "1.2.3.4.unknown")[0] == "failed"
    lookups.stop()
    lookups.submit(current.study_uid, handed_on.append)  # stopped: handed on at once, without priors
    assert handed_on[-1] == current.study_uid


@pytest.mark.parametrize(("field", "value", "message"), [
    ("priors", 11, "between 0 and 10"), ("retrieve", "fetch", "move, get"), ("find_timeout_s", 0, "positive"),
    ("prior_modalities", ("CR\\DX",), "not a DICOM modality"),
])
def test_bad_query_retrieve_settings_name_their_key(field: str, value, message: str) -> None:
    with pytest.raises(SettingsError, match=message) as raised:
        PacsSettings(**{field: value})
    assert raised.value.key == field


def test_the_query_retrieve_keys_come_from_the_pacs_section_of_the_configuration(tmp_path: Path) -> None:
    from raddraft.config import ConfigError, load_config

    path = tmp_path / "raddraft.toml"
    path.write_text('[pacs]\nae_title = "ARCHIVE"\nhost = "10.0.0.5"\nquery_priors = true\npriors = 2\n'
                    'prior_modalities = ["CR", "DX", "CT"]\nretrieve = "get"\nfind_timeout_s = 3\nmove_timeout_s = 30\n')
    pacs = load_config(path).pacs
    assert (pacs.priors, pacs.prior_modalities, pacs.retrieve, pacs.find_timeout_s, pacs.move_timeout_s) == (
        2, ("CR", "DX", "CT"), "get", 3.0, 30.0)
    path.write_text('[pacs]\nretrieve = "fetch"\n')
    with pytest.raises(ConfigError, match="pacs.retrieve: must be one of move, get"):
        load_config(path)
