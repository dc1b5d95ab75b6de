"""The desktop's services without Qt: configuration sections, saving settings, hosting or attaching,
signing with provenance metrics, drafting one section on demand."""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest

from dicom_node.drafts import DraftRecord, save_draft
from dicom_node.index import StudyState
from dicom_node.reports import SigningError, latest_report, outbox_of
from dicom_node.store import ReceivedInstance
from engine.provenance import Origin, SectionText
from raddraft.config import ConfigError, load_config
from raddraft.config_file import save_changes
from raddraft.workstation import Workstation
from tests.conftest import copy_with_fresh_uids, sample_path, start_service


def config_for(tmp_path: Path, text: str = "", **overrides):
    path = tmp_path / "raddraft.toml"
    path.write_text(text)
    values = {"store.root": str(tmp_path / "store"), "node.port": 0, **overrides}
    return load_config(path, values), path


@pytest.fixture
def workstation(tmp_path):
    started = []

    def start(text: str = "", **overrides) -> Workstation:
        config, path = config_for(tmp_path, text, **overrides)
        ws = Workstation.start(config, config_path=path, overrides={"store.root": str(tmp_path / "store"),
                                                                    "node.port": 0})
        started.append(ws)
        return ws

    yield start
    for ws in started:
        ws.stop()


def put_stable_study(ws: Workstation, tmp_path: Path) -> str:
    path = tmp_path / "ct.dcm"
    uid = str(copy_with_fresh_uids(sample_path("CT_small.dcm"), path).StudyInstanceUID)
    ws.store.put(ReceivedInstance.from_part10(path.read_bytes()))
    ws.store.index.transition(uid, StudyState.STABLE)
    return uid


def test_pacs_and_reading_sections(tmp_path):
    config, _ = config_for(tmp_path, '[pacs]\nae_title = "PACS"\nhost = "10.0.0.5"\nport = 4100\n'
                                     '[reading]\nradiologist = "Smith^Anna"\n')
    assert config.pacs.configured and config.pacs.describe() == "PACS@10.0.0.5:4100"
    assert config.reading.radiologist == "Smith^Anna"
    with pytest.raises(ConfigError, match="pacs.host: host and ae_title are set together"):
        config_for(tmp_path, '[pacs]\nae_title = "PACS"\n')
    with pytest.raises(ConfigError, match="pacs.port: must be between 1 and 65535"):
        config_for(tmp_path, '[pacs]\nport = 0\n')


def test_saving_settings_keeps_other_keys_and_refuses_bad_values(tmp_path):
    path = tmp_path / "raddraft.toml"
    path.write_text('[node]\nae_title = "READING1"\n\n[logging]\nlevel = "DEBUG"\n')
    config = save_changes(path, {"pacs.host": "pacs.local", "pacs.ae_title": "ARCHIVE", "node.port": 4242},
                          overrides={"store.root": str(tmp_path / "s"), "node.port": 0})
    assert (config.pacs.host, config.node.port, config.node.ae_title) == ("pacs.local", 4242, "READING1")
    assert config.logging.level == "DEBUG" and config.store.root == tmp_path / "s"
    before = path.read_text()
    with pytest.raises(ConfigError, match="node.port"):
        save_changes(path, {"node.port": 70000})
    assert path.read_text() == before  # nothing written
    assert not list(tmp_path.glob(".*partial"))


def test_hosting_without_a_model_and_a_service_that_then_refuses_the_store(workstation, tmp_path):
    ws = workstation(f'[engine]\nmodel = "{tmp_path / "no-such-bundle"}"\n')
    assert ws.node is not None and ws.attached is None and ws.queue is None
    assert any("Drafting is off" in problem for problem in ws.problems)
    status = ws.status()
    assert status.listening and f"listening on 127.0.0.1:{ws.node.port}" in status.node
    assert status.model == "no model"
    with pytest.raises(RuntimeError, match="already served by raddraft app"):
        start_service(tmp_path / "store", "--no-draft", timeout=20)


def test_attaches_to_a_running_service(workstation, tmp_path):
    service = start_service(tmp_path / "store", "--no-draft")
    try:
        ws = workstation()
        assert ws.attached is not None and ws.attached.kind == "service" and ws.attached.port == service.port
        assert ws.node is None
        assert ws.status().node.startswith("attached to raddraft service")
    finally:
        assert service.stop() == 0


