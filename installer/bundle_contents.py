"""What the installed app may and may not contain, and a check of a built one-folder bundle.

The runtime is dicom_node, engine, desktop and raddraft on numpy + onnxruntime + tokenizers + spaCy/medspaCy
(the labeler) + Qt. None of the training code is shipped, and the training stack (torch and friends) never is. The spec filters its analysis with
`is_forbidden_module`, and the build and the tests check the result with `forbidden_contents`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

FORBIDDEN_PACKAGES = ("torch", "torchvision", "transformers", "peft", "optimum", "accelerate", "onnx",
                      "onnxscript", "onnx_ir", "safetensors", "sacrebleu", "rouge_score", "matplotlib",
                      "triton", "huggingface_hub", "datasets")
# The labeler and its vocabulary moved to engine.findings: nothing of training/ is shipped.
ALLOWED_TRAINING_MODULES: tuple[str, ...] = ()
# Modules whose absence matters in a way the analysis cannot see (loaded by name at run time).
TRAINING_EXCLUDES = ("training.data", "training.train", "training.export", "training.modeling", "training.site",
                     "training.evaluation.metrics")


def is_forbidden_module(name: str) -> bool:
    top = name.split(".")[0]
    if top in FORBIDDEN_PACKAGES:
        return True
    return top == "training" and name not in ALLOWED_TRAINING_MODULES


def frozen_module_names(bundle_dir: Path) -> list[str]:
    """The Python modules inside a built bundle (its executable's archive); needs PyInstaller."""
    from PyInstaller.archive.readers import pkg_archive_contents

    return list(pkg_archive_contents(str(executable(bundle_dir))))


def executable(bundle_dir: Path) -> Path:
    name = "raddraft.exe" if os.name == "nt" else "raddraft"
    return Path(bundle_dir) / name


def forbidden_files(bundle_dir: Path) -> list[str]:
    """Folders and files of the bundle that belong to the training stack (extension modules, data)."""
    found = []
    for folder, dirs, files in os.walk(bundle_dir):
        relative = Path(folder).relative_to(bundle_dir)
        for name in dirs + files:
            stem = name.split(".")[0]
            training_stack = stem in FORBIDDEN_PACKAGES or (
                name.endswith(".dist-info") and _dist_name(name) in FORBIDDEN_PACKAGES)
            # our training/ package, not another package's folder of that name (spacy/training)
            other_training = relative.parts[-1:] == ("training",) and len(relative.parts) <= 2
            if training_stack or other_training:
                found.append(str(relative / name))
    return found


def forbidden_contents(bundle_dir: Path, modules: Iterable[str] | None = None) -> list[str]:
    """Everything in the bundle that must not be there (empty when it is clean)."""
    names = frozen_module_names(bundle_dir) if modules is None else modules
    return sorted({f"module {n}" for n in names if is_forbidden_module(n)} |
                  {f"file {f}" for f in forbidden_files(bundle_dir)})


def _dist_name(dist_info: str) -> str:
    return dist_info.rsplit("-", 1)[0].lower().replace("-", "_") if "-" in dist_info else dist_info.lower()
