"""Typed settings of the engine, built by the front door from the `[engine]` section."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dicom_node.errors import SettingsError
from engine.findings.critical import DEFAULT_CRITICAL_FINDINGS, CriticalSettingsError, check_critical_names

PROVIDER_NAMES = ("tensorrt", "cuda", "directml", "coreml", "cpu")
VARIANTS = ("auto", "fp32", "fp16", "int8", "int4")


@dataclass(frozen=True)
class EngineSettings:
    """model: bundle folder that pins the model; None follows the model registry's current model (the
        embedded default bundle until a version is installed and chosen), resolved by the front door.
    models_dir: the model registry's folder; None means `<store root>/models`.
    follow_interval_s: how often a running service or app checks whether the registry's current model
        changed (`raddraft model use`, the app's Models page) and switches to it.
    providers: execution providers in order of preference, CPU always last. Empty (the default) means the
        best this onnxruntime build offers. A GPU that was named but is not there is reported loudly.
    variant: graph precision; "auto" takes fp16 on a GPU (else int4), and on CPU int4 for models over
        about 1 B parameters, int8 for smaller ones (else whichever of the two the bundle has), falling
        back to the bundle's default.
    intra_op_threads / inter_op_threads: 0 lets ONNX Runtime choose (one per physical core).
    draft_on_stable: the drafting queue drafts each study as soon as it is complete.
    max_new_tokens: per section; 0 keeps the bundle's default.
    batch_size: studies drafted together (`raddraft worker`, from `[worker] batch`; the workstation's queue
        drafts one at a time). Above 1, "auto" passes over int8 (engine.runtime.resolve_variant).
    critical_findings: flagged in every draft and asked about at signing (engine.findings.critical): any of
        pneumothorax, free_air, malpositioned_tube and the labeler's finding keys.
    """

    model: Path | None = None
    models_dir: Path | None = None
    follow_interval_s: float = 2.0
    providers: tuple[str, ...] = ()
    variant: str = "auto"
    intra_op_threads: int = 0
    inter_op_threads: int = 0
    draft_on_stable: bool = True
    max_new_tokens: int = 0
    batch_size: int = 1
    critical_findings: tuple[str, ...] = DEFAULT_CRITICAL_FINDINGS

    def __post_init__(self) -> None:
        try:
            check_critical_names(self.critical_findings)
        except CriticalSettingsError as error:
            raise SettingsError("critical_findings", str(error)) from error
        unknown = [p for p in self.providers if p not in PROVIDER_NAMES]
        if unknown:
            raise SettingsError("providers", f"unknown provider {unknown[0]!r}; known: {', '.join(PROVIDER_NAMES)}")
        if self.variant not in VARIANTS:
            raise SettingsError("variant", f"must be one of {', '.join(VARIANTS)}, got {self.variant!r}")
        if not 0 < self.follow_interval_s <= 3600:
            raise SettingsError("follow_interval_s",
                                f"must be between 0 and 3600 seconds, got {self.follow_interval_s}")
        if not 1 <= self.batch_size <= 64:
            raise SettingsError("batch_size", f"must be between 1 and 64, got {self.batch_size}")
        for name in ("intra_op_threads", "inter_op_threads", "max_new_tokens"):
            if getattr(self, name) < 0:
                raise SettingsError(name, "must be 0 or more")
