"""Evaluating drafts on held-out studies, and writing the numbers into the bundle (model.json + card).

Drafts of the exported bundle come from the ONNX engine (`engine.runtime`), exactly as the app drafts;
torch generation on the merged model is the fallback. Scores: `training.evaluation.metrics.evaluate`
on the whole report and on each section alone (finding-level F1 of the rule-based labeler against the
labeler on the reference report, and against the ground-truth labels where the studies carry them).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from dicom_node.durable import write_text_atomically
from training.train.studies import Study

log = logging.getLogger(__name__)
SECTIONS = ("findings", "impression")
QUALITY_HEADING = "## Measured quality"


def headline_metrics(result: Mapping[str, Any]) -> dict[str, float]:
    """The few numbers shown per epoch: clinical micro F1 (vs the reference report's labels and, when
    known, vs ground truth), BLEU-4 and ROUGE-L of the whole report."""
    metrics = {"micro_f1": result["clinical"]["micro_f1"], "bleu4": result["bleu4"], "rouge_l": result["rouge_l"]}
    if "clinical_vs_ground_truth" in result:
        metrics["micro_f1_truth"] = result["clinical_vs_ground_truth"]["micro_f1"]
    return metrics


def _only(record: Mapping[str, Any], section: str, text: str) -> dict[str, Any]:
    other = {s: "" for s in SECTIONS if s != section}
    return {**record, "report": {section: text, **other}, section: text, **other}


def evaluate_drafts(predictions: Sequence[Mapping[str, Any]], studies: Sequence[Study]) -> dict[str, Any]:
    """`metrics.evaluate` on the whole report, plus `sections_clinical`: each section scored alone."""
    from training.evaluation.metrics import evaluate

    references = [s.reference() for s in studies]
    result = evaluate(list(predictions), references)
    result["sections_clinical"] = {}
    for section in SECTIONS:
        preds = [_only({"study_uid": p["study_uid"]}, section, str(p.get(section, ""))) for p in predictions]
        refs = [_only({"study_uid": s.uid, "labels": dict(s.labels)}, section,
                      s.findings_text if section == "findings" else s.impression_text) for s in studies]
        scored = evaluate(preds, refs)
        result["sections_clinical"][section] = {
            key: scored[key] for key in ("clinical", "clinical_vs_ground_truth") if key in scored}
    return result


def summary_metrics(result: Mapping[str, Any], *, evaluated_with: str, test_set: str) -> dict[str, Any]:
    """The compact numbers for model.json."""
    def clinical(block: Mapping[str, Any]) -> dict[str, Any]:
        out = {"micro_f1": block["clinical"]["micro_f1"], "macro_f1": block["clinical"]["macro_f1"]}
        if "clinical_vs_ground_truth" in block:
            out["micro_f1_vs_ground_truth"] = block["clinical_vs_ground_truth"]["micro_f1"]
        return out

    summary: dict[str, Any] = {"test_set": test_set, "studies": result["n_studies"], "evaluated_with": evaluated_with,
                               "report": {"bleu4": result["bleu4"], "rouge_l": result["rouge_l"],
                                          **clinical(result)}}
    for section in SECTIONS:
        text = result["sections"][section]
        summary[section] = {"bleu4": text["bleu4"], "rouge_l": text["rouge_l"],
                            **clinical(result["sections_clinical"][section])}
    summary["per_finding_f1"] = {k: v["f1"] for k, v in result["clinical"]["per_finding"].items()}
    comparison = result.get("comparison") or {}
    if comparison.get("n_with_prior") or comparison.get("n_without_prior"):
        summary["comparison"] = {key: comparison.get(key) for key in
                                 ("micro_f1", "hallucinated", "n_with_prior", "n_without_prior")}
    return summary


# ------------------------------------------------------------------------------------------- drafting
def draft_with_engine(bundle_dir: Path, studies: Sequence[Study], *, variant: str = "fp32", threads: int = 0,
                      max_new_tokens: int = 0, progress: Callable[[int], None] | None = None) -> list[dict]:
    """Findings and Impression of every study through the ONNX engine, as the app drafts them."""
    from engine.runtime import load_model
    from engine.settings import EngineSettings

    model = load_model(bundle_dir, EngineSettings(providers=("cpu",), variant=variant, intra_op_threads=threads,
                                                  max_new_tokens=max_new_tokens))
    drafts = []
    for study in studies:
        draft = model.draft(study.paths, prior=study.prior)
        drafts.append({"study_uid": study.uid, "findings": draft.findings, "impression": draft.impression})
        if progress:
            progress(1)
    return drafts


# ----------------------------------------------------------------------------------------- the card
def quality_section(results: Mapping[str, Mapping[str, Any]], test_set: str) -> str:
    """Markdown for MODEL_CARD.md: text metrics and clinical F1 per section, per-finding F1 (one column per
    evaluated variant / engine)."""
    names = list(results)
    first = results[names[0]]
    intro = (f"Measured on {first['n_studies']} held-out studies ({test_set}), greedy decoding. Clinical F1: the "
             "labeler (`engine/findings/labeler.py`, medspaCy ConText over target rules) on the draft against the labeler on the "
             "reference report (finding present = positive; micro F1 pools all findings) and against the "
             "ground-truth labels of the phantoms. Hedged reference statements (\"possible ...\") count as "
             "uncertain, not present, so F1 against ground truth stays below 1 even for a perfect copy of the "
             "reference (see the last row).")
    lines = [QUALITY_HEADING, "", intro, "", "| metric | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]

    def row(label: str, get: Callable[[Mapping[str, Any]], Any]) -> None:
        cells = []
        for name in names:
            try:
                cells.append(f"{get(results[name]):.3f}")
            except (KeyError, TypeError):
                cells.append("—")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")

    for section in ("report", *SECTIONS):
        text = (lambda r: r) if section == "report" else (lambda r, s=section: r["sections"][s])
        clinical = (lambda r: r) if section == "report" else (lambda r, s=section: r["sections_clinical"][s])
        row(f"{section}: BLEU-4", lambda r, t=text: t(r)["bleu4"])
        row(f"{section}: ROUGE-L", lambda r, t=text: t(r)["rouge_l"])
        row(f"{section}: micro F1 (vs reference labeler)", lambda r, c=clinical: c(r)["clinical"]["micro_f1"])
        row(f"{section}: macro F1 (vs reference labeler)", lambda r, c=clinical: c(r)["clinical"]["macro_f1"])
        row(f"{section}: micro F1 (vs ground truth)",
            lambda r, c=clinical: c(r)["clinical_vs_ground_truth"]["micro_f1"])
    row("reference report itself: micro F1 vs ground truth",
        lambda r: r["reference_labeler_vs_ground_truth"]["micro_f1"])
    if any((results[n].get("comparison") or {}).get("n_with_prior") for n in names):
        row("comparison with the prior: micro F1 over per-finding change labels",
            lambda r: r["comparison"]["micro_f1"])
        row("studies without a prior: share of drafts claiming a comparison", lambda r: r["comparison"]["hallucinated"])
    lines += ["", "Per-finding F1 (whole report, vs reference labeler; support = positives in the references):", "",
              "| finding | support | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
    for key, value in first["clinical"]["per_finding"].items():
        cells = [f"{results[n]['clinical']['per_finding'][key]['f1']:.3f}" for n in names]
        lines.append(f"| {key} | {value['support']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def replace_card_section(card: str, section: str) -> str:
    """`card` with its "## Measured quality" section replaced by `section` (appended when absent)."""
    start = card.find(QUALITY_HEADING)
    if start < 0:
        return card.rstrip() + "\n\n" + section
    end = card.find("\n## ", start + len(QUALITY_HEADING))
    return card[:start] + section + ("\n" + card[end + 1:] if end >= 0 else "")


def write_bundle_metrics(bundle_dir: Path, metrics: Mapping[str, Any], quality_markdown: str,
                         extra_provenance: Mapping[str, Any] | None = None) -> None:
    """Put `metrics` into model.json and the quality section into MODEL_CARD.md (both atomically)."""
    from engine.bundle import read_manifest, write_manifest

    manifest = read_manifest(bundle_dir)
    provenance = {**manifest.provenance, **(extra_provenance or {})}
    write_manifest(dataclasses.replace(manifest, metrics=dict(metrics), provenance=provenance), bundle_dir)
    card_path = Path(bundle_dir) / manifest.card
    card = card_path.read_text(encoding="utf-8") if card_path.is_file() else f"# {manifest.name}\n"
    write_text_atomically(card_path, replace_card_section(card, quality_markdown))
