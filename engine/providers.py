"""Execution providers: what was asked for, what ONNX Runtime offers, and what was actually used.

A GPU that was asked for but is missing (or whose libraries fail to load) must never pass silently:
`ProviderChoice.fallback_reason` says why and the engine logs it at WARNING.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import onnxruntime as ort

log = logging.getLogger(__name__)

ORT_NAMES = {
    "tensorrt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "directml": "DmlExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
    "cpu": "CPUExecutionProvider",
}
SHORT_NAMES = {value: key for key, value in ORT_NAMES.items()}
# Without an explicit request: every accelerator the build offers, fastest first.
AUTO_ORDER = ("tensorrt", "cuda", "directml", "coreml")


@dataclass(frozen=True)
class ProviderChoice:
    requested: tuple[str, ...]
    ort_providers: tuple[str, ...]  # passed to InferenceSession, CPU last
    fallback_reason: str = ""  # set when a GPU was named explicitly and cannot be used

    @property
    def preferred(self) -> str:
        return SHORT_NAMES[self.ort_providers[0]]

    @property
    def explicit(self) -> bool:
        return bool(self.requested)


def choose_providers(requested: tuple[str, ...], available: list[str] | None = None) -> ProviderChoice:
    """Keep the requested providers that this onnxruntime build offers, in order, CPU always last.

    No request means every accelerator the build offers (TensorRT before CUDA, ...), then CPU.
    """
    available = list(ort.get_available_providers() if available is None else available)
    wanted = requested or AUTO_ORDER
    chosen = [ORT_NAMES[name] for name in wanted if name != "cpu" and ORT_NAMES[name] in available]
    chosen.append(ORT_NAMES["cpu"])
    missing = [name for name in requested if name != "cpu" and ORT_NAMES[name] not in available]
    reason = ""
    if missing and len(chosen) == 1:
        reason = (f"requested {', '.join(missing)} but this onnxruntime offers only "
                  f"{', '.join(SHORT_NAMES.get(p, p) for p in available)}; running on CPU")
    return ProviderChoice(tuple(requested), tuple(chosen), reason)


def used_provider(session: ort.InferenceSession) -> str:
    """The provider a session actually runs on (its first); a GPU whose libraries failed drops out here."""
    return SHORT_NAMES.get(session.get_providers()[0], session.get_providers()[0])
