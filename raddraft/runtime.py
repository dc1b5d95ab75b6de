"""The one assembly of the runtime: which model drafts (and what happens when it cannot load), the drafting
queue and the DICOM node on a store. `raddraft service`, `raddraft app` (raddraft/workstation.py) and
`raddraft self-test` all build theirs here, so that their behaviour cannot drift apart.

The fallback policy (`load_drafting_model`):
- a bundle pinned by the configuration (`[engine] model`, `--model`) is loaded or nothing is: the
  administrator asked for that one. The load is `refused`: the unattended front doors (service,
  self-test) stop with the reason; the app keeps running with drafting off and shows the reason.
- the registry's current model that cannot be used or loaded falls back to the embedded model, loudly
  (a problem is recorded);
- an embedded model that cannot be loaded leaves drafting off, with the reason as a problem.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from dicom_node.events import NodeEvents
from dicom_node.priors import PriorLookups, PriorRetriever
from dicom_node.server import DicomNode
from dicom_node.settings import NodeSettings
from dicom_node.store import Store
from raddraft.resources import CONFIGURED, REGISTRY, ModelChoice, embedded_choice, resolve_model

if TYPE_CHECKING:
    from engine.events import DraftEvents
    from engine.queue import DraftingQueue
    from engine.runtime import DraftModel
    from raddraft.config import AppConfig

log = logging.getLogger("raddraft.runtime")
EMBEDDED_FALLBACK = "Drafting with the embedded model"
DRAFTING_OFF = "Drafting is off"


@dataclass(frozen=True)
class ModelLoad:
    """The model that drafts (None: drafting is off), the choice it came from, and what went wrong on
    the way, as sentences for a person (`problems`)."""

    model: DraftModel | None
    choice: ModelChoice
    problems: tuple[str, ...] = ()
    refused: bool = False  # the pinned bundle cannot be loaded


def load_drafting_model(config: AppConfig) -> ModelLoad:
    """The pinned, the registry's current or the embedded model, by the policy in the module docstring."""
    choice = resolve_model(config)
    problems = [f"{EMBEDDED_FALLBACK}: {choice.problem}."] if choice.problem else []
    model, error = _try_load(config, choice)
    if model is None and choice.source == REGISTRY:
        problems.append(f"{EMBEDDED_FALLBACK}: the current model {choice.path} cannot be loaded ({error}).")
        log.error("the current model %s cannot be loaded (%s); drafting with the embedded model instead",
                  choice.path, error)
        choice = embedded_choice(config, str(error), choice.pointer_token)
        model, error = _try_load(config, choice)
    if model is None:
        problems.append(f"{DRAFTING_OFF}: the model bundle {choice.path} cannot be loaded ({error}).")
        log.warning("drafting is off: the model bundle %s cannot be loaded (%s)", choice.path, error)
    return ModelLoad(model, choice, tuple(problems), refused=model is None and choice.source == CONFIGURED)


def _try_load(config: AppConfig, choice: ModelChoice):
    from engine.errors import EngineError
    from engine.runtime import load_model

    try:
        return load_model(choice.path, config.engine), None
    except EngineError as error:
        return None, error


def start_drafting_queue(config: AppConfig, store: Store, model: DraftModel, node_events: NodeEvents,
                         draft_events: DraftEvents | None = None) -> DraftingQueue:
    """The started queue: it drafts each study the node reports stable, and what a previous run left; the
    priors of each study are looked up (dicom_node/priors.py) before it is queued."""
    from engine.queue import DraftingQueue

    queue = DraftingQueue(store, model, draft_events, critical_findings=config.engine.critical_findings,
                          before_drafting=prior_lookups(config, store))
    queue.start(node_events)
    return queue


def prior_retriever(config: AppConfig, store: Store) -> PriorRetriever:
    """Priors from the configured PACS (C-MOVE to this node's AE title, or C-GET) and from the store."""
    return PriorRetriever(config.pacs, store.index, store, move_destination=config.node.ae_title)


def prior_lookups(config: AppConfig, store: Store) -> PriorLookups | None:
    """The lookup of priors in front of drafting; None when `[pacs] query_priors` is off or `priors` is 0."""
    if not config.pacs.query_priors or config.pacs.priors == 0:
        return None
    return PriorLookups(prior_retriever(config, store))


def start_node(settings: NodeSettings, store: Store, node_events: NodeEvents) -> DicomNode:
    """The listening node, completing studies early (dicom_node/stability.py) when the sender's count is
    reached or, speculatively, once a frontal image is there; OSError (the port) after releasing what it
    started."""
    node = DicomNode(settings, store, node_events)
    node.tracker.complete_early(settings.speculative_after_s, lambda study_uid: has_frontal_image(store, study_uid))
    try:
        node.start()
    except OSError:
        node.tracker.stop()
        raise
    return node


def has_frontal_image(store: Store, study_uid: str) -> bool:
    """Whether the engine would read one of the study's stored images as frontal (from the index's View
    Position and Series Description, as the viewer does): enough to draft a chest study speculatively."""
    from engine.preprocess import classify_view_texts

    index = store.index
    described = {series.series_uid: series.series_description for series in index.series_of(study_uid)}
    return any(classify_view_texts(row.view_position, described.get(row.series_uid, "")) == "frontal"
               for row in index.instances_of(study_uid))
