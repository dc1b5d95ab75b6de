"""Priors: a study's earlier studies of the same patient, found at PACS (or in the store), retrieved, marked.

For each study that becomes complete, before it is drafted (`PriorLookups`, wired in front of the drafting
queue by raddraft/runtime.py), `PriorRetriever.retrieve_for(study_uid)`:
1. looks for the same Patient ID's earlier studies (Study Date before the current one) of the modality
   family (`[pacs] prior_modalities`, CR/DX) and, where the current study names a body part, of that body part
   (series without one are taken): by C-FIND (Study Root) at the configured PACS, and in the store (a study
   read here before is a prior too, with RadDraft's own signed report);
   Only a study of that modality family has priors looked up; the C-FIND's answers count only for exactly
   the study's Patient ID;
2. takes the newest `[pacs] priors` of them; those the store lacks (or holds only in part, as a prior) are
   retrieved by C-MOVE to our own AE title or by C-GET (`[pacs] retrieve`); one that is a study of its own
   here is taken as it is. Before the C-MOVE the prior's Study Instance
   UID is recorded as expected, so that its first arriving instance creates the study in state "prior"
   (dicom_node/index.py): it is never completed, drafted, or listed in the worklist (dicom_node/worklist.py);
3. reads the prior's report: RadDraft's own signed report of it (dicom_node/reports.py), else an SR stored
   in it (dicom_node/prior_report.py: Findings and Impression by concept name, else all its text);
4. records the outcome: `prior_status(index, study_uid)` -> (state, reason), the state one of
   - "retrieved": at least one prior is ready (`priors_of` lists them);
   - "none-found": the PACS (and the store) hold no earlier study of the patient that fits;
   - "pacs-unreachable": the PACS refused or could not be reached (connection, association, no Q/R service);
   - "timeout": the C-FIND or the retrieval passed its `[pacs]` timeout;
   - "failed": the PACS answered with a failure, or anything else went wrong;
   - "disabled": priors are not looked up (no PACS and none in the store, or `query_priors = false`); also
     what a study that was never looked up reads.
   The reason is a sentence for the radiologist ("PACS ARCHIVE@pacs:104 cannot be reached for C-FIND").
`retrieve_for` never raises and always returns within its timeouts: a PACS that is down, slow or has no prior
means a draft without a prior, saying so.

Readers (the engine's prompt, the desktop's viewer) call `priors_of(index, study_uid)`: the retrieved
priors, newest first, each with its images (frontal first) and its report. A report signed without
naming its comparison is compared with the newest of them (`newest_prior_comparison`).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from dicom_node.index import Index, InstanceRow, StudyRow, StudyState
from dicom_node.prior_query import FoundStudy, QueryRetrieveClient, QueryRetrieveError
from dicom_node.prior_report import is_sr, read_sr_report
from dicom_node.reports import NO_PRIOR, ComparisonStudy, latest_report
from dicom_node.settings import PacsSettings
from dicom_node.store import Store

log = logging.getLogger(__name__)

RETRIEVED, NONE_FOUND, UNREACHABLE, TIMEOUT, FAILED, DISABLED = (
    "retrieved", "none-found", "pacs-unreachable", "timeout", "failed", "disabled")
PRIOR_STATES = (RETRIEVED, NONE_FOUND, UNREACHABLE, TIMEOUT, FAILED, DISABLED)
# A recorded outcome that a later completion of the same study reuses; the others are looked up again.
_SETTLED = frozenset({RETRIEVED, NONE_FOUND})
_FRONTAL_VIEWS = frozenset({"PA", "AP"})
_LATERAL_VIEWS = frozenset({"LL", "RL", "LATERAL", "LAT", "RLD", "LLD"})


@dataclass(frozen=True)
class PriorStudy:
    """One prior of a study, ready to read: its images (frontal first) and its report.

    `report_source`: "raddraft" (signed here), "sr" (an SR in the prior study), "" (no report)."""

    study_uid: str
    study_date: str  # YYYYMMDD ('' when the prior has none)
    modality: str
    description: str
    instances: list[InstanceRow] = field(default_factory=list)
    findings: str = ""
    impression: str = ""
    report_source: str = ""


@dataclass(frozen=True)
class PriorsOutcome:
    """What a lookup came to for `study_uid`: a PRIOR_STATES value, its reason, the priors ready, timings."""

    study_uid: str
    state: str
    reason: str
    priors: tuple[str, ...] = ()
    find_s: float = 0.0
    retrieve_s: float = 0.0

    @property
    def has_prior(self) -> bool:
        return self.state == RETRIEVED and bool(self.priors)


# -- reading -----------------------------------------------------------------------------------------
def priors_of(index: Index, study_uid: str) -> list[PriorStudy]:
    """The study's retrieved priors, newest first; [] when it has none (see `prior_status` for why)."""
    rows = index.reader().execute(
        "SELECT * FROM priors WHERE study_uid = ? AND state = ? ORDER BY prior_date DESC, retrieved_at DESC",
        (study_uid, RETRIEVED)).fetchall()
    return [_prior_study(index, dict(row)) for row in rows]


