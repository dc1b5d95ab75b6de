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
