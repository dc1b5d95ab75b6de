"""The services the desktop app runs on, without Qt: the store, the DICOM node, the drafting queue, the
model for drafting a section on demand, and the outbox that sends signed reports to PACS.

`Workstation.start(config)` hosts the node on the store, or attaches to the `raddraft service` that
already hosts it (dicom_node/host_lock.py): then that service receives and drafts, and the app reads
the same store, signs and sends. Problems that must not stop the app (a bad model bundle, a port in
use) are collected in `problems` and shown by the window. Every method here may touch the disk, the
network or the model: the desktop calls them from worker threads, never from its GUI thread.
"""

from __future__ import annotations

import copy
import logging
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from dicom_node.drafts import DraftRecord, latest_draft
from dicom_node.events import NodeEvents
from dicom_node.host_lock import HostInfo, HostLock, current_host
from dicom_node.index import InstanceRow, SeriesRow, StudyRow
from dicom_node.outbox import OutboxWorker, ensure_report_sr
from dicom_node.priors import PriorsOutcome, PriorStudy, newest_prior_comparison, prior_status, priors_of
from dicom_node.reports import (
    NO_PRIOR,
    ComparisonStudy,
    OutboxItem,
    SignedReport,
    SigningError,
    comparison_detail,
    comparison_of,
    latest_report,
    mark_opened,
    outbox_of,
    pending_sends,
    queue_send,
    report_as_text,
    report_by_id,
    sign_report,
)
from dicom_node.server import DicomNode
from dicom_node.store import Store
from dicom_node.worklist import WorklistRow, start_of_today, studies_received_since, worklist_rows
from engine.events import DraftEvents
from engine.findings.checks import SignProblem, SignReview
from engine.findings.critical import CriticalFinding
from engine.provenance import SectionText, signing_metrics, validate_for_signing
from raddraft.config import AppConfig, default_config_path
from raddraft.resources import (
    EMBEDDED,
    REGISTRY,
    ModelChoice,
    follow_registry,
    model_registry,
)
from raddraft.runtime import (
    DRAFTING_OFF,
    EMBEDDED_FALLBACK,
    load_drafting_model,
    prior_lookups,
    prior_retriever,
    start_drafting_queue,
    start_node,
)

log = logging.getLogger("raddraft.workstation")
SECTIONS = ("findings", "impression")
_MODEL_PROBLEMS = (DRAFTING_OFF, EMBEDDED_FALLBACK, "Model not switched")


@dataclass(frozen=True)
class WorkstationStatus:
    node: str
    listening: bool
    studies_today: int
    model: str
    provider: str
    queue_length: int
    outbox_pending: int
    pacs: str


@dataclass(frozen=True)
class ModelsOverview:
    """What the Models page shows. `models` are `engine.registry.InstalledModel`s; `running` is the registry
    entry drafting here (None when the configuration pins a bundle: `pinned`)."""

    models: tuple
    running: object | None
    running_id: str
    running_path: Path | None
    pinned: Path | None
    card: str
    signed_total: int
    signed_new: int
    store_root: Path
    work_dir: Path
    problem: str | None = None


@dataclass(frozen=True)
class OpenedStudy:
    study: StudyRow
    instances: tuple[InstanceRow, ...]
    paths: tuple[Path, ...]
    draft: DraftRecord | None
    report: SignedReport | None
    sends: tuple[OutboxItem, ...]
    series: tuple[SeriesRow, ...] = ()


@dataclass(frozen=True)
class SignChecks:
    problems: tuple[SignProblem, ...]
    critical: tuple[CriticalFinding, ...]


class SignReviewNeeded(SigningError):
    """The report has problems or critical findings the radiologist has not answered yet."""

    def __init__(self, message: str, checks: SignChecks) -> None:
        super().__init__(message)
        self.checks = checks


def review_detail(checks: SignChecks, review: SignReview | None) -> dict[str, Any]:
    """What goes into the signed report's record: the problems signed over and why, the critical findings
    and their communication."""
    detail: dict[str, Any] = {}
    if checks.problems:
        detail["sign_checks"] = {
            "problems": [{"kind": p.kind, "message": p.message, "sentences": list(p.sentences)}
                         for p in checks.problems],
            "override_reason": review.override_reason.strip() if review else ""}
    if checks.critical:
        communication = review.communication if review else None
        detail["critical_findings"] = [finding.title for finding in checks.critical]
        if communication is not None:
            detail["critical_communication"] = {
                "recipient": communication.recipient.strip(), "communicated_at": communication.communicated_at.strip(),
                "method": communication.method,
                "text": communication.as_text(finding.title for finding in checks.critical)}
    return detail


