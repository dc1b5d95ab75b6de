"""The phantom generator: determinism, DICOM validity, visible findings, manifest consistency, CLI."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess

import numpy as np
import pydicom
import pytest

from training.data.findings import Finding, FindingError
from training.data.phantoms import (
    PhantomConfig,
    PhantomError,
    generate_dataset,
    plan_study,
    read_manifest,
    render_study,
    study_streams,
)
from training.data.render import SIDE_SIGN, sample_anatomy
from training.vocabulary import LABEL_KEYS

SIZE = 128
CONFIG = PhantomConfig(image_size=SIZE, lateral_fraction=0.5, monochrome1_fraction=0.5,
                       transfer_syntax_weights={"explicit": 1, "jpeg2000": 1, "rle": 1}, workers=2)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("phantoms")
    summary = generate_dataset(out, 30, seed=3, config=CONFIG)
    return out, summary, read_manifest(out / "manifest.jsonl")


def test_same_seed_same_bytes_and_study_independent_of_count(dataset, tmp_path):
    out, _, records = dataset
    again = generate_dataset(tmp_path / "again", 6, seed=3, config=dataclasses.replace(CONFIG, workers=1))
    assert read_manifest(again.manifest) == records[:6]
    for path in records[0]["images"] + records[5]["images"]:
        assert (tmp_path / "again" / path).read_bytes() == (out / path).read_bytes()
    other = generate_dataset(tmp_path / "other", 6, seed=4, config=CONFIG)
    assert [r["study_uid"] for r in read_manifest(other.manifest)] != [r["study_uid"] for r in records[:6]]


def test_every_image_reads_and_decodes(dataset):
    out, summary, records = dataset
    seen = {"syntax": set(), "photometric": set(), "modality": set(), "bits": set()}
    for record in records:
        for info in record["image_info"]:
            ds = pydicom.dcmread(out / info["path"])
            pixels = ds.pixel_array
            assert pixels.shape == (SIZE, SIZE) and pixels.dtype == np.uint16
            assert int(pixels.max()) < (1 << ds.BitsStored) and pixels.std() > 0
            assert ds.StudyInstanceUID == record["study_uid"]
            assert ds.SOPInstanceUID == info["sop_instance_uid"] == ds.file_meta.MediaStorageSOPInstanceUID
            assert ds.Modality == info["modality"] in ("DX", "CR")
            assert ds.ViewPosition == info["view"]
            assert ds.PhotometricInterpretation == info["photometric"]
            assert 12 <= ds.BitsStored <= 16 and ds.HighBit == ds.BitsStored - 1
            assert float(ds.PixelSpacing[0]) == pytest.approx(CONFIG.pixel_spacing_mm)
            assert float(ds.WindowWidth) > 0 and str(ds.PatientName).startswith("PHANTOM^")
            seen["syntax"].add(ds.file_meta.TransferSyntaxUID.name)
            seen["photometric"].add(ds.PhotometricInterpretation)
            seen["modality"].add(ds.Modality)
            seen["bits"].add(ds.BitsStored)
    assert summary.images == sum(len(r["images"]) for r in records)
    assert len(seen["syntax"]) == 3 and len(seen["photometric"]) == 2 and len(seen["modality"]) == 2
    assert len(seen["bits"]) >= 2


def test_monochrome1_stores_inverted_values(dataset):
    out, _, records = dataset
    means = {}
    for record in records:
        for info in record["image_info"]:
            if info["view"] != "LL":
                ds = pydicom.dcmread(out / info["path"])
                # the lungs (dark in presentation) at mid-height, as a share of the stored range
                centre = ds.pixel_array[SIZE // 2, SIZE // 5: SIZE // 3].mean() / ((1 << ds.BitsStored) - 1)
                means.setdefault(info["photometric"], []).append(centre)
    assert np.mean(means["MONOCHROME1"]) > 0.5 > np.mean(means["MONOCHROME2"])


def test_dciodvfy_finds_no_errors(dataset):
    tool = shutil.which("dciodvfy")
    if tool is None:
        if os.environ.get("RADDRAFT_REQUIRE_PEERS") == "1":
            pytest.fail("dciodvfy (dicom3tools) is required (RADDRAFT_REQUIRE_PEERS=1) but not on PATH")
        pytest.skip("dciodvfy (dicom3tools) is not installed")
    out, _, records = dataset
    checked = {}
    for record in records:
        for info in record["image_info"]:
            checked.setdefault((info["modality"], info["photometric"], info["transfer_syntax"], info["view"]),
                               out / info["path"])
    assert len(checked) >= 8
    for combo, path in checked.items():
        result = subprocess.run([tool, str(path)], capture_output=True, text=True, timeout=60, check=False)
        errors = [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("Error")]
        assert not errors, (combo, errors)


def test_manifest_is_consistent(dataset):
    out, summary, records = dataset
    assert len(records) == summary.studies == 30
    assert len({r["study_uid"] for r in records}) == 30
    for record in records:
        assert set(record["labels"]) == set(LABEL_KEYS)
        assert set(record["labels"].values()) <= {"present", "absent"}
        kinds = {f["kind"] for f in record["findings"]}
        for key in LABEL_KEYS[:-1]:
            assert (record["labels"][key] == "present") == (key in kinds)
        assert (record["labels"]["no_finding"] == "present") == (not kinds - {"support_device"})
        assert record["split"] in ("train", "validation", "test")
        assert record["report"]["findings"].strip() and record["report"]["impression"].strip()
        assert record["views"][0] in ("PA", "AP") and len(record["images"]) == len(record["views"])
        assert all((out / p).is_file() for p in record["images"])
    assert {r["labels"]["no_finding"] for r in records} == {"present", "absent"}
    description = json.loads((out / "dataset.json").read_text())
    assert description["studies"] == 30 and description["seed"] == 3


def test_splits_follow_the_fractions():
    config = PhantomConfig(split_fractions=(0.6, 0.2, 0.2))
    splits = [plan_study(11, i, config).split for i in range(500)]
    assert 0.5 < splits.count("train") / 500 < 0.7
    assert splits.count("validation") > 60 and splits.count("test") > 60


def _frontal(findings, seed=5, index=2):
    config = PhantomConfig(image_size=192)
    spec = dataclasses.replace(plan_study(seed, index, config, findings=findings), frontal_view="PA", lateral=False)
    anatomy = sample_anatomy(study_streams(seed, index)["anatomy"])
    return render_study(spec, config, anatomy)[0][1], anatomy


def _region(image, x0, x1, y0, y1):
    n = image.shape[0]
    return image[int(y0 * n):int(y1 * n), int(x0 * n):int(x1 * n)]


def test_effusion_raises_intensity_at_its_costophrenic_angle():
    normal, a = _frontal(())
    effusion, _ = _frontal((Finding("pleural_effusion", side="right", severity="moderate"),))
    for side, expect_change in (("right", True), ("left", False)):
        s = SIDE_SIGN[side]
        xs = sorted((a.cx + s * 0.7 * a.hemithorax, a.cx + s * 0.95 * a.hemithorax))
        y0, y1 = a.dome_y(side) - 0.01, a.dome_y(side) + a.sulcus_drop
        rise = _region(effusion, *xs, y0, y1).mean() - _region(normal, *xs, y0, y1).mean()
        assert (rise > 0.08) if expect_change else (abs(rise) < 0.01), (side, rise)


def test_pneumothorax_darkens_the_apex_and_removes_markings():
    normal, a = _frontal(())
    ptx, _ = _frontal((Finding("pneumothorax", side="left", severity="severe"),))
    xs = (a.cx + 0.55 * a.hemithorax, a.cx + 0.8 * a.hemithorax)
    y0, y1 = a.apex_y + 0.06, a.apex_y + 0.2
    assert _region(ptx, *xs, y0, y1).mean() < _region(normal, *xs, y0, y1).mean() - 0.02
    # the other lung keeps its picture
    xs_right = (a.cx - 0.8 * a.hemithorax, a.cx - 0.55 * a.hemithorax)
    assert abs(_region(ptx, *xs_right, y0, y1).mean() - _region(normal, *xs_right, y0, y1).mean()) < 0.01


def test_cardiomegaly_widens_the_heart_shadow():
    normal, a = _frontal(())
    big, _ = _frontal((Finding("cardiomegaly", severity="severe", ctr=0.66),))
    # lateral to a normal left heart border, just above the left hemidiaphragm
    xs = (a.cx + 0.68 * a.hemithorax, a.cx + 0.8 * a.hemithorax)
    y0, y1 = a.dome_left_y - 0.1, a.dome_left_y - 0.05
    assert _region(big, *xs, y0, y1).mean() > _region(normal, *xs, y0, y1).mean() + 0.1


@pytest.mark.parametrize("finding", [
    Finding("nodule", side="right", zone="upper", severity="moderate", size_mm=22),
    Finding("consolidation", side="left", zone="lower", severity="moderate"),
    Finding("atelectasis", side="right", zone="lower", severity="severe"),
], ids=lambda f: f.kind)
def test_lung_opacities_brighten_their_lung_only(finding):
    normal, a = _frontal(())
    abnormal, _ = _frontal((finding,))
    s = SIDE_SIGN[finding.side]
    top, bottom = a.apex_y, a.dome_y(finding.side)
    lung = sorted((a.cx + s * 0.2 * a.hemithorax, a.cx + s * a.hemithorax))
    other = sorted((a.cx - s * 0.2 * a.hemithorax, a.cx - s * a.hemithorax))
    diff = abnormal - normal
    assert _region(diff, *lung, top, bottom).max() > 0.15
    assert abs(_region(diff, *other, top, bottom).mean()) < 0.005


def test_edema_is_bilateral_perihilar():
    normal, a = _frontal(())
    edema, _ = _frontal((Finding("edema", side="bilateral", severity="severe"),))
    for s in (-1, 1):
        xs = sorted((a.cx + s * 0.3 * a.hemithorax, a.cx + s * 0.55 * a.hemithorax))
        assert _region(edema, *xs, 0.36, 0.48).mean() > _region(normal, *xs, 0.36, 0.48).mean() + 0.04


def test_endotracheal_tube_is_visible_in_the_trachea():
    normal, a = _frontal(())
    tube, _ = _frontal((Finding("support_device", device="endotracheal_tube"),))
    xs = (a.cx - 0.03, a.cx + 0.03)
    assert (_region(tube, *xs, 0.15, 0.3) - _region(normal, *xs, 0.15, 0.3)).max(axis=1).mean() > 0.1


def test_bad_options_are_typed_errors(tmp_path):
    with pytest.raises(FindingError):
        Finding("nodule", side="bilateral", zone="upper")
    with pytest.raises(FindingError):
        Finding("fracture")
    with pytest.raises(PhantomError):
        PhantomConfig(image_size=8)
    with pytest.raises(PhantomError):
        PhantomConfig(split_fractions=(0.5, 0.5, 0.5))
    with pytest.raises(PhantomError):
        generate_dataset(tmp_path, 0, seed=1)
    (tmp_path / "foreign.txt").write_text("not ours")
    with pytest.raises(PhantomError, match="not empty"):
        generate_dataset(tmp_path, 1, seed=1)


def test_cli_synth(tmp_path, capsys):
    from raddraft.cli import main

    out = tmp_path / "synth"
    assert main(["synth", "--out", str(out), "--studies", "3", "--seed", "2", "--image-size", "96"]) == 0
    records = read_manifest(out / "manifest.jsonl")
    assert len(records) == 3
    assert pydicom.dcmread(out / records[0]["images"][0]).Rows == 96
    assert "3 studies" in capsys.readouterr().out
    # a second run replaces the data set
    assert main(["synth", "--out", str(out), "--studies", "2", "--seed", "2", "--image-size", "96"]) == 0
    assert len(read_manifest(out / "manifest.jsonl")) == 2


def test_cli_synth_bad_input_is_one_line_error(tmp_path, capsys):
    from raddraft.cli import main

    code = main(["synth", "--out", str(tmp_path / "x"), "--studies", "2", "--image-size", "4"])
    _, err = capsys.readouterr()
    assert code == 2 and "image_size" in err and err.count("\n") == 1 and "Traceback" not in err
