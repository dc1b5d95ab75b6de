"""Candidate vs current on the site's held-out studies: the numbers side by side, a plot, and the decision.

The rule (issue: "promote only if clinical F1 is not worse on any finding beyond a tolerance and better
overall"): the candidate's micro F1 over the whole report must be higher than the current model's, no finding
the test studies contain may lose more than `tolerance` of F1, and there must be enough test studies for
the numbers to mean something. `force` promotes anyway and is recorded as such.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from dicom_node.durable import write_atomically, write_text_atomically
from engine.findings.quality import labeler_quality

COMPARISON_JSON = "comparison.json"
COMPARISON_MARKDOWN = "comparison.md"
COMPARISON_PLOT = "comparison.png"


@dataclass(frozen=True)
class Rule:
    tolerance: float = 0.02
    min_test_studies: int = 10


@dataclass
class Decision:
    promote: bool
    forced: bool
    reasons: list[str] = field(default_factory=list)
    tolerance: float = 0.02
    min_test_studies: int = 10


def model_metrics(result: Mapping[str, Any]) -> dict[str, Any]:
    """The numbers compared, from `training.train.evaluation.evaluate_drafts`."""
    clinical = result["clinical"]
    sections = result.get("sections_clinical", {})
    return {
        "micro_f1": clinical["micro_f1"], "macro_f1": clinical["macro_f1"],
        "bleu4": result["bleu4"], "rouge_l": result["rouge_l"],
        "findings_micro_f1": sections.get("findings", {}).get("clinical", {}).get("micro_f1"),
        "impression_micro_f1": sections.get("impression", {}).get("clinical", {}).get("micro_f1"),
        "per_finding_f1": {key: value["f1"] for key, value in clinical["per_finding"].items()},
        "support": {key: value["support"] for key, value in clinical["per_finding"].items()},
    }


def decide(current: Mapping[str, Any], candidate: Mapping[str, Any], *, studies: int, rule: Rule,
           force: bool = False) -> Decision:
    reasons: list[str] = []
    acceptable = True
    if studies < rule.min_test_studies:
        acceptable = False
        reasons.append(f"only {studies} held-out test studies (at least {rule.min_test_studies} are needed to judge)")
    before, after = current["micro_f1"], candidate["micro_f1"]
    if after > before:
        reasons.append(f"overall micro F1 better: {before:.3f} -> {after:.3f}")
    else:
        acceptable = False
        reasons.append(f"overall micro F1 not better: {before:.3f} -> {after:.3f}")
    for finding, old in current["per_finding_f1"].items():
        if not current["support"].get(finding):
            continue  # no test study has it: nothing measured
        new = candidate["per_finding_f1"].get(finding, 0.0)
        if new < old - rule.tolerance:
            acceptable = False
            reasons.append(f"{finding} worse beyond the tolerance: {old:.3f} -> {new:.3f} "
                           f"(tolerance {rule.tolerance:.3f})")
    if acceptable:
        reasons.append(f"no finding worse by more than {rule.tolerance:.3f}")
    forced = force and not acceptable
    if forced:
        reasons.append("promotion forced (--force) against the rule")
    return Decision(promote=acceptable or force, forced=forced, reasons=reasons, tolerance=rule.tolerance,
                    min_test_studies=rule.min_test_studies)


def comparison_record(current_model: Mapping[str, str], candidate_model: Mapping[str, str], studies: int,
                      current: Mapping[str, Any], candidate: Mapping[str, Any], decision: Decision,
                      **extra: Any) -> dict[str, Any]:
    return {"current": dict(current_model), "candidate": dict(candidate_model), "test_studies": studies,
            "metrics": {"current": dict(current), "candidate": dict(candidate)}, "decision": asdict(decision),
            "labeler": labeler_quality(), **extra}


def markdown_table(record: Mapping[str, Any]) -> str:
    current, candidate = record["metrics"]["current"], record["metrics"]["candidate"]
    names = (record["current"]["version"], record["candidate"]["version"])
    lines = [f"Held-out site studies: {record['test_studies']}", "",
             f"| metric | current {names[0]} | candidate {names[1]} | change |", "|---|---|---|---|"]

    def row(label: str, old: float | None, new: float | None) -> None:
        if old is None or new is None:
            return
        lines.append(f"| {label} | {old:.3f} | {new:.3f} | {new - old:+.3f} |")

    for key, label in (("micro_f1", "clinical micro F1 (report)"), ("macro_f1", "clinical macro F1"),
                       ("findings_micro_f1", "findings micro F1"), ("impression_micro_f1", "impression micro F1"),
                       ("bleu4", "BLEU-4"), ("rouge_l", "ROUGE-L")):
        row(label, current.get(key), candidate.get(key))
    for finding, old in current["per_finding_f1"].items():
        support = current["support"].get(finding, 0)
        if support:
            row(f"F1 {finding.replace('_', ' ')} (n={support})", old, candidate["per_finding_f1"].get(finding))
    decision = record["decision"]
    verdict = "promote" + (" (forced)" if decision["forced"] else "") if decision["promote"] else "keep the current model"
    lines += ["", f"**Decision: {verdict}.**", ""] + [f"- {reason}" for reason in decision["reasons"]]
    labeler = record.get("labeler")
    if labeler:
        per_finding = ", ".join(f"{k.replace('_', ' ')} {v:.2f}" for k, v in labeler["per_finding_f1"].items())
        lines += ["", (f"The F1 figures above come from the findings labeler, whose own macro F1 is "
                       f"{labeler['macro_f1']:.3f} on {labeler['set']} ({per_finding}): differences smaller than "
                       "its errors on a finding deserve caution.")]
    return "\n".join(lines) + "\n"


def plot_comparison(record: Mapping[str, Any], path: Path) -> Path:
    """Grouped bars: overall and per-finding F1 (findings present in the test studies), current vs candidate."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    current, candidate = record["metrics"]["current"], record["metrics"]["candidate"]
    keys = ["micro_f1"] + [k for k in current["per_finding_f1"] if current["support"].get(k)]
    labels = ["overall (micro)"] + [k.replace("_", " ") for k in keys[1:]]
    old = [current["micro_f1"]] + [current["per_finding_f1"][k] for k in keys[1:]]
    new = [candidate["micro_f1"]] + [candidate["per_finding_f1"].get(k, 0.0) for k in keys[1:]]
    figure, axes = plt.subplots(figsize=(8, 0.45 * len(keys) + 2.0))
    positions = range(len(keys))
    axes.barh([p + 0.2 for p in positions], old, height=0.4, label=f"current {record['current']['version']}",
              color="#9aa5b1")
    axes.barh([p - 0.2 for p in positions], new, height=0.4, label=f"candidate {record['candidate']['version']}",
              color="#2f6fde")
    axes.set_yticks(list(positions), labels)
    axes.invert_yaxis()
    axes.set_xlim(0, 1)
    axes.set_xlabel("clinical F1 (labeler on draft vs signed report)")
    decision = record["decision"]
    axes.set_title(f"{record['test_studies']} held-out site studies: "
                   + ("promote" + (" (forced)" if decision["forced"] else "") if decision["promote"] else "keep current"))
    axes.legend(loc="upper center", bbox_to_anchor=(0.5, -0.1 - 1.0 / (len(keys) + 4)), ncol=2, fontsize=8,
                frameon=False)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    plt.close(figure)
    write_atomically(path, [buffer.getvalue()])
    return path


def write_comparison(out_dir: Path, record: Mapping[str, Any]) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / COMPARISON_JSON, "markdown": out_dir / COMPARISON_MARKDOWN,
             "plot": out_dir / COMPARISON_PLOT}
    write_text_atomically(paths["markdown"], markdown_table(record))
    plot_comparison(record, paths["plot"])
    # Written last: its presence means the comparison is complete.
    write_text_atomically(paths["json"], json.dumps(record, indent=2) + "\n")
    return paths