def test_sign_records_provenance_metrics_and_writes_the_sr(workstation, tmp_path):
    ws = workstation('[reading]\nradiologist = "Smith^Anna"\n[pacs]\nae_title = "PACS"\nhost = "127.0.0.1"\n')
    uid = put_stable_study(ws, tmp_path)
    ws.store.index.transition(uid, StudyState.DRAFTING)
    draft = save_draft(ws.store.index, DraftRecord(uid, "m@1", "cpu", "No effusion. Heart normal.", "Normal."))
    opened = ws.open_study(uid)
    assert opened.draft.id == draft.id and opened.paths[0].exists()
    findings = SectionText(draft.findings, Origin.AI)
    impression = SectionText(draft.impression, Origin.AI)
    with pytest.raises(SigningError, match="AI-marked"):
        ws.sign(uid, {"findings": findings, "impression": impression}, draft.id)
    findings.sync_to("No effusion. Heart mildly enlarged.")  # only the typed characters change origin
    assert [findings.text[s.start:s.end] for s in findings.unreviewed()] == ["No effusion. Heart ", "."]
    findings.accept_all()
    impression.accept_all()
    report = ws.sign(uid, {"findings": findings, "impression": impression}, draft.id)
    assert latest_report(ws.store.index, uid) == report
    assert report.draft_id == draft.id and report.signed_by == "Smith^Anna"
    assert report.edit_distance > 0 and 0.5 < report.ai_share_kept < 1.0
    assert report.detail["sections"]["findings"]["model_text"] == "No effusion. Heart normal."
    assert report.detail["ai_characters_accepted_unchanged"] == len("No effusion. Heart .") + len("Normal.")
    assert outbox_of(ws.store.index, uid)[0].status == "pending"  # queued for PACS at signing
    assert pydicom.dcmread(ws.sr_file(report.id)).VerificationFlag == "VERIFIED"
    assert "Heart mildly enlarged." in ws.report_text(report.id)


def test_settings_applied_while_running(workstation, tmp_path):
    ws = workstation()
    old_port = ws.node.port
    ws.check_settings({"pacs.ae_title": "ARCHIVE", "pacs.host": "127.0.0.1"})
    with pytest.raises(ConfigError, match="pacs.host"):
        ws.check_settings({"pacs.ae_title": "ARCHIVE"})
    from engine.errors import BundleError

    with pytest.raises(BundleError, match="no-such-bundle"):  # nothing that is no bundle reaches the file
        ws.apply_settings({"pacs.ae_title": "ARCHIVE", "engine.model": str(tmp_path / "no-such-bundle")})
    assert "ARCHIVE" not in (tmp_path / "raddraft.toml").read_text()
    with pytest.raises(ConfigError, match="not a model bundle"):
        ws.verify_settings({"engine.model": str(tmp_path / "no-such-bundle")})
    done = ws.apply_settings({"pacs.ae_title": "ARCHIVE", "pacs.host": "127.0.0.1", "node.ae_title": "READER2"})
    assert ws.outbox.pacs.describe() == "ARCHIVE@127.0.0.1:104"
    assert ws.node is not None and ws.node.settings.ae_title == "READER2" and ws.node.port != 0
    assert "DICOM node restarted" in done and old_port
    assert "ARCHIVE" in (tmp_path / "raddraft.toml").read_text()


def test_draft_one_section_on_demand(workstation, tmp_path, tiny_bundle, phantom_studies):
    ws = workstation(**{"engine.model": str(tiny_bundle), "engine.providers": ["cpu"],
                        "engine.max_new_tokens": 12, "engine.draft_on_stable": False})
    for path in phantom_studies[0]["paths"]:
        ws.store.put(ReceivedInstance.from_part10(Path(path).read_bytes()))
    uid = phantom_studies[0]["study_uid"]
    pieces: list[str] = []
    findings = ws.draft_section(uid, "findings", on_piece=pieces.append)
    assert findings and "".join(pieces).strip() == findings
    assert ws.draft_section(uid, "impression", findings="Small left pleural effusion.")
    assert ws.status().provider == "CPU" and ws.status().model.startswith("tiny-test@0.0.1")


def test_a_report_signed_in_an_attached_app_is_sent_by_the_service(workstation, tmp_path):
    """One sender per store: the hosting service sends what an attached app signs (never both)."""
    import time

    from dicom_node.settings import StoreSettings
    from dicom_node.store import Store

    pacs = start_service(tmp_path / "pacs", "--no-draft", ae_title="PACS")
    settings = (f'[pacs]\nae_title = "PACS"\nhost = "127.0.0.1"\nport = {pacs.port}\n'
                '[reading]\nradiologist = "Smith^Anna"\n')
    (tmp_path / "service.toml").write_text(settings)
    service = start_service(tmp_path / "store", "--no-draft", "--log-level", "INFO",
                            "--config", str(tmp_path / "service.toml"))
    try:
        ws = workstation(settings)
        assert ws.attached is not None and ws.attached.kind == "service"
        uid = put_stable_study(ws, tmp_path)
        report = ws.sign(uid, {"findings": SectionText("Heart normal. No effusion.", Origin.HUMAN),
                               "impression": SectionText("Normal chest.", Origin.HUMAN)}, None)
        deadline = time.monotonic() + 30
        while outbox_of(ws.store.index, uid)[0].status != "sent" and time.monotonic() < deadline:
            time.sleep(0.2)
        assert outbox_of(ws.store.index, uid)[0].status == "sent"
        assert f"report of study {uid} sent to PACS@127.0.0.1:{pacs.port}" in service.log
        received = Store(StoreSettings(tmp_path / "pacs"))
        try:
            uids = {row.sop_instance_uid for row in received.index.instances_of(uid)}
        finally:
            received.close()
        assert report.sr_sop_instance_uid in uids
    finally:
        assert service.stop() == 0
        assert pacs.stop() == 0
