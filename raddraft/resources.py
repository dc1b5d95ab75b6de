"""Where the shipped resources are (next to the source tree, or inside a PyInstaller bundle), and which
model bundle a command runs on.

Model resolution: `[engine] model` (or `--model`) pins a bundle; otherwise the model registry's current
model (`raddraft model use`); otherwise the embedded default bundle.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from engine.registry import InstalledModel, ModelRegistry
    from raddraft.config import AppConfig

EMBEDDED_MODEL_NAME = "raddraft-phantom-cxr"
CONFIGURED, REGISTRY, EMBEDDED = "configured", "registry", "embedded"

log = logging.getLogger("raddraft.resources")


def resources_dir() -> Path:
    frozen_root = getattr(sys, "_MEIPASS", None)
    if frozen_root:
        return Path(frozen_root) / "resources"
    return Path(__file__).resolve().parents[1] / "resources"


def embedded_model_dir() -> Path:
    return resources_dir() / "models" / EMBEDDED_MODEL_NAME


def model_dir(configured: Path | None) -> Path:
    """The configured bundle, or the embedded default one (no registry: see `resolve_model`)."""
    return Path(configured) if configured else embedded_model_dir()


def models_dir(config: AppConfig) -> Path:
    """The model registry's folder: `[engine] models_dir`, else `<store root>/models`."""
    return Path(config.engine.models_dir or Path(config.store.root).expanduser() / "models")


def model_registry(config: AppConfig) -> ModelRegistry:
    from engine.registry import ModelRegistry

    return ModelRegistry(models_dir(config), embedded=embedded_model_dir())


@dataclass(frozen=True)
class ModelChoice:
    """The bundle to load and why. `installed` is the registry's entry (None when pinned by the
    configuration); `problem` says why the registry's current model was passed over for the embedded one."""

    path: Path
    source: str  # CONFIGURED, REGISTRY or EMBEDDED
    installed: InstalledModel | None = None
    problem: str | None = None
    pointer_token: bytes | None = None  # the registry's pointer as it was when resolved

    @property
    def follows_registry(self) -> bool:
        return self.source != CONFIGURED


def resolve_model(config: AppConfig) -> ModelChoice:
    """Which bundle to run: pinned, else the registry's current model, else the embedded one. A current
    model that cannot be used falls back to the embedded one, with the reason in `problem`."""
    if config.engine.model is not None:
        return ModelChoice(Path(config.engine.model), CONFIGURED)
    from engine.errors import EngineError

    registry = model_registry(config)
    token = registry.pointer_token()
    try:
        current = registry.current()
    except EngineError as error:
        return _fall_back(config, str(error), token)
    if current.broken and not current.embedded:
        return _fall_back(config, f"{current.model_id} in {current.path} is broken: {current.broken}", token)
    return ModelChoice(current.path, EMBEDDED if current.embedded else REGISTRY, current, pointer_token=token)


def embedded_choice(config: AppConfig, problem: str | None = None, token=None) -> ModelChoice:
    """The embedded bundle as a fallback for a registry model that cannot be used (`problem` says why)."""
    embedded = next((m for m in model_registry(config).models() if m.embedded), None)
    return ModelChoice(embedded_model_dir(), EMBEDDED, embedded, problem, token)


def _fall_back(config: AppConfig, why: str, token) -> ModelChoice:
    problem = f"the current model cannot be used ({why}); drafting with the embedded model instead"
    log.error("%s", problem)
    return embedded_choice(config, problem, token)


def follow_registry(config: AppConfig, choice: ModelChoice, on_switch, on_failure):
    """A started `engine.model_switch.ModelFollower` that keeps a running engine on the registry's current
    model (loading with the configured engine settings), or None when the configuration pins the model."""
    if not choice.follows_registry:
        return None
    from engine.model_switch import ModelFollower
    from engine.runtime import load_model

    follower = ModelFollower(model_registry(config), lambda path: load_model(path, config.engine), on_switch,
                             on_failure, loaded=choice.installed, token=choice.pointer_token,
                             interval_s=config.engine.follow_interval_s)
    follower.start()
    return follower
