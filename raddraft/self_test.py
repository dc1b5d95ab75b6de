"""`raddraft self-test`: the whole chain of an installation, run once on a bundled phantom study.

It starts the DICOM node on a free loopback port over a temporary store, sends the sample study to it
with C-STORE (pynetdicom: the installed app has no dcmtk), waits until the study is stable, lets the
real drafting queue draft it with the configured (or embedded) model, and checks the draft with the
findings labeler against the study's known ground truth. Each step is timed; the first that fails
stops the test and is named in the report.
"""

from __future__ import annotations

import json
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from dicom_node.drafts import latest_draft
from dicom_node.events import NodeEvents, StudyStable
from dicom_node.sender import send_files
from dicom_node.server import DicomNode
from dicom_node.settings import NodeSettings, StoreSettings, TlsSettings
from dicom_node.store import Store
from engine.events import DraftEvents, DraftFailed, DraftFinished
from engine.findings.labeler import label_report
from engine.findings.vocabulary import LABEL_KEYS, NOT_MENTIONED, PRESENT
from raddraft.config import AppConfig
from raddraft.resources import resources_dir
from raddraft.runtime import load_drafting_model, start_drafting_queue, start_node

SAMPLE_NAME = "phantom-effusion"
GROUND_TRUTH_NAME = "ground_truth.json"
CALLING_AE = "RADDRAFT-TEST"
# Short: the study is one image sent at once, and the test should not idle.
STABLE_AFTER_S = 0.5
STEPS = ("read sample", "load model", "start node", "send study", "wait for stable", "draft", "check draft")

StepCallback = Callable[[int, str, float], None]  # (step number from 1, name, seconds)


class SelfTestError(Exception):
    """A step of the self-test failed; the message is one line a person can act on."""

    def __init__(self, step: str, message: str) -> None:
        super().__init__(f"{step}: {message}")
        self.step = step
        self.message = message


@dataclass(frozen=True)
class Sample:
    folder: Path
    files: tuple[Path, ...]
    study_uid: str
    labels: dict[str, str]
    description: str


@dataclass(frozen=True)
class StepTiming:
    name: str
    seconds: float


@dataclass
class SelfTestReport:
    ok: bool = False
    steps: list[StepTiming] = field(default_factory=list)
    failed_step: str = ""
    error: str = ""
    model: str = ""
    model_name: str = ""
    model_version: str = ""
    bundle: str = ""
    model_source: str = ""
    variant: str = ""
    provider: str = ""
    ort_provider: str = ""
    onnxruntime: str = ""
    node: str = ""
    sample: str = ""
    study_uid: str = ""
    findings: str = ""
    impression: str = ""
    engine_timings: dict[str, object] = field(default_factory=dict)
    expected_labels: dict[str, str] = field(default_factory=dict)
    draft_labels: dict[str, str] = field(default_factory=dict)
    mismatches: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def total_s(self) -> float:
        return sum(step.seconds for step in self.steps)

    def to_dict(self) -> dict[str, object]:
        return {**asdict(self), "total_s": round(self.total_s, 4)}


def default_sample_dir() -> Path:
    return resources_dir() / "samples" / SAMPLE_NAME


def read_sample(folder: Path) -> Sample:
    """The sample study and its ground truth (`ground_truth.json`, written by installer/make_sample.py)."""
    truth_path = Path(folder) / GROUND_TRUTH_NAME
    try:
        truth = json.loads(truth_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"the sample study is missing: no {truth_path}") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"{truth_path} is not valid JSON ({error.msg})") from None
    files = tuple(Path(folder) / name for name in truth.get("images", ()))
    missing = [str(path) for path in files if not path.is_file()]
    if not files or missing:
        raise ValueError(f"the sample study is incomplete: missing {', '.join(missing) or 'its image list'}")
    labels = truth.get("labels", {})
    if set(labels) != set(LABEL_KEYS):
        raise ValueError(f"{truth_path}: labels must name exactly {', '.join(LABEL_KEYS)}")
    return Sample(Path(folder), files, str(truth["study_uid"]), dict(labels), str(truth.get("description", "")))


def compare_labels(expected: Mapping[str, str], drafted: Mapping[str, str]) -> list[str]:
    """What the draft gets wrong: a finding of the study it does not state as present, or a finding the
    study does not have that it states as present. Hedged or unmentioned normal findings are no
    contradiction."""
    mismatches = []
    for key in LABEL_KEYS:
        truth, said = expected[key], drafted.get(key, NOT_MENTIONED)
        if truth == PRESENT and said != PRESENT:
            mismatches.append(f"{key}: present in the study, the draft says {said.replace('_', ' ')}")
        elif truth != PRESENT and said == PRESENT:
            mismatches.append(f"{key}: absent in the study, the draft says present")
    return mismatches