def newest_prior_comparison(index: Index, study_uid: str) -> ComparisonStudy:
    """What a report signed without naming its comparison is compared with: the study's newest prior (the
    one the app hangs first), else NO_PRIOR."""
    priors = priors_of(index, study_uid)
    return ComparisonStudy.of_prior(priors[0]) if priors else NO_PRIOR


def prior_status(index: Index, study_uid: str) -> tuple[str, str]:
    """(state, reason) of the study's latest prior lookup; ("disabled", ...) when it was never looked up."""
    row = index.reader().execute("SELECT state, reason FROM prior_lookups WHERE study_uid = ?",
                                 (study_uid,)).fetchone()
    if row is None:
        return DISABLED, "priors were not looked up for this study"
    return str(row[0]), str(row[1])


def prior_for(index: Index, prior_study_uid: str) -> list[str]:
    """The studies whose prior `prior_study_uid` is (expected or retrieved)."""
    rows = index.reader().execute("SELECT study_uid FROM priors WHERE prior_study_uid = ? ORDER BY study_uid",
                                  (prior_study_uid,)).fetchall()
    return [str(r[0]) for r in rows]


def _prior_study(index: Index, row: dict) -> PriorStudy:
    prior_uid = row["prior_study_uid"]
    findings, impression, source = row["findings"], row["impression"], row["report_source"]
    signed = latest_report(index, prior_uid)
    if signed is not None:
        findings, impression, source = signed.findings, signed.impression, "raddraft"
    return PriorStudy(prior_uid, row["prior_date"], row["modality"], row["description"],
                      images_frontal_first(index, prior_uid), findings, impression, source)


def images_frontal_first(index: Index, study_uid: str) -> list[InstanceRow]:
    """The study's image instances (not its SRs), frontal views first, laterals last, else in store order.
    The same words as the engine's view rule, kept here since the node imports nothing of the engine."""
    described = {s.series_uid: s.series_description.upper() for s in index.series_of(study_uid)}
    images = [row for row in index.instances_of(study_uid) if not is_sr(row.sop_class_uid)]
    return sorted(images, key=lambda row: _view_rank(row.view_position, described.get(row.series_uid, "")))


def _view_rank(view_position: str, series_description: str) -> int:
    view = view_position.strip().upper()
    words = set(series_description.replace("_", " ").replace("-", " ").split())
    if view in _FRONTAL_VIEWS or (not view and words & (_FRONTAL_VIEWS | {"FRONTAL"})):
        return 0
    if view in _LATERAL_VIEWS or words & _LATERAL_VIEWS:
        return 2
    return 1


# -- recording ---------------------------------------------------------------------------------------
def _record_outcome(index: Index, outcome: PriorsOutcome) -> None:
    with index.transaction() as conn:
        conn.execute(
            "INSERT INTO prior_lookups(study_uid, state, reason, finished_at, find_s, retrieve_s) VALUES (?,?,?,?,?,?) "
            "ON CONFLICT(study_uid) DO UPDATE SET state = excluded.state, reason = excluded.reason, "
            "finished_at = excluded.finished_at, find_s = excluded.find_s, retrieve_s = excluded.retrieve_s",
            (outcome.study_uid, outcome.state, outcome.reason, time.time(), outcome.find_s, outcome.retrieve_s))


