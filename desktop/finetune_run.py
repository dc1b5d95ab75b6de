"""A fine-tuning run as the Models page drives it, without Qt: the two commands it runs, the JSON lines they
print, the comparison they leave, and the promotion record. The page binds this to a QProcess and widgets.

The commands run in a separate process (`python -m raddraft dataset ...`, then `... finetune ...`): the app
never imports the training stack. Each prints one JSON object per line on stdout:
    {"event": "progress", "task": ..., "done": n, "total": m, ...}
    {"event": "stage", "name": ...}      {"event": "message", "text": ...}
    {"event": "result", ...}             {"event": "error", "message": ...}
and anything else on stderr, which the page shows as a log.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RUNNING, FINISHED, FAILED, CANCELLED = "running", "finished", "failed", "cancelled"
STDERR_TAIL = 12
METRIC_LABELS = (("micro_f1", "clinical micro F1"), ("macro_f1", "clinical macro F1"),
                 ("findings_micro_f1", "findings micro F1"), ("impression_micro_f1", "impression micro F1"),
                 ("bleu4", "BLEU-4"), ("rouge_l", "ROUGE-L"))


class ComparisonError(ValueError):
    """comparison.json is missing or not what `raddraft finetune` writes; the message names the file."""


def training_unavailable(find_spec: Callable[[str], object] = importlib.util.find_spec) -> str | None:
    """Why fine-tuning cannot run from this installation, or None when it can."""
    if getattr(sys, "frozen", False):
        return ("the packaged app does not include the training tools; fine-tune with a Python installation "
                "of RadDraft with the training extra (raddraft finetune)")
    if find_spec("torch") is None:
        return "the training extra is not installed (pip install 'raddraft[train]')"
    return None


def raddraft_command() -> tuple[str, ...]:
    """How to run `raddraft` in a new process with this interpreter."""
    return (sys.executable, "-m", "raddraft")


@dataclass(frozen=True)
class Step:
    name: str
    label: str
    argv: tuple[str, ...]
    out: Path


def plan_run(prefix: Sequence[str], store_root: Path, work_dir: Path, current_bundle: Path,
             stamp: str | None = None) -> tuple[Step, Step]:
    """The dataset step, then the fine-tuning step on its output, in `work_dir`."""
    stamp = stamp or time.strftime("%Y%m%d-%H%M%S")
    dataset, finetune = Path(work_dir) / f"dataset-{stamp}", Path(work_dir) / f"finetune-{stamp}"
    return (
        Step("dataset", "Building the dataset from signed reports",
             (*prefix, "dataset", "--from-store", str(store_root), "--out", str(dataset), "--progress", "json"),
             dataset),
        Step("finetune", "Fine-tuning",
             (*prefix, "finetune", "--from", str(current_bundle), "--data", str(dataset), "--out", str(finetune),
              "--no-promote", "--progress", "json"), finetune),
    )


@dataclass(frozen=True)
class RunEvent:
    kind: str
    data: dict[str, Any]


def parse_line(line: str) -> RunEvent | None:
    """A protocol line as an event; None for anything else (shown in the log as it is)."""
    text = line.strip()
    if not text.startswith("{"):
        return None
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("event"), str):
        return None
    return RunEvent(data["event"], data)


class LineBuffer:
    """Whole lines out of chunks of a process's output (a chunk may end mid-line)."""

    def __init__(self) -> None:
        self._partial = ""

    def feed(self, chunk: str) -> list[str]:
        lines = (self._partial + chunk).split("\n")
        self._partial = lines.pop()
        return [line.rstrip("\r") for line in lines]

    def flush(self) -> list[str]:
        rest, self._partial = self._partial, ""
        return [rest] if rest else []


