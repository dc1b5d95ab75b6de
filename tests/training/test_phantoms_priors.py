"""Longitudinal phantoms (`raddraft synth --priors`): the same patient at two dates, what changed, the manifest."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
from datetime import date

import pydicom
import pytest

from training.data.findings import SEVERITIES, Finding, FindingSampling
from training.data.longitudinal import CHANGES, PriorError, PriorSampling, derive_prior_findings
from training.data.phantoms import PRIOR_FIELDS, PhantomConfig, generate_dataset, read_manifest
from training.train.config import TrainConfigError, data_source_from_dict
from training.train.studies import ensure_phantoms

CONFIG = PhantomConfig(image_size=64, lateral_fraction=0.4, workers=1)
STUDIES = 40


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    """The same seed without and with priors."""
    plain_dir, prior_dir = tmp_path_factory.mktemp("plain"), tmp_path_factory.mktemp("priors")
    generate_dataset(plain_dir, STUDIES, seed=9, config=CONFIG)
    generate_dataset(prior_dir, STUDIES, seed=9, config=CONFIG, priors=True)
    return (plain_dir, read_manifest(plain_dir / "manifest.jsonl")), (prior_dir, read_manifest(prior_dir / "manifest.jsonl"))


def _date(dicom_date: str) -> date:
    return date(int(dicom_date[:4]), int(dicom_date[4:6]), int(dicom_date[6:8]))


@pytest.mark.slow
def test_priors_keep_each_current_study_and_add_fields(both):
    (plain_dir, plain), (prior_dir, longitudinal) = both
    assert not any(set(PRIOR_FIELDS) & set(r) for r in plain)  # the default manifest is as it was
    for before, after in zip(plain, longitudinal):
        assert set(after) == set(before) | set(PRIOR_FIELDS) | {"report_without_prior"}
        assert {k: v for k, v in after.items() if k not in PRIOR_FIELDS and k not in ("report", "report_without_prior")} == \
            {k: v for k, v in before.items() if k != "report"}
        assert after["report_without_prior"] == before["report"]  # what a reader without the prior writes
        for path in before["images"]:
            assert (prior_dir / path).read_bytes() == (plain_dir / path).read_bytes()
        if after["prior_study_uid"] is None:  # the same report, saying first that there is nothing to compare
            assert after["report"]["impression"] == before["report"]["impression"]
            assert after["report"]["findings"].endswith(" " + before["report"]["findings"])
    description = json.loads((prior_dir / "dataset.json").read_text())
    assert description["priors"]["with_prior"] == sum(1 for r in longitudinal if r["prior_study_uid"])
    assert "priors" not in json.loads((plain_dir / "dataset.json").read_text())


@pytest.mark.slow
def test_a_share_of_studies_has_no_prior_and_says_so(both):
    _, (_, records) = both
    without = [r for r in records if r["prior_study_uid"] is None]
    assert 0.1 <= len(without) / len(records) <= 0.5
    for record in without:
        assert all(record[field] is None for field in PRIOR_FIELDS)
        first = record["report"]["findings"].split(".")[0].lower()
        assert "comparison" in first and ("no prior" in first or "no previous" in first)


@pytest.mark.slow
def test_prior_is_the_same_patient_at_an_earlier_date(both):
    _, (out, records) = both
    with_prior = [r for r in records if r["prior_study_uid"]]
    assert with_prior
    for record in with_prior:
        current = pydicom.dcmread(out / record["images"][0], stop_before_pixels=True)
        assert len(record["prior_images"]) == len(record["prior_views"]) == len(record["prior_image_info"]) >= 1
        for path, view in zip(record["prior_images"], record["prior_views"]):
            prior = pydicom.dcmread(out / path)
            assert prior.pixel_array.std() > 0 and prior.ViewPosition == view
            for tag in ("PatientID", "PatientName", "PatientBirthDate", "PatientSex"):
                assert prior[tag].value == current[tag].value, tag
            assert prior.StudyInstanceUID == record["prior_study_uid"] != current.StudyInstanceUID
            assert prior.AccessionNumber != current.AccessionNumber
            assert _date(prior.StudyDate).isoformat() == record["prior_date"]
            assert 1 <= (_date(current.StudyDate) - _date(prior.StudyDate)).days <= 3 * 365
        kinds = {f["kind"] for f in record["prior_findings"]}
        assert all((record["prior_labels"][k] == "present") == (k in kinds) for k in kinds | {"edema", "nodule"})
        assert set(record["prior_report"]) == {"findings", "impression"}
        assert record["prior_report"]["findings"] and record["prior_report"]["impression"]


@pytest.mark.slow
def test_dciodvfy_finds_no_errors_in_priors(both):
    tool = shutil.which("dciodvfy")
    if tool is None:
        if os.environ.get("RADDRAFT_REQUIRE_PEERS") == "1":
            pytest.fail("dciodvfy (dicom3tools) is required (RADDRAFT_REQUIRE_PEERS=1) but not on PATH")
        pytest.skip("dciodvfy (dicom3tools) is not installed")
    _, (out, records) = both
    paths = [out / p for r in records for p in r["prior_images"] or ()][:6]
    assert paths
    for path in paths:
        result = subprocess.run([tool, str(path)], capture_output=True, text=True, timeout=60, check=False)
        assert not [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("Error")], path


@pytest.mark.slow
def test_change_labels_match_the_two_sets_of_findings(both):
    _, (_, records) = both
    seen = set()
    for record in (r for r in records if r["prior_study_uid"]):
        now = {f["kind"]: f for f in record["findings"] if f["kind"] != "support_device"}
        then = {f["kind"]: f for f in record["prior_findings"] if f["kind"] != "support_device"}
        pathology_change = {k: v for k, v in record["change"].items() if k != "support_device"}
        assert set(pathology_change) == set(now) | set(then)
        for kind, how in pathology_change.items():
            seen.add(how)
            assert how in CHANGES
            if how == "new":
                assert kind in now and kind not in then
            elif how == "resolved":
                assert kind in then and kind not in now and record["labels"][kind] == "absent"
            elif how == "unchanged":
                assert now[kind] == then[kind]
            else:
                step = SEVERITIES.index(now[kind]["severity"]) - SEVERITIES.index(then[kind]["severity"])
                assert step == (1 if how == "increased" else -1)
        devices_now = {f["device"] for f in record["findings"] if f["kind"] == "support_device"}
        devices_then = {f["device"] for f in record["prior_findings"] if f["kind"] == "support_device"}
        moves = record["device_change"]
        assert set(moves) == devices_now | devices_then
        assert all((how == "removed") == (d not in devices_now) for d, how in moves.items())
        assert all((how == "new") == (d not in devices_then) for d, how in moves.items())
        if "moved" in moves.values():
            assert "support_device" not in record["change"]
    assert seen >= {"new", "unchanged", "increased", "decreased"}


def test_derived_changes_cover_every_kind_over_many_draws():
    import numpy as np

    rng = np.random.default_rng(0)
    current = (Finding("pleural_effusion", side="right", severity="moderate"),
               Finding("nodule", side="left", zone="upper", severity="moderate", size_mm=20.0),
               Finding("support_device", device="endotracheal_tube", severity="mild"))
    seen, device_seen = set(), set()
    for _ in range(200):
        prior, change, devices = derive_prior_findings(rng, current, FindingSampling(), PriorSampling())
        seen |= {how for _, how in change}
        device_seen |= {how for _, how in devices}
        for f in prior:
            if f.kind == "nodule" and dict(change)["nodule"] == "increased":
                assert f.size_mm < 20.0
    assert seen == set(CHANGES) and device_seen == {"unchanged", "moved", "new"}
    none_now = {how for _ in range(100)
                for _, how in derive_prior_findings(rng, (), FindingSampling(), PriorSampling())[2]}
    assert none_now == {"removed"}


def test_bad_prior_options_are_refused():
    with pytest.raises(PriorError, match="no_prior_fraction"):
        PriorSampling(no_prior_fraction=1.5)
    with pytest.raises(PriorError, match="min_days"):
        PriorSampling(min_days=10, max_days=5)
    with pytest.raises(PriorError, match="change_weights"):
        PriorSampling(change_weights={"grew": 1.0})


@pytest.mark.slow
def test_same_seed_same_bytes_with_priors_whatever_the_workers(both, tmp_path):
    _, (out, records) = both
    again = generate_dataset(tmp_path / "again", 8, seed=9, config=dataclasses.replace(CONFIG, workers=2), priors=True)
    assert read_manifest(again.manifest) == records[:8]
    for record in records[:8]:
        for path in record["prior_images"] or ():
            assert (tmp_path / "again" / path).read_bytes() == (out / path).read_bytes()


def test_training_config_asks_for_priors(tmp_path):
    source = data_source_from_dict({"name": "longitudinal", "phantoms": {"studies": 4, "seed": 2, "image_size": 32,
                                                                         "priors": True}})
    assert source.phantoms is not None and source.phantoms.priors
    manifest = ensure_phantoms(source.phantoms, tmp_path / "longitudinal")
    records = read_manifest(manifest)
    assert len(records) == 4 and all(set(PRIOR_FIELDS) <= set(r) for r in records)
    plain = data_source_from_dict({"name": "plain", "phantoms": {"studies": 4, "seed": 2, "image_size": 32}})
    assert not plain.phantoms.priors
    assert not any(set(PRIOR_FIELDS) & set(r) for r in read_manifest(ensure_phantoms(plain.phantoms, tmp_path / "p")))


@pytest.mark.slow
def test_cli_writes_priors(tmp_path):
    out = tmp_path / "cli"
    result = subprocess.run([sys.executable, "-m", "raddraft", "synth", "--out", str(out), "--studies", "6", "--seed",
                             "1", "--image-size", "32", "--workers", "1", "--priors", "--no-prior-fraction", "0"],
                            capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    assert "6 with a prior study (" in result.stdout
    records = read_manifest(out / "manifest.jsonl")
    assert all(r["prior_study_uid"] and (out / r["prior_images"][0]).is_file() for r in records)
    bad = subprocess.run([sys.executable, "-m", "raddraft", "synth", "--out", str(tmp_path / "bad"), "--studies", "2",
                          "--priors", "--no-prior-fraction", "2"], capture_output=True, text=True, timeout=300,
                         check=False)
    assert bad.returncode == 2 and "no_prior_fraction" in bad.stderr


HOUSE_SUFFIX = re.compile(r", (new|increased|decreased|unchanged) since (\d{4}-\d\d-\d\d)\b")
# the varied wording's statements that give the change before the finding ("Increased moderate right pleural effusion.")
CHANGE_FIRST = re.compile(r"(?:^|[.] )(?:\d\. )?(?:New|Increased|Improving|Unchanged|Stable|Interval (?:increase|decrease|"
                          r"development)|Compared with)\b")


@pytest.mark.slow
def test_house_wording_names_each_finding_before_its_change(tmp_path):
    """Training targets in the house wording: the same studies and facts as the varied wording, every current
    pathology stated first with its change after it (one wording per change, the prior's date), in the
    findings and again in the impression."""
    varied = read_manifest(generate_dataset(tmp_path / "v", 60, seed=21, config=CONFIG, priors=True).manifest)
    house = read_manifest(generate_dataset(tmp_path / "h", 60, seed=21, config=CONFIG,
                                           priors=PriorSampling(wording="house")).manifest)
    assert len(varied) == len(house) == 60
    checked = 0
    for v, h in zip(varied, house):
        assert {k: v[k] for k in ("findings", "change", "prior_report", "report_without_prior")} == \
               {k: h[k] for k in ("findings", "change", "prior_report", "report_without_prior")}
        if not h["prior_study_uid"]:
            assert h["report"]["findings"].startswith("No prior studies are available for comparison.")
            continue
        for section in ("findings", "impression"):
            text = h["report"][section]
            stated = HOUSE_SUFFIX.findall(text)
            assert {date for _, date in stated} <= {h["prior_date"]}, text
            expected = [how for kind, how in h["change"].items() if kind != "support_device" and how != "resolved"]
            assert sorted(how for how, _ in stated) == sorted(expected), text
            assert not CHANGE_FIRST.search(text), text
            checked += len(expected)
    assert checked > 40
    assert sum(bool(CHANGE_FIRST.search(r["report"]["impression"])) for r in varied) > 10  # what the house wording avoids


# "Small right pleural effusion, previously large, decreased since 2024-03-02."
GRADED = re.compile(r"(?:^|\. )(?:\d\. )?(\d+(?:\.\d)? (?:mm|cm)|\w+) [^.;]*?, previously (\d+(?:\.\d)? (?:mm|cm)|\w+), "
                    r"(increased|decreased|unchanged) since")
GRADE_RANK = {"small": 0, "mild": 0, "moderate": 1, "large": 2, "marked": 2}


def _grade_rank(grade: str) -> float:
    if grade.endswith((" mm", " cm")):
        number = float(grade.split()[0])
        return number * (10 if grade.endswith("cm") else 1)
    return GRADE_RANK[grade.lower()]


@pytest.mark.slow
def test_house_impression_gives_both_grades_before_the_change(tmp_path):
    """In the house wording, each current finding that the prior also had is named with its grade, then the
    prior's grade, then the change; the grades agree with the change (larger now: increased), and one word
    stands for each severity (no "trace" beside "small")."""
    house = read_manifest(generate_dataset(tmp_path / "h", 60, seed=23, config=CONFIG,
                                           priors=PriorSampling(wording="house")).manifest)
    checked = 0
    for record in (r for r in house if r["prior_study_uid"]):
        text = record["report"]["impression"]
        graded = GRADED.findall(text)
        expected = [how for kind, how in record["change"].items()
                    if how in ("increased", "decreased", "unchanged") and kind != "support_device"
                    and not any(f["kind"] == kind and f.get("hedged") for f in record["findings"])]
        assert sorted(how for _, _, how in graded) == sorted(expected), text
        for now, before, how in graded:
            order = {"increased": 1, "decreased": -1, "unchanged": 0}[how]
            difference = _grade_rank(now) - _grade_rank(before)
            assert (difference > 0) - (difference < 0) == order, text
        assert not re.search(r"\b(?:trace|minimal|slight|severe|extensive|moderate-sized)\b", text), text
        checked += len(graded)
    assert checked > 20


def test_wording_is_checked():
    with pytest.raises(PriorError, match="wording"):
        PriorSampling(wording="terse")
    with pytest.raises(TrainConfigError, match="wording"):
        data_source_from_dict({"name": "plain", "phantoms": {"studies": 4, "seed": 2, "wording": "house"}})
    source = data_source_from_dict({"name": "l", "phantoms": {"studies": 4, "seed": 2, "priors": True,
                                                              "wording": "house"}})
    assert source.phantoms.wording == "house"


def test_synth_offers_the_wordings_the_generator_knows():
    import argparse

    from raddraft.commands import synth
    from training.data.longitudinal import WORDINGS

    parser = argparse.ArgumentParser()
    synth.add_arguments(parser)
    action = next(a for a in parser._actions if a.dest == "wording")
    assert tuple(action.choices) == WORDINGS and action.default == WORDINGS[0]


def test_synth_refuses_a_wording_without_priors(tmp_path):
    result = subprocess.run([sys.executable, "-m", "raddraft", "synth", "--out", str(tmp_path / "x"), "--studies", "2",
                             "--wording", "house"], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 2 and "--priors" in result.stderr
    assert not (tmp_path / "x").exists()