def _record_prior(index: Index, study_uid: str, candidate: _Candidate, state: str, reason: str = "",
                  report: tuple[str, str, str] = ("", "", "")) -> None:
    findings, impression, source = report
    with index.transaction() as conn:
        conn.execute(
            "INSERT INTO priors(study_uid, prior_study_uid, prior_date, modality, description, state, reason, "
            "retrieved_at, report_source, findings, impression) VALUES (?,?,?,?,?,?,?,?,?,?,?) "
            "ON CONFLICT(study_uid, prior_study_uid) DO UPDATE SET prior_date = excluded.prior_date, "
            "modality = excluded.modality, description = excluded.description, state = excluded.state, "
            "reason = excluded.reason, retrieved_at = excluded.retrieved_at, "
            "report_source = excluded.report_source, findings = excluded.findings, impression = excluded.impression",
            (study_uid, candidate.study_uid, candidate.study_date, candidate.modality, candidate.description, state,
             reason, time.time() if state == RETRIEVED else None, source, findings, impression))


def sr_report_of(store: Store, study_uid: str) -> tuple[str, str, str]:
    """(findings, impression, "sr") from the best SR stored in the study (complete and verified first, then
    the latest received); ("", "", "") when it holds none with text."""
    srs = [row for row in store.index.instances_of(study_uid) if is_sr(row.sop_class_uid)]
    best = None
    for row in sorted(srs, key=lambda r: r.received_at):
        report = read_sr_report(store.path_of(row))
        if report is None:
            continue
        if best is None or (report.completed, report.verified) >= (best.completed, best.verified):
            best = report
    return (best.findings, best.impression, "sr") if best else ("", "", "")


# -- retrieving --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Candidate:
    study_uid: str
    study_date: str
    study_time: str
    modality: str
    description: str
    expected_instances: int | None  # the PACS's count (None: not given, or a study only the store holds)
    at_pacs: bool