def self_test_node_settings(node: NodeSettings) -> NodeSettings:
    """The configured node, on a free loopback port, plain TCP, open to the test's own calling AE."""
    return replace(node, host="127.0.0.1", port=0, stable_after_s=STABLE_AFTER_S, allowed_calling_aes=(),
                   tls=TlsSettings(), shutdown_grace_s=5.0)


class _Waiter:
    """Collects the node's and the queue's events about one study, from their threads."""

    def __init__(self) -> None:
        self.study_uid = ""
        self.stable = threading.Event()
        self.drafted = threading.Event()
        self.failure = ""

    def on_stable(self, event: StudyStable) -> None:
        if event.study_uid == self.study_uid:
            self.stable.set()

    def on_finished(self, event: DraftFinished) -> None:
        if event.study_uid == self.study_uid:
            self.drafted.set()

    def on_failed(self, event: DraftFailed) -> None:
        if event.study_uid == self.study_uid:
            self.failure = event.reason
            self.drafted.set()


class _SelfTest:
    def __init__(self, config: AppConfig, sample_dir: Path, work_dir: Path, timeout_s: float,
                 on_step: StepCallback | None) -> None:
        self.config = config
        self.sample_dir = sample_dir
        self.work_dir = work_dir
        self.timeout_s = timeout_s
        self.on_step = on_step
        self.report = SelfTestReport()
        self.waiter = _Waiter()
        self.node_events = NodeEvents()
        self.draft_events = DraftEvents()
        self.store: Store | None = None
        self.node: DicomNode | None = None
        self.queue = None

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        except SelfTestError:
            raise
        except Exception as error:  # any failure of a step is the finding: report it, never crash
            raise SelfTestError(name, _one_line(error)) from error
        seconds = time.perf_counter() - started
        self.report.steps.append(StepTiming(name, round(seconds, 4)))
        if self.on_step:
            self.on_step(len(self.report.steps), name, seconds)

    def run(self) -> None:
        with self.step("read sample"):
            sample = read_sample(self.sample_dir)
            self.waiter.study_uid = self.report.study_uid = sample.study_uid
            self.report.sample = sample.description or sample.folder.name
            self.report.expected_labels = sample.labels
        with self.step("load model"):
            model = self._load_model()
        with self.step("start node"):
            self._start_node(model)
        with self.step("send study"):
            self._send(sample)
        with self.step("wait for stable"):
            if not self.waiter.stable.wait(self.timeout_s):
                raise SelfTestError("wait for stable", f"the study was not complete after {self.timeout_s:g} s")
        with self.step("draft"):
            if not self.waiter.drafted.wait(self.timeout_s):
                raise SelfTestError("draft", f"no draft after {self.timeout_s:g} s")
            if self.waiter.failure:
                raise SelfTestError("draft", f"the drafting queue failed: {self.waiter.failure}")
        with self.step("check draft"):
            self._check(sample)

    def _load_model(self):
        import onnxruntime

        from engine.providers import ORT_NAMES

        # The model the service and the app would run, by the same fallback policy (raddraft/runtime.py).
        loaded = load_drafting_model(self.config)
        self.report.bundle, self.report.model_source = str(loaded.choice.path), loaded.choice.source
        if loaded.model is None:
            raise SelfTestError("load model", " ".join(loaded.problems))
        self.report.notes.extend(loaded.problems)
        model = loaded.model
        manifest = model.manifest
        self.report.model, self.report.model_name, self.report.model_version = (
            model.model_id, manifest.name, manifest.version)
        self.report.variant = model.variant
        self.report.provider = model.provider
        self.report.ort_provider = ORT_NAMES.get(model.provider, model.provider)
        self.report.onnxruntime = onnxruntime.__version__
        preferred = model.provider_choice.preferred
        if model.provider_choice.fallback_reason:
            self.report.notes.append(f"GPU not used: {model.provider_choice.fallback_reason}")
        elif preferred != model.provider:
            self.report.notes.append(f"this ONNX Runtime offers {preferred}, but it could not start and the model "
                                     f"runs on {model.provider} (check the GPU driver and CUDA/cuDNN libraries)")
        return model

    def _start_node(self, model) -> None:
        self.store = Store(StoreSettings(root=self.work_dir / "store"))
        self.node_events.study_stable.subscribe(self.waiter.on_stable)
        self.draft_events.finished.subscribe(self.waiter.on_finished)
        self.draft_events.failed.subscribe(self.waiter.on_failed)
        self.queue = start_drafting_queue(self.config, self.store, model, self.node_events, self.draft_events)
        settings = self_test_node_settings(self.config.node)
        try:
            self.node = start_node(settings, self.store, self.node_events)
        except OSError as error:
            raise SelfTestError("start node", f"cannot listen on {settings.host}: {error.strerror or error}") \
                from error
        self.report.node = f"{settings.ae_title}@{settings.host}:{self.node.port}"

    def _send(self, sample: Sample) -> None:
        node = self.node
        summary = send_files(node.settings.host, node.port, sample.files, calling_ae=CALLING_AE,
                             called_ae=node.settings.ae_title, timeout_s=self.timeout_s)
        if summary.failed:
            first = summary.failed[0]
            status = "not sent" if first.status is None else f"status 0x{first.status:04X}"
            raise SelfTestError("send study", f"{first.path.name}: {status} {first.comment}".strip())

    def _check(self, sample: Sample) -> None:
        draft = latest_draft(self.store.index, sample.study_uid)
        if draft is None:
            raise SelfTestError("check draft", "the queue reported a draft but the store has none")
        self.report.findings, self.report.impression = draft.findings, draft.impression
        self.report.engine_timings = dict(draft.detail.get("timings", {}))
        self.report.provider = draft.provider
        if not draft.findings.strip() or not draft.impression.strip():
            empty = "findings" if not draft.findings.strip() else "impression"
            raise SelfTestError("check draft", f"the drafted {empty} is empty")
        self.report.draft_labels = label_report(f"{draft.findings.strip()} {draft.impression.strip()}")
        self.report.mismatches = compare_labels(sample.labels, self.report.draft_labels)
        if self.report.mismatches:
            raise SelfTestError("check draft", "the draft disagrees with the study's ground truth: "
                                + "; ".join(self.report.mismatches))

    def close(self) -> None:
        if self.node is not None:
            self.node.stop()
        if self.queue is not None:
            self.queue.stop()
        if self.store is not None:
            self.store.close()