@dataclass
class RunState:
    """Where a run is: which step, its progress, the results so far, and the last lines of stderr."""

    steps: tuple[Step, ...]
    index: int = 0
    outcome: str = RUNNING
    stage: str = ""
    task: str = ""
    done: int = 0
    total: int = 0
    message: str = ""
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    stderr_tail: deque[str] = field(default_factory=lambda: deque(maxlen=STDERR_TAIL))

    @property
    def step(self) -> Step:
        return self.steps[self.index]

    def apply(self, event: RunEvent) -> None:
        data = event.data
        if event.kind == "progress":
            self.task = str(data.get("task", self.step.name))
            self.done, self.total = _count(data.get("done")), _count(data.get("total"))
        elif event.kind == "stage":
            self.stage, self.task, self.done, self.total = str(data.get("name", "")), "", 0, 0
        elif event.kind == "message":
            self.message = str(data.get("text", ""))
        elif event.kind == "result":
            self.results[self.step.name] = data
        elif event.kind == "error":
            self.errors.append(str(data.get("message", "")))

    def add_stderr(self, lines: Sequence[str]) -> None:
        self.stderr_tail.extend(line for line in lines if line.strip())

    def status_line(self) -> str:
        if self.outcome == FAILED:
            return f"{self.step.label} failed."
        if self.outcome == CANCELLED:
            return "Cancelled."
        if self.outcome == FINISHED:
            return "Finished: compare the candidate with the current model below."
        parts = [f"Step {self.index + 1} of {len(self.steps)}: {self.step.label}"]
        if self.stage:
            parts.append(self.stage)
        if self.total:
            parts.append(f"{self.task} {self.done}/{self.total}")
        elif self.message:
            parts.append(self.message)
        return " · ".join(parts)

    def step_exited(self, exit_code: int, crashed: bool = False) -> Step | None:
        """The step's process ended: the next step to run, or None (finished, failed or cancelled)."""
        if self.outcome != RUNNING:
            return None
        if crashed or exit_code != 0 or self.step.name not in self.results:
            self.outcome = FAILED
            return None
        if self.index + 1 == len(self.steps):
            self.outcome = FINISHED
            return None
        self.index += 1
        self.stage, self.task, self.done, self.total, self.message = "", "", 0, 0, ""
        return self.step

    def cancel(self) -> None:
        if self.outcome == RUNNING:
            self.outcome = CANCELLED

    def failure_text(self, exit_code: int | None = None) -> str:
        """What went wrong: the command's own error, else the last lines it wrote on stderr."""
        head = f"{self.step.label} failed" + (f" (exit status {exit_code})" if exit_code is not None else "")
        if self.errors:
            return f"{head}: {self.errors[-1]}"
        tail = "\n".join(self.stderr_tail)
        return f"{head}:\n{tail}" if tail else f"{head}, without a message."

    def output(self, key: str, default_name: str) -> Path:
        """A file the fine-tuning step reports in its result (comparison, plot, candidate), else its
        usual place in the run folder."""
        finetune = self.steps[-1]
        value = self.results.get(finetune.name, {}).get(key)
        return Path(value) if isinstance(value, str) and value else finetune.out / default_name


def _count(value: Any) -> int:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0


@dataclass(frozen=True)
class Decision:
    promote: bool
    forced: bool
    reasons: tuple[str, ...]
    tolerance: float | None


@dataclass(frozen=True)
class Comparison:
    """`comparison.json` of a fine-tuning run: both models on the same held-out studies, and the decision."""

    path: Path
    current: dict[str, Any]
    candidate: dict[str, Any]
    test_studies: int
    metrics: dict[str, dict[str, Any]]
    decision: Decision
    raw: dict[str, Any]

    def rows(self) -> list[tuple[str, float | None, float | None]]:
        """(metric, current, candidate): the summary metrics, then F1 per finding."""
        current, candidate = self.metrics["current"], self.metrics["candidate"]
        rows = [(label, _number(current.get(key)), _number(candidate.get(key)))
                for key, label in METRIC_LABELS if key in current or key in candidate]
        findings = dict.fromkeys([*current.get("per_finding_f1", {}), *candidate.get("per_finding_f1", {})])
        for finding in findings:
            rows.append((f"F1 {finding.replace('_', ' ')}", _number(current.get("per_finding_f1", {}).get(finding)),
                         _number(candidate.get("per_finding_f1", {}).get(finding))))
        return rows


def load_comparison(path: Path) -> Comparison:
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        metrics = data["metrics"]
        decision = data["decision"]
        loaded = Comparison(
            path=path, current=dict(data["current"]), candidate=dict(data["candidate"]),
            test_studies=int(data["test_studies"]),
            metrics={"current": dict(metrics["current"]), "candidate": dict(metrics["candidate"])},
            decision=Decision(bool(decision["promote"]), bool(decision.get("forced", False)),
                              tuple(str(r) for r in decision.get("reasons", ())), _number(decision.get("tolerance"))),
            raw=data)
    except FileNotFoundError:
        raise ComparisonError(f"{path} is missing: the fine-tuning run wrote no comparison") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ComparisonError(f"{path} cannot be read ({error})") from None
    except (KeyError, TypeError, ValueError) as error:
        raise ComparisonError(f"{path} is not a comparison written by raddraft finetune (bad {error})") from None
    return loaded


def promotion_record(comparison: Comparison, forced: bool) -> dict[str, Any]:
    """What the registry keeps about a promotion (install.json), shaped as `raddraft finetune` writes it."""
    decision = {"promote": True, "forced": forced or comparison.decision.forced,
                "reasons": list(comparison.decision.reasons), "tolerance": comparison.decision.tolerance}
    if forced and not comparison.decision.promote:
        decision["reasons"].append("promotion forced by the user (Models page)")
    return {"decision": decision, "compared_with": comparison.current, "test_studies": comparison.test_studies,
            "metrics": comparison.metrics, "comparison": str(comparison.path.resolve()),
            "dataset": comparison.raw.get("dataset"), "how": "forced" if decision["forced"] else "promoted",
            "promoted_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "by": "the Models page"}


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