class PriorRetriever:
    """Finds, retrieves and marks the priors of a study (module docstring). Thread-safe: lookups of different
    studies may run at once. `move_destination` is RadDraft's own AE title (the node's `ae_title`)."""

    def __init__(self, settings: PacsSettings, index: Index, store: Store, *, move_destination: str,
                 client: QueryRetrieveClient | None = None) -> None:
        self._settings = settings
        self._index = index
        self._store = store
        self._client = client or QueryRetrieveClient(settings, move_destination=move_destination, store=store)

    def retrieve_for(self, study_uid: str, *, again: bool = False) -> PriorsOutcome:
        """Look up and retrieve the study's priors; the outcome, also recorded for `prior_status`. A study
        already looked up with a settled outcome (retrieved, none found) is not looked up again unless
        `again` (the app's "look for priors again"). Never raises."""
        try:
            if not again:
                state, reason = prior_status(self._index, study_uid)
                if state in _SETTLED:
                    return self._recorded(study_uid, state, reason)
            outcome = self._lookup(study_uid)
        except Exception as error:  # the study must be drafted whatever happens here
            log.exception("prior lookup for study %s failed", study_uid)
            outcome = PriorsOutcome(study_uid, FAILED, f"prior lookup failed: {type(error).__name__}: {error}")
        try:
            _record_outcome(self._index, outcome)
        except Exception:
            log.exception("the prior lookup's outcome for study %s could not be recorded", study_uid)
        log.info("priors of study %s: %s (%s)", study_uid, outcome.state, outcome.reason)
        return outcome

    def _recorded(self, study_uid: str, state: str, reason: str) -> PriorsOutcome:
        return PriorsOutcome(study_uid, state, reason, tuple(p.study_uid for p in priors_of(self._index, study_uid)))

    def _lookup(self, study_uid: str) -> PriorsOutcome:
        study = self._index.study(study_uid)
        if study is None:
            return PriorsOutcome(study_uid, FAILED, "the study is not in the store")
        if not study.patient_id.strip():
            return PriorsOutcome(study_uid, NONE_FOUND, "the study has no Patient ID to look for priors by")
        settings = self._settings
        family = {m.upper() for m in settings.prior_modalities}
        modalities = {m for m in study.modalities.split(",") if m}
        if modalities and not modalities & family:
            return PriorsOutcome(study_uid, DISABLED, f"priors are looked up for {'/'.join(sorted(family))} studies, "
                                 f"not {'/'.join(sorted(modalities))} ([pacs] prior_modalities)")
        at_pacs = settings.configured and settings.query_priors and settings.priors > 0
        found: list[FoundStudy] = []
        pacs_error: QueryRetrieveError | None = None
        started = time.monotonic()
        if at_pacs:
            try:
                found = self._client.find_studies(study.patient_id, _day_before(study.study_date))
            except QueryRetrieveError as error:
                pacs_error = error
        candidates = self._candidates(study, found)
        chosen = self._choose(study, candidates, pacs_error is None and at_pacs)
        find_s = time.monotonic() - started  # with the series-level C-FINDs for the body part
        started = time.monotonic()
        ready, errors = [], []
        for candidate in chosen:
            error = self._make_ready(study_uid, candidate)
            (errors if error else ready).append(error or candidate.study_uid)
        retrieve_s = time.monotonic() - started
        return self._outcome(study_uid, ready, errors, pacs_error, at_pacs, bool(candidates), find_s, retrieve_s)

    def _outcome(self, study_uid: str, ready: list[str], errors: list[QueryRetrieveError | str],
                 pacs_error: QueryRetrieveError | None, at_pacs: bool, any_candidate: bool, find_s: float,
                 retrieve_s: float) -> PriorsOutcome:
        timings = {"find_s": find_s, "retrieve_s": retrieve_s}
        if ready:
            note = f"; the PACS was not asked: {pacs_error}" if pacs_error else ""
            dates = ", ".join(_iso(self._prior_date(study_uid, uid)) or uid for uid in ready)
            return PriorsOutcome(study_uid, RETRIEVED, f"prior of {dates} ready{note}", tuple(ready), **timings)
        if errors:
            first = errors[0]
            state = first.state if isinstance(first, QueryRetrieveError) else FAILED
            return PriorsOutcome(study_uid, state, f"drafted without a prior: retrieving it failed: {first}",
                                 **timings)
        if pacs_error is not None:
            return PriorsOutcome(study_uid, pacs_error.state, f"drafted without a prior: {pacs_error}", **timings)
        if not at_pacs and not any_candidate:
            why = ("no PACS configured" if not self._settings.configured else "[pacs] query_priors is off"
                   if not self._settings.query_priors else "[pacs] priors is 0")
            return PriorsOutcome(study_uid, DISABLED, f"drafted without a prior: not looked up at PACS ({why}) and "
                                 "none in the store", **timings)
        return PriorsOutcome(study_uid, NONE_FOUND, "no earlier study of this patient"
                             + (" at PACS or" if at_pacs else "") + " in the store fits (modality, body part)",
                             **timings)

    def _prior_date(self, study_uid: str, prior_uid: str) -> str:
        row = self._index.reader().execute("SELECT prior_date FROM priors WHERE study_uid = ? AND prior_study_uid = ?",
                                           (study_uid, prior_uid)).fetchone()
        return str(row[0]) if row else ""

    def _candidates(self, study: StudyRow, found: list[FoundStudy]) -> list[_Candidate]:
        """Earlier studies of the patient in the modality family, from the PACS and the store, newest first."""
        family = {m.upper() for m in self._settings.prior_modalities}
        by_uid: dict[str, _Candidate] = {}
        for answer in found:
            if answer.study_uid and _earlier(answer.study_date, study) and answer.study_uid != study.study_uid \
                    and (not answer.modalities or family & set(answer.modalities)):
                modality = "/".join(m for m in answer.modalities if m in family) or "/".join(answer.modalities)
                by_uid[answer.study_uid] = _Candidate(answer.study_uid, answer.study_date, answer.study_time,
                                                      modality, answer.description, answer.num_instances, True)
        for local in self._local_studies(study):
            modalities = {m for m in local.modalities.split(",") if m}
            if local.study_uid in by_uid or not (family & modalities):
                continue
            by_uid[local.study_uid] = _Candidate(local.study_uid, local.study_date, local.study_time,
                                                 "/".join(sorted(family & modalities)), local.study_description,
                                                 None, False)
        return sorted(by_uid.values(), key=lambda c: (c.study_date, c.study_time), reverse=True)

    def _local_studies(self, study: StudyRow) -> list[StudyRow]:
        rows = self._index.reader().execute(
            "SELECT study_uid FROM studies WHERE patient_id = ? AND study_uid != ?",
            (study.patient_id, study.study_uid)).fetchall()
        studies = [self._index.study(str(r[0])) for r in rows]
        return [s for s in studies if s is not None and _earlier(s.study_date, study)]

    def _choose(self, study: StudyRow, candidates: list[_Candidate], can_ask_pacs: bool) -> list[_Candidate]:
        """The newest `priors` candidates of the study's body part (when it names one)."""
        wanted = self._settings.priors
        body_part = study.body_part.strip().upper()
        chosen: list[_Candidate] = []
        for candidate in candidates:
            if len(chosen) >= wanted:
                break
            if not body_part or self._same_body_part(candidate, body_part, can_ask_pacs):
                chosen.append(candidate)
        return chosen

    def _same_body_part(self, candidate: _Candidate, body_part: str, can_ask_pacs: bool) -> bool:
        """True unless every series of the candidate names another body part."""
        parts = {s.body_part.strip().upper() for s in self._index.series_of(candidate.study_uid)}
        if not parts and candidate.at_pacs and can_ask_pacs:
            try:
                parts = self._client.series_body_parts(candidate.study_uid)
            except QueryRetrieveError as error:
                log.info("body part of prior %s not known (%s); taken", candidate.study_uid, error)
                return True
        return not parts or body_part in parts or "" in parts

    def _make_ready(self, study_uid: str, candidate: _Candidate) -> QueryRetrieveError | str | None:
        """Retrieve the candidate unless the store holds all of it, read its report, mark it retrieved; the
        error, if it could not be made ready."""
        held = len(self._index.instances_of(candidate.study_uid))
        local = self._index.study(candidate.study_uid)
        # A study of its own here (read, or being read) is taken as it is: more of it from PACS would reopen it.
        complete = held > 0 and (local is not None and local.state != StudyState.PRIOR
                                 or candidate.expected_instances is None or held >= candidate.expected_instances)
        if not complete:
            if not candidate.at_pacs:
                return "the prior is not in the store"
            _record_prior(self._index, study_uid, candidate, "expected", "being retrieved")
            try:
                result = self._client.retrieve(candidate.study_uid)
            except QueryRetrieveError as error:
                _record_prior(self._index, study_uid, candidate, FAILED, str(error))
                return error
            if not self._index.instances_of(candidate.study_uid):
                reason = (f"the PACS reported {result.completed} instance(s) sent, none arrived (is RadDraft's "
                          "AE title registered at the PACS as the C-MOVE destination?)")
                _record_prior(self._index, study_uid, candidate, FAILED, reason)
                return reason
        _record_prior(self._index, study_uid, candidate, RETRIEVED, "", sr_report_of(self._store, candidate.study_uid))
        return None