def run_self_test(config: AppConfig, *, sample_dir: Path | None = None, timeout_s: float = 120.0,
                  on_step: StepCallback | None = None) -> SelfTestReport:
    """Run every step (see `STEPS`) on a temporary store; never raises for a failed step: the report says
    which one failed and why."""
    with tempfile.TemporaryDirectory(prefix="raddraft-self-test-") as work:
        test = _SelfTest(config, Path(sample_dir or default_sample_dir()), Path(work), timeout_s, on_step)
        try:
            test.run()
            test.report.ok = True
        except SelfTestError as error:
            test.report.failed_step, test.report.error = error.step, error.message
        finally:
            test.close()
    return test.report


def format_summary(report: SelfTestReport) -> str:
    """The report for a person: what ran where, the draft, the label check and the timings per step."""
    lines = [f"RadDraft self-test: {'PASSED' if report.ok else 'FAILED at step ' + repr(report.failed_step)}"]
    if report.model:
        lines.append(f"  model       {report.model_name} {report.model_version} (variant {report.variant})")
        lines.append(f"  bundle      {report.bundle} ({report.model_source})")
        lines.append(f"  provider    {report.provider} ({report.ort_provider}), onnxruntime {report.onnxruntime}")
    if report.node:
        lines.append(f"  node        {report.node} (temporary store)")
    if report.sample:
        lines.append(f"  study       {report.sample}")
    if report.findings or report.impression:
        lines.append(f"  findings    {report.findings}")
        lines.append(f"  impression  {report.impression}")
    if report.draft_labels:
        lines.append(f"  labels      {_label_line(report)}")
    for note in report.notes:
        lines.append(f"  note        {note}")
    for mismatch in report.mismatches:
        lines.append(f"  MISMATCH    {mismatch}")
    if report.error:
        lines.append(f"  error       {report.error}")
    lines.append("  step               seconds")
    for step in report.steps:
        lines.append(f"  {step.name:<18} {step.seconds:7.2f}")
    engine_total = report.engine_timings.get("total_s")
    if isinstance(engine_total, (int, float)):
        lines.append(f"  {'(engine drafting)':<18} {engine_total:7.2f}")
    lines.append(f"  {'total':<18} {report.total_s:7.2f}")
    return "\n".join(lines)


def _label_line(report: SelfTestReport) -> str:
    expected = [key for key, value in report.expected_labels.items() if value == PRESENT]
    said = [key for key, value in report.draft_labels.items() if value == PRESENT]
    agreement = "agree" if not report.mismatches else f"{len(report.mismatches)} mismatch(es)"
    return (f"study has {', '.join(expected) or 'nothing'}; the draft states {', '.join(said) or 'nothing'} "
            f"as present ({agreement})")


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= 300 else text[:297] + "..."
