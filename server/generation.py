"""Drafting a section on request (the app's "draft again" / "impression from my findings"), streamed to the
app as server-sent events: `piece` events with the text as it is generated, then one `result` (or `error`).

The model is the server's own (loaded on first use by the loader the front door passes in: the same
choice of model as every other front door). One generation at a time: the server's CPU or GPU is shared.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

SECTIONS = ("findings", "impression")


class OnDemandDrafter:
    def __init__(self, load_model: Callable[[], Any]) -> None:
        self._load_model = load_model
        self._model: Any = None
        self._lock = threading.Lock()

    @property
    def model(self) -> Any:
        with self._lock:
            if self._model is None:
                self._model = self._load_model()
            return self._model

    def swap(self, model: Any) -> None:
        with self._lock:
            self._model = model

    def draft_section(self, paths: list[Path], section: str, findings: str | None, indication: str | None,
                      on_piece: Callable[[str], None], prior=None) -> str:
        """prior: the study's newest prior as the engine takes it (engine.prompts.PriorInput), or None."""
        from engine.errors import EngineError

        if section not in SECTIONS:
            raise ValueError(f"unknown section {section!r} (findings or impression)")
        model = self.model
        if model is None:
            raise EngineError("the server has no model to draft with")
        with self._lock:  # one generation at a time
            return model.draft_section(paths, section, findings=findings, prior=prior, indication=indication,
                                       on_text=on_piece).text


def _event(name: str, data: dict[str, Any]) -> str:
    return f"event: {name}\ndata: {json.dumps(data)}\n\n"


async def stream_section(drafter: OnDemandDrafter, paths: list[Path], section: str, findings: str | None,
                         indication: str | None, prior=None) -> AsyncIterator[str]:
    """The generation, run in a thread, as SSE text; the thread's pieces cross into the event loop."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()

    def piece(text: str) -> None:
        loop.call_soon_threadsafe(queue.put_nowait, ("piece", {"text": text}))

    def run() -> None:
        try:
            text = drafter.draft_section(paths, section, findings, indication, piece, prior)
            loop.call_soon_threadsafe(queue.put_nowait, ("result", {"text": text, "section": section}))
        except Exception as error:  # noqa: BLE001 (the app shows it; the server keeps serving)
            loop.call_soon_threadsafe(queue.put_nowait, ("error", {"detail": str(error) or type(error).__name__}))

    threading.Thread(target=run, name="raddraft-generate", daemon=True).start()
    while True:
        name, data = await queue.get()
        yield _event(name, data)
        if name != "piece":
            return
