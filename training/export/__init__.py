"""Export of a trained LLaVA checkpoint as a RadDraft model bundle (ONNX graphs + model.json + card).

`export_bundle` is the entry point (`raddraft export` calls it); torch, transformers and optimum are
imported only when an export runs.
"""

from training.export.bundle import ExportReport, check_checkpoint, export_bundle
from training.export.errors import ExportError
from training.export.parity import ParityResult

__all__ = ["ExportError", "ExportReport", "ParityResult", "check_checkpoint", "export_bundle"]