def _earlier(date: str, study: StudyRow) -> bool:
    """Whether a study of `date` came before `study`: by date where both have one, else any other study."""
    if not study.study_date or not date:
        return True
    return date < study.study_date


def _day_before(date: str) -> str:
    """For the C-FIND's date range: the day before `date` (YYYYMMDD), '' when it is not a date."""
    try:
        parsed = time.strptime(date, "%Y%m%d")
    except ValueError:
        return ""
    return time.strftime("%Y%m%d", time.localtime(time.mktime(parsed) - 12 * 3600))


def _iso(date: str) -> str:
    return f"{date[:4]}-{date[4:6]}-{date[6:8]}" if len(date) == 8 and date.isdigit() else date


# -- in front of drafting ----------------------------------------------------------------------------
class PriorLookups:
    """Looks up the priors of each completed study on a few threads, then hands the study on (`then`, the
    drafting queue's enqueue), whatever the lookup came to. A study submitted again while its lookup waits or
    runs is not looked up twice. The threads are daemons: a lookup waiting on a silent PACS never holds up
    the process's exit."""

    def __init__(self, retriever: PriorRetriever, workers: int = 2) -> None:
        self._retriever = retriever
        self._jobs: queue.Queue[tuple[str, Callable[[str], None]] | None] = queue.Queue()
        self._lock = threading.Lock()
        self._running: set[str] = set()
        self._stopped = False
        self._threads = [threading.Thread(target=self._work, name=f"raddraft-priors-{n}", daemon=True)
                         for n in range(workers)]
        for thread in self._threads:
            thread.start()

    def submit(self, study_uid: str, then: Callable[[str], None]) -> None:
        with self._lock:
            stopped = self._stopped
            if not stopped:
                if study_uid in self._running:
                    return
                self._running.add(study_uid)
        if stopped:  # hand it on without priors rather than drop it
            then(study_uid)
            return
        self._jobs.put((study_uid, then))

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            study_uid, then = job
            try:
                self._retriever.retrieve_for(study_uid)
            finally:
                with self._lock:
                    self._running.discard(study_uid)
                try:
                    then(study_uid)
                except Exception:  # the thread serves the next study whatever this one's hand-on did
                    log.exception("handing study %s on after its prior lookup failed", study_uid)

    def stop(self) -> None:
        """No new lookups; those already submitted still finish and are handed on."""
        with self._lock:
            self._stopped = True
        for _ in self._threads:
            self._jobs.put(None)
