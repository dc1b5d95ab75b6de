"""A section drafted on demand in the app (Workstation.draft_section: regenerate, "Impression from findings")
is prompted as the queued draft is, with the study's newest prior, for a bundle that takes priors."""

from __future__ import annotations

from pathlib import Path

import pytest

from dicom_node.index import StudyState
from dicom_node.priors import priors_of
from dicom_node.reports import SignedReport, sign_report
from engine.prompts import prior_input
from raddraft.config import load_config
from raddraft.workstation import Workstation
from tests.dicom_node.priors_fixtures import put_all, write_cr_study
from tests.engine.test_priors_prompt import prior_bundle

PATIENT = "ODP-29"


@pytest.fixture
def ws(tiny_bundle: Path, tmp_path: Path):
    """A workstation on the tiny bundle taking prior reports, over a store with a current CR study and an
    earlier, signed one of the same patient, looked up as its prior from the store (no PACS)."""
    bundle = prior_bundle(tiny_bundle, tmp_path / "bundle", "report")
    config_file = tmp_path / "raddraft.toml"
    config_file.write_text('[reading]\nradiologist = "Smith^Anna"\n')
    overrides = {"store.root": str(tmp_path / "store"), "node.port": 0, "engine.draft_on_stable": False,
                 "engine.model": str(bundle), "engine.providers": ["cpu"], "engine.max_new_tokens": 12}
    station = Workstation.start(load_config(config_file, overrides), config_path=config_file, overrides=overrides)
    try:
        yield station
    finally:
        station.stop()


def test_a_section_drafted_on_demand_takes_the_studys_newest_prior(ws: Workstation, tmp_path: Path) -> None:
    earlier = write_cr_study(tmp_path / "earlier", PATIENT, "20240620")
    put_all(ws.store, earlier.paths)
    ws.store.index.transition(earlier.study_uid, StudyState.DRAFTED)
    sign_report(ws.store.index, SignedReport(earlier.study_uid, "Large right pleural effusion.",
                                             "Right pleural effusion.", "Reader^A"))
    current = write_cr_study(tmp_path / "current", PATIENT, "20250110")
    put_all(ws.store, current.paths)
    ws.store.index.transition(current.study_uid, StudyState.STABLE)
    ws.look_for_priors(current.study_uid)
    priors = priors_of(ws.store.index, current.study_uid)
    assert [p.study_uid for p in priors] == [earlier.study_uid]

    model = ws.model
    paths = [ws.store.path_of(row) for row in ws.store.index.instances_of(current.study_uid)]
    prior = prior_input(priors[0], ws.store.path_of)
    queued = model.draft(paths, prior=prior)
    assert queued.prompts.get("prior") == "given"
    assert ws.draft_section(current.study_uid, "findings") == queued.findings
    assert ws.draft_section(current.study_uid, "impression") == queued.impression
    given = "Small left pleural effusion."
    assert ws.draft_section(current.study_uid, "impression", findings=given) == \
        model.draft_section(paths, "impression", findings=given, prior=prior).text
    # the tiny model's text hardly depends on the prior, so the engine call is watched too (it still runs)
    asked = []
    real = model.draft_section
    model.draft_section = lambda *args, **kwargs: asked.append(kwargs) or real(*args, **kwargs)
    ws.draft_section(current.study_uid, "impression")
    assert asked[0]["prior"] == prior and asked[0]["prior"].study_uid == earlier.study_uid
