"""Following the registry's current model while running.

`ModelFollower` polls the registry's pointer (cheap: one small file read) on its own thread. When the pointer is
rewritten (by `raddraft model use` in another process, or by the app) and names another model, it loads
that model on its own thread, never on the drafting thread, and hands it over through `on_switch`
(which swaps it into the drafting queue: the study being drafted finishes on the old model). A model
that fails to load leaves the old one running; `on_failure` says so, once per change of the pointer.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from engine.registry import InstalledModel, ModelRegistry, RegistryError

log = logging.getLogger(__name__)

LoadModel = Callable[[Path], Any]
OnSwitch = Callable[[InstalledModel, Any], None]
OnFailure = Callable[[str, Exception], None]


class ModelFollower:
    def __init__(self, registry: ModelRegistry, load: LoadModel, on_switch: OnSwitch, on_failure: OnFailure,
                 loaded: InstalledModel | None, token: bytes | None = None,
                 interval_s: float = 2.0) -> None:
        """`loaded`: the registry entry running now; `token`: the pointer's token when it was resolved."""
        self.registry = registry
        self._load, self._on_switch, self._on_failure = load, on_switch, on_failure
        self._loaded_key = _identity(loaded) if loaded else None
        self._token = token
        self._interval = interval_s
        self._switching = threading.RLock()  # one load at a time: the poll and an explicit switch
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="raddraft-model-follower", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def check(self) -> InstalledModel | None:
        """One poll: when the pointer changed and names another model, load and switch to it.
        Returns the model switched to, or None."""
        with self._switching:
            token = self.registry.pointer_token()
            if token == self._token:
                return None
            self._token = token
            try:
                wanted = self.registry.current()
            except Exception as error:  # noqa: BLE001 - a bad pointer must not stop the running engine
                self._on_failure(f"the current model in {self.registry.models_dir} cannot be resolved", error)
                return None
            if _identity(wanted) == self._loaded_key:
                return None
            try:
                return self.switch_to(wanted)
            except Exception as error:  # noqa: BLE001 - reported; the old model keeps drafting
                self._on_failure(f"the new current model {wanted.model_id} cannot be loaded", error)
                return None

    def switch_to(self, wanted: InstalledModel, before_swap: Callable[[], object] | None = None) -> InstalledModel:
        """Load `wanted` on the calling thread, call `before_swap` (the app writes the pointer there, once
        the model is known to load) and switch to it; errors propagate with the old model kept."""
        with self._switching:
            if wanted.broken:
                raise RegistryError(f"{wanted.model_id} is broken: {wanted.broken}")
            model = None if _identity(wanted) == self._loaded_key else self._load(wanted.path)
            if before_swap is not None:
                before_swap()
                self._token = self.registry.pointer_token()  # our own change: nothing for the poll to do
            if model is not None:
                self._on_switch(wanted, model)
                self._loaded_key = _identity(wanted)
            return wanted

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.check()
            except Exception:
                log.exception("following the current model failed")


def _identity(model: InstalledModel) -> tuple[str, str]:
    return (model.version, str(model.path))
