"""What the tests expect of the embedded default model, read once from its bundle's `model.json`.

The bundle is retrained and replaced now and then (a new version, new metrics); tests that name its version,
id or scores take them from here, so that a new bundle changes the expectation, not the tests. The values
are read with the product's own reader (`engine.bundle.read_manifest`) from where the product finds the
bundle (`raddraft.resources.embedded_model_dir`). The scores are taken from the raw metrics, not through
`InstalledModel.section_f1`, so that the tests of that accessor still check something.
"""

from __future__ import annotations

from engine.bundle import read_manifest
from raddraft.resources import embedded_model_dir

EMBEDDED_DIR = embedded_model_dir()
_MANIFEST = read_manifest(EMBEDDED_DIR)

EMBEDDED_NAME = _MANIFEST.name
EMBEDDED_VERSION = _MANIFEST.version
EMBEDDED_ID = _MANIFEST.model_id


def _micro_f1(section: str) -> float:
    return float(_MANIFEST.metrics[section]["micro_f1"])


EMBEDDED_FINDINGS_F1 = _micro_f1("findings")
EMBEDDED_IMPRESSION_F1 = _micro_f1("impression")
# As the models page and `raddraft model list` show a score: three decimals.
EMBEDDED_FINDINGS_F1_TEXT = f"{EMBEDDED_FINDINGS_F1:.3f}"
EMBEDDED_IMPRESSION_F1_TEXT = f"{EMBEDDED_IMPRESSION_F1:.3f}"

# The embedded weights prompted as a bundle that takes no prior and drafts its impression from the image (as
# 1.1.0 was): for tests of that way of drafting, whatever the embedded bundle itself does.
IMAGE_ONLY_PROMPTS = {"findings": "<s><image>\nFindings:", "impression": "<s><image>\nImpression:",
                      "impression_from_findings": "<s><image>\nFindings: {findings}\nImpression:"}


def embedded_prompted(folder, impression_from: str):
    """A copy of the embedded bundle in `folder` whose model.json says `impression_from` ("image": without a
    prior either, `IMAGE_ONLY_PROMPTS`; "findings": its own prompts and prior)."""
    import json
    import shutil
    from pathlib import Path

    copy = Path(shutil.copytree(EMBEDDED_DIR, folder))
    data = json.loads((copy / "model.json").read_text(encoding="utf-8"))
    data["impression_from"] = impression_from
    if impression_from == "image":
        data.update(prior="none", prompts=dict(IMAGE_ONLY_PROMPTS))
    (copy / "model.json").write_text(json.dumps(data), encoding="utf-8")
    read_manifest(copy)  # a bundle the product loads
    return copy