class Workstation:
    def __init__(self, config: AppConfig, store: Store, config_path: Path | None = None,
                 overrides: Mapping[str, Any] | None = None) -> None:
        self.config = config
        self.config_path = Path(config_path or config.source or default_config_path())
        self.overrides = dict(overrides or {})
        self.store = store
        self.node_events = NodeEvents()
        self.draft_events = DraftEvents()
        self.outbox = OutboxWorker(store, config.pacs, config.reading)
        self.node: DicomNode | None = None
        self.queue = None
        self.model = None
        self.model_choice: ModelChoice | None = None
        self.follower = None  # engine.model_switch.ModelFollower while following the registry
        self.attached: HostInfo | None = None
        self.problems: list[str] = []
        self._lock: HostLock | None = None
        self._generate = threading.Lock()

    # -- lifecycle ---------------------------------------------------------------------------------
    @classmethod
    def start(cls, config: AppConfig, *, config_path: Path | None = None,
              overrides: Mapping[str, Any] | None = None) -> Workstation:
        """Open the store (its errors propagate: without a store there is no app) and start what can be."""
        ws = cls(config, Store(config.store), config_path, overrides)
        ws._load_model()
        ws._follow_registry()
        host = current_host(ws.store.root)
        if host is not None:
            ws.attached = host
            log.info("attaching to %s", host.describe())
        else:
            ws._host()
        if ws.attached is None:
            # The process hosting the store sends (the service when the app attached to one): one sender,
            # so one SR is never sent twice by two processes.
            ws.outbox.start()
        return ws

    def _load_model(self) -> None:
        """The model by the one fallback policy (raddraft/runtime.py); problems are collected for the
        window, never raised: a refused pinned model leaves the app running with drafting off."""
        loaded = load_drafting_model(self.config)
        self.problems.extend(loaded.problems)
        self.model, self.model_choice = loaded.model, loaded.choice

    def _follow_registry(self) -> None:
        if self.follower is not None:
            self.follower.stop()
        self.follower = follow_registry(self.config, self.model_choice, self._switch_model, self._switch_failed)

    def _switch_model(self, installed, model) -> None:
        """Called by the follower once the new model is loaded: on-demand drafting and the queue use it."""
        old = self.model.model_id if self.model else "no model"
        self.model = model
        self.model_choice = ModelChoice(installed.path, EMBEDDED if installed.embedded else REGISTRY, installed)
        self.problems = [p for p in self.problems if not p.startswith(_MODEL_PROBLEMS)]
        if self.queue is not None:
            self.queue.swap_model(model)
        elif self._lock is not None and self.node is not None and self.config.engine.draft_on_stable:
            self._start_queue()
        log.info("model switched: %s -> %s (%s)", old, model.model_id, installed.how)

    def _switch_failed(self, what: str, error: Exception) -> None:
        running = self.model.model_id if self.model else "no model"
        self.problems.append(f"Model not switched: {what} ({error}); still drafting with {running}.")
        log.error("%s: %s; still drafting with %s", what, error, running)

    def _host(self) -> None:
        info = HostInfo("app", os.getpid(), self.config.node.ae_title, self.config.node.host, self.config.node.port)
        self._lock = HostLock.acquire(self.store.root, info)
        if self._lock is None:  # a service took it meanwhile
            self.attached = current_host(self.store.root)
            return
        self._start_node()
        if self.model is not None and self.config.engine.draft_on_stable:
            self._start_queue()

    def _start_queue(self) -> None:
        self.queue = start_drafting_queue(self.config, self.store, self.model, self.node_events, self.draft_events)

    def _start_node(self) -> None:
        try:
            node = start_node(self.config.node, self.store, self.node_events)
        except OSError as error:
            self.problems.append(f"The DICOM node cannot listen on {self.config.node.host}:{self.config.node.port} "
                                 f"({error.strerror or error}); change the port in Settings.")
            return
        self.node = node
        if self._lock is not None:
            self._lock.update(HostInfo("app", os.getpid(), self.config.node.ae_title, self.config.node.host,
                                       node.port))

    def stop(self) -> None:
        if self.follower is not None:
            self.follower.stop()
        if self.node is not None:
            self.node.stop()
        if self.queue is not None:
            self.queue.stop()
        self.outbox.stop()
        if self._lock is not None:
            self._lock.release()
        self.store.close()

    # -- reading -----------------------------------------------------------------------------------
    def worklist(self) -> list[WorklistRow]:
        return worklist_rows(self.store.index)

    def status(self) -> WorkstationStatus:
        node, running = self.config.node, self.node
        try:
            port = running.port if running is not None else None
        except RuntimeError:  # stopped meanwhile (a restart with new settings)
            port = None
        if self.attached is not None:
            where, listening = f"attached to {self.attached.describe()}", True
        elif port is not None:
            where, listening = f"{node.ae_title} listening on {node.host}:{port}", True
        else:
            where, listening = f"{node.ae_title} not listening", False
        model = self.model
        provider = ""
        if model is not None:
            provider = "CPU" if model.provider == "cpu" else f"GPU ({model.provider})"
        return WorkstationStatus(
            node=where, listening=listening,
            studies_today=studies_received_since(self.store.index, start_of_today()),
            model=f"{model.model_id} ({model.variant})" if model else "no model", provider=provider,
            queue_length=self.queue.length() if self.queue else 0,
            outbox_pending=pending_sends(self.store.index), pacs=self.config.pacs.describe())

    def open_study(self, study_uid: str, mark: bool = True) -> OpenedStudy:
        """Everything the reading view needs; with `mark`, the study is recorded as opened by the reader."""
        index = self.store.index
        study = index.study(study_uid)
        if study is None:
            raise KeyError(f"unknown study {study_uid}")
        if mark:
            mark_opened(index, study_uid, self.config.reading.radiologist)
        instances = tuple(index.instances_of(study_uid))
        return OpenedStudy(study, instances, tuple(self.store.path_of(row) for row in instances),
                           latest_draft(index, study_uid), latest_report(index, study_uid),
                           tuple(outbox_of(index, study_uid)), tuple(index.series_of(study_uid)))

    # -- priors ------------------------------------------------------------------------------------
    def priors(self, study_uid: str) -> tuple[list[PriorStudy], tuple[str, str]]:
        """The study's retrieved priors (newest first) and the prior lookup's (state, reason)."""
        index = self.store.index
        return priors_of(index, study_uid), prior_status(index, study_uid)

    def look_for_priors(self, study_uid: str) -> PriorsOutcome:
        """Look up and retrieve the study's priors again now (the app's button); blocks within the [pacs]
        timeouts, never raises."""
        return prior_retriever(self.config, self.store).retrieve_for(study_uid, again=True)

    # -- drafting on demand ------------------------------------------------------------------------
    def draft_section(self, study_uid: str, section: str, findings: str | None = None,
                      on_piece: Callable[[str], None] | None = None, indication: str | None = None) -> str:
        """Generate one section ("findings", "impression", or "impression" from `findings`), streaming text
        through `on_piece`; return the text. Prompted as the queued draft is (the study's views; the
        `indication` typed by the radiologist, else the study's own; its newest prior). One generation at a
        time."""
        from engine.errors import EngineError
        from engine.prompts import newest_prior_input

        model = self.model
        if model is None:
            raise EngineError("no model is loaded (choose a bundle in Settings)")
        if section not in SECTIONS:
            raise ValueError(f"unknown section {section!r}")
        paths = [self.store.path_of(row) for row in self.store.index.instances_of(study_uid)]
        prior = newest_prior_input(self.store.index, study_uid, self.store.path_of)  # as the queued draft
        with self._generate:
            return model.draft_section(paths, section, findings=findings, prior=prior, indication=indication,
                                       on_text=on_piece).text

    # -- signing and sending -----------------------------------------------------------------------
    def sign_checks(self, study_uid: str, findings: str, impression: str) -> SignChecks:
        """The checks before signing and the critical findings of the text about to be signed."""
        from engine.findings.checks import check_report
        from engine.findings.critical import find_critical

        critical_names = self.config.engine.critical_findings
        has_prior = bool(priors_of(self.store.index, study_uid))  # a comparison is a claim only without one
        problems = check_report(findings, impression, has_prior=has_prior, critical=critical_names)
        critical = find_critical({"findings": findings, "impression": impression}, critical_names)
        return SignChecks(tuple(problems), tuple(critical))

    def _ai_part(self, study_uid: str, draft_id: int | None) -> dict[str, object]:
        """For the SR: the software, and the model and domain state of the draft the report started from."""
        from dicom_node.drafts import drafts_of
        from raddraft import __version__

        part: dict[str, object] = {"software": f"RadDraft {__version__}"}
        record = next((d for d in drafts_of(self.store.index, study_uid) if d.id == draft_id), None)
        if record is not None:
            part.update(model=record.model, domain=record.detail.get("domain"))
        return part

    def sign(self, study_uid: str, sections: Mapping[str, SectionText], draft_id: int | None,
             review: SignReview | None = None, *, comparison: ComparisonStudy | None = None) -> SignedReport:
        """Validate, run the checks before signing (their problems need a reason, critical findings a
        communication record, both in `review`), record the AI share and edit distance, save and (when
        configured) queue the SR. `comparison`: the prior read beside it, NO_PRIOR (dicom_node.reports) when
        read without one; left None, the study's newest prior (none when it has none), as the app shows it."""
        if comparison is None:
            comparison = newest_prior_comparison(self.store.index, study_uid)
        sections = {name: copy.deepcopy(sections[name]) for name in SECTIONS}
        problems = validate_for_signing(sections)
        if problems:
            raise SigningError(" ".join(problems))
        checks = self._reviewed_checks(study_uid, sections, review)
        metrics = signing_metrics(sections)
        pacs = self.config.pacs
        report = sign_report(self.store.index, SignedReport(
            study_uid=study_uid, findings=sections["findings"].text.strip(),
            impression=sections["impression"].text.strip(), signed_by=self.config.reading.radiologist,
            draft_id=draft_id, ai_share_kept=round(metrics.ai_share_kept, 4), edit_distance=metrics.edit_distance,
            detail={"ai_characters_written": metrics.ai_characters_written,
                    "ai_characters_kept": metrics.ai_characters_kept,
                    "ai_characters_accepted_unchanged": metrics.ai_characters_accepted, "sections": metrics.sections,
                    "model": self.model.model_id if self.model else "", **review_detail(checks, review),
                    **self._ai_part(study_uid, draft_id), **comparison_detail(comparison)}),
            queue_send=pacs.configured and pacs.send_on_sign)
        return self._written_and_queued(report)

    def amend(self, study_uid: str, sections: Mapping[str, SectionText], amends_id: int,
              addendum: str, review: SignReview | None = None, *,
              comparison: ComparisonStudy | None = None) -> SignedReport:
        """Sign an amendment (addendum or correction) of the signed report `amends_id`: a new SR in the same
        study that refers to the one it replaces, queued for PACS as a report is. The same checks before
        signing apply as to a first report. `comparison` left None: what the amended report was compared
        with, else (a report signed before comparisons were recorded) the study's newest prior."""
        from dicom_node.reports import sign_amendment

        sections = {name: copy.deepcopy(sections[name]) for name in SECTIONS}
        problems = validate_for_signing(sections)
        amends = report_by_id(self.store.index, amends_id)
        if amends is None or amends.study_uid != study_uid:
            problems.append(f"report {amends_id} is not a report of this study.")
        if problems:
            raise SigningError(" ".join(problems))
        if comparison is None:
            comparison = _amended_comparison(amends) or newest_prior_comparison(self.store.index, study_uid)
        checks = self._reviewed_checks(study_uid, sections, review)
        metrics = signing_metrics(sections)
        pacs = self.config.pacs
        report = sign_amendment(self.store.index, SignedReport(
            study_uid=study_uid, findings=sections["findings"].text.strip(),
            impression=sections["impression"].text.strip(), signed_by=self.config.reading.radiologist,
            draft_id=amends.draft_id, ai_share_kept=amends.ai_share_kept, edit_distance=metrics.edit_distance,
            detail={"sections": metrics.sections, "model": amends.detail.get("model", ""),
                    **review_detail(checks, review), **comparison_detail(comparison)}),
            amends, addendum, queue_send=pacs.configured and pacs.send_on_sign)
        return self._written_and_queued(report)

    def _reviewed_checks(self, study_uid: str, sections: Mapping[str, SectionText],
                         review: SignReview | None) -> SignChecks:
        """The checks before signing, refused (SignReviewNeeded) while `review` leaves one unanswered."""
        from engine.findings.checks import review_problems

        checks = self.sign_checks(study_uid, sections["findings"].text, sections["impression"].text)
        missing = review_problems(list(checks.problems), list(checks.critical), review)
        if missing:
            found = " ".join(problem.message for problem in checks.problems)
            raise SignReviewNeeded("Not signed; needed: " + "; ".join(missing) + "." + (f" {found}" if found else ""),
                                   checks)
        return checks

    def _written_and_queued(self, report: SignedReport) -> SignedReport:
        try:
            ensure_report_sr(self.store, report.id, self.config.reading.organization)
        except OSError as error:  # the outbox writes it again before sending
            log.error("could not write the SR of report %d yet: %s", report.id, error)
        self.outbox.notify()
        return report

    def send(self, report_id: int) -> OutboxItem:
        if not self.config.pacs.configured:
            raise SigningError("no PACS destination is configured (Settings > PACS)")
        item = queue_send(self.store.index, report_id)
        self.outbox.notify()
        return item

    def report_text(self, report_id: int) -> str:
        report = report_by_id(self.store.index, report_id)
        study = self.store.index.study(report.study_uid) if report else None
        if report is None or study is None:
            raise KeyError(f"unknown report {report_id}")
        from dicom_node.sr import ai_contribution_line

        return report_as_text(report, study).rstrip("\n") + "\n\n" + ai_contribution_line(report) + "\n"

    def export_text(self, report_id: int, path: Path) -> Path:
        from dicom_node.durable import write_text_atomically

        write_text_atomically(Path(path), self.report_text(report_id))
        return Path(path)

    def sr_file(self, report_id: int) -> Path:
        return ensure_report_sr(self.store, report_id, self.config.reading.organization)

    def export_sr(self, report_id: int, path: Path) -> Path:
        from dicom_node.durable import write_atomically

        write_atomically(Path(path), [self.sr_file(report_id).read_bytes()])
        return Path(path)

    # -- models ------------------------------------------------------------------------------------
    def models_overview(self) -> ModelsOverview:
        """The registry's models, the one drafting here with its card, and the signed reports to train on."""
        registry = model_registry(self.config)
        models = tuple(registry.models())
        choice, model = self.model_choice, self.model
        running = choice.installed if choice and choice.follows_registry else None
        since = running.installed_at.timestamp() if running is not None and running.installed_at else None
        total, new = signed_report_counts(self.store, since)
        return ModelsOverview(
            models=models, running=running, running_id=model.model_id if model else "no model",
            running_path=model.bundle_dir if model else None,
            pinned=choice.path if choice and not choice.follows_registry else None,
            card=_read_text(model.bundle_dir / model.manifest.card) if model else "",
            signed_total=total, signed_new=new, store_root=self.store.root, work_dir=self.store.root / "training",
            problem=choice.problem if choice else None)

    def use_model(self, version: str):
        """Make `version` the registry's current model and draft with it from the next study on. The model is
        loaded before the pointer moves: one that does not load changes nothing (EngineError)."""
        registry = model_registry(self.config)
        wanted = registry.get(version)
        if self.follower is None:  # pinned by the configuration: record the choice, keep the pinned model
            return registry.use(version)
        self.follower.switch_to(wanted, before_swap=lambda: registry.use(version))
        return registry.get(version)

    def install_model(self, bundle_dir: Path, record: Mapping[str, Any], use: bool = True):
        """Install a bundle (a fine-tuned candidate) with its promotion record; with `use`, switch to it."""
        installed = model_registry(self.config).install(Path(bundle_dir), dict(record))
        log.info("installed %s from %s (%s)", installed.model_id, bundle_dir, installed.how)
        return self.use_model(installed.version) if use else installed

    # -- settings ----------------------------------------------------------------------------------
    def check_settings(self, changes: Mapping[str, Any]) -> None:
        """ConfigError naming the key when `changes` would make an invalid configuration. Pure: no disk,
        so the settings dialog may call it on the GUI thread."""
        from raddraft.config import _SECTIONS, ConfigError, build_settings

        by_section: dict[str, dict[str, Any]] = {}
        for dotted, value in changes.items():
            section, _, key = dotted.partition(".")
            by_section.setdefault(section, {})[key] = value
        for section, values in by_section.items():
            if section not in _SECTIONS or section == "store":
                raise ConfigError(f"{section}: cannot be changed here")
            data = asdict(getattr(self.config, section))
            for key, value in values.items():
                if value is None:
                    data.pop(key, None)
                else:
                    data[key] = value
            build_settings(_SECTIONS[section], data, section)

    def verify_settings(self, changes: Mapping[str, Any]) -> list[str]:
        """Check `changes` against the world before they are saved (disk and network: a worker thread).
        ConfigError for what must not be saved: a model folder that does not load as a bundle, a node port
        that is neither free nor the current one. Returns warnings that may be saved anyway: a PACS
        destination that does not answer C-ECHO."""
        from raddraft.config import ConfigError

        self.check_settings(changes)
        merged = {f"{section}.{key}": value for section in ("node", "pacs", "engine")
                  for key, value in asdict(getattr(self.config, section)).items()} | dict(changes)
        if changes.get("engine.model"):
            from engine.bundle import validate_bundle
            from engine.errors import EngineError

            try:
                validate_bundle(Path(changes["engine.model"]))
            except (EngineError, OSError, ValueError) as error:
                raise ConfigError(f"engine.model: {changes['engine.model']} is not a model bundle ({error})") from None
        if {"node.port", "node.host"} & set(changes):
            _check_port_free(str(merged["node.host"]), int(merged["node.port"]),
                             current=self.node.port if self.node is not None else None)
        warnings = []
        pacs_keys = {"pacs.host", "pacs.port", "pacs.ae_title", "pacs.calling_ae"}
        if pacs_keys & set(changes) and merged.get("pacs.host"):
            from dicom_node.sender import SendError, echo

            try:
                echo(str(merged["pacs.host"]), int(merged["pacs.port"]), calling_ae=str(merged["pacs.calling_ae"]),
                     called_ae=str(merged["pacs.ae_title"]), timeout_s=3.0)
            except (SendError, OSError, RuntimeError) as error:
                warnings.append(f"The PACS destination does not answer: {error}")
        return warnings

    def apply_settings(self, changes: Mapping[str, Any]) -> list[str]:
        """Save `changes` to the configuration file and apply them now; return what was restarted."""
        from raddraft.config_file import save_changes

        if changes.get("engine.model"):  # nothing that does not load as a bundle reaches the file
            from engine.bundle import validate_bundle

            validate_bundle(Path(changes["engine.model"]))
        old = self.config
        new = save_changes(self.config_path, changes, self.overrides)
        new = replace(new, store=old.store)  # the store of a running app does not move
        self.config = new
        done = []
        if new.engine != old.engine:
            self.problems = [p for p in self.problems if not p.startswith(_MODEL_PROBLEMS)]
            self._load_model()
            self._follow_registry()
            if self.model is not None and self.queue is not None:
                self.queue.swap_model(self.model)
            elif self.model is None and self.queue is not None:  # never draft with a model no longer shown
                self.queue.stop()
                self.queue = None
            elif self.model is not None and self._lock is not None and new.engine.draft_on_stable:
                self._start_queue()
            done.append(f"model: {self.model.model_id if self.model else 'none'}")
        if new.node != old.node and self.attached is None:
            if self.node is not None:
                self.node.stop()
                self.node = None
            self.problems = [p for p in self.problems if not p.startswith("The DICOM node")]
            self._start_node()
            done.append("DICOM node restarted" if self.node else "DICOM node not listening")
        if (new.pacs != old.pacs or new.node.ae_title != old.node.ae_title) and self.queue is not None:
            self.queue.swap_before_drafting(prior_lookups(new, self.store))
        if new.pacs != old.pacs or new.reading != old.reading:
            self.outbox.set_settings(new.pacs, new.reading)
            done.append(f"PACS: {new.pacs.describe()}")
        return done


def signed_report_counts(store: Store, since: float | None) -> tuple[int, int]:
    """Studies with a signed report, and those signed after `since` (epoch seconds; None: all)."""
    row = store.index.reader().execute(
        "SELECT COUNT(DISTINCT study_uid), COUNT(DISTINCT CASE WHEN signed_at > ? THEN study_uid END) FROM reports",
        (since if since is not None else float("-inf"),)).fetchone()
    return int(row[0]), int(row[1])


def _check_port_free(host: str, port: int, current: int | None) -> None:
    """ConfigError unless `port` on `host` can be listened on (or is the node's own port now)."""
    import socket

    from raddraft.config import ConfigError

    if port == 0 or port == current:
        return
    with socket.socket() as probe:
        try:
            probe.bind((host or "0.0.0.0", port))
        except OSError as error:
            raise ConfigError(f"node.port: {host or '0.0.0.0'}:{port} is not free ({error.strerror})") from None


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return ""


def _amended_comparison(amends: SignedReport) -> ComparisonStudy | None:
    """The comparison the amended report recorded (NO_PRIOR when it was read without a prior); None when it
    was signed before comparisons were recorded."""
    if "comparison" not in amends.detail:
        return None
    return comparison_of(amends) or NO_PRIOR
