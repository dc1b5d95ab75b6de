"""Report metrics: BLEU-1..4 and ROUGE-L per section, and clinical accuracy through the findings labeler.

Implementations (papers differ, so the output JSON states them too):

- BLEU: sacrebleu `corpus_bleu` (BLEU(max_ngram_order=n, lowercase=True, tokenize="13a", smooth_method="exp"));
  BLEU-n is the cumulative score over 1..n-grams, as in pycocoevalcap; scaled to 0..1.
- ROUGE-L: rouge-score `RougeScorer(["rougeL"], use_stemmer=False)`, the F-measure per report, averaged.
- Clinical: `engine.findings.labeler.label_report` on the prediction and on the reference (findings +
  impression); positive = "present"; F1 per finding key, micro (pooled counts) and macro (mean over keys
  with any positive in prediction or reference). "uncertain" is counted separately, never as positive.
  Where the references carry ground-truth `labels` (a phantom manifest), the same is computed against them.

- Comparison (`comparison`): `training.evaluation.change.read_changes` on each prediction against the
  reference's per-finding `change` (new / increased / decreased / unchanged / resolved), over the studies whose
  reference has a prior; a (finding, change) pair is a true positive when both say it; `micro_f1` pools the
  pairs. `hallucinated` is the share of predictions for studies without a prior (no `prior_study_uid`) that
  claim a comparison (`training.evaluation.change.claims_comparison`).

Top-level `bleu1..4` and `rouge_l` score the whole report (findings and impression joined);
`sections.findings` and `sections.impression` score each section alone.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from engine.findings.labeler import label_report
from training.evaluation.change import CHANGES, claims_comparison, read_changes
from training.vocabulary import LABEL_KEYS, LABEL_VALUES, PRESENT, UNCERTAIN

SECTIONS = ("findings", "impression")
IMPLEMENTATION = {
    "bleu": "sacrebleu corpus_bleu, BLEU(max_ngram_order=n, lowercase=True, tokenize='13a', smooth_method='exp'); "
            "cumulative BLEU-n, scaled to 0..1",
    "rouge_l": "rouge-score RougeScorer(['rougeL'], use_stemmer=False); mean F-measure over reports",
    "clinical": "labeler (engine.findings.labeler: medspaCy ConText over target rules), positive = present; micro F1 pools counts "
                "over keys, macro F1 averages keys with any positive; uncertain reported separately",
    "comparison": "training.evaluation.change (change cues owned by the labeler's mentions): micro F1 over "
                  "(finding, change) pairs of studies with a prior; hallucinated = share of predictions for studies "
                  "without a prior that claim a comparison",
}


class MetricsError(ValueError):
    """Predictions and references cannot be matched or lack required fields."""


def report_text(record: Mapping[str, Any]) -> str:
    return " ".join(section_text(record, s) for s in SECTIONS).strip()


def section_text(record: Mapping[str, Any], section: str) -> str:
    report = record.get("report")
    source = report if isinstance(report, Mapping) else record
    value = source.get(section, "")
    if not isinstance(value, str):
        raise MetricsError(f"study {record.get('study_uid')!r}: {section} must be a string")
    return value.strip()


def bleu_scores(hypotheses: list[str], references: list[str]) -> dict[str, float]:
    """Cumulative corpus BLEU-1..4 (0..1) with sacrebleu."""
    from sacrebleu.metrics import BLEU

    scores = {}
    for n in range(1, 5):
        bleu = BLEU(max_ngram_order=n, lowercase=True, tokenize="13a", smooth_method="exp")
        scores[f"bleu{n}"] = round(bleu.corpus_score(hypotheses, [references]).score / 100.0, 6)
    return scores


def rouge_l(hypotheses: list[str], references: list[str]) -> float:
    """Mean ROUGE-L F-measure with rouge-score."""
    from rouge_score.rouge_scorer import RougeScorer

    scorer = RougeScorer(["rougeL"], use_stemmer=False)
    values = [scorer.score(ref, hyp)["rougeL"].fmeasure for hyp, ref in zip(hypotheses, references)]
    return round(sum(values) / len(values), 6) if values else 0.0


def text_scores(hypotheses: list[str], references: list[str]) -> dict[str, float]:
    return {**bleu_scores(hypotheses, references), "rouge_l": rouge_l(hypotheses, references)}


def clinical_scores(predicted: list[Mapping[str, str]], reference: list[Mapping[str, str]],
                    keys: Iterable[str] = LABEL_KEYS) -> dict[str, Any]:
    """Precision/recall/F1 per key (positive = present), micro and macro F1, uncertain counts."""
    per_key: dict[str, dict[str, float | int]] = {}
    total_tp = total_fp = total_fn = 0
    for key in keys:
        tp = sum(p[key] == PRESENT and r[key] == PRESENT for p, r in zip(predicted, reference))
        fp = sum(p[key] == PRESENT and r[key] != PRESENT for p, r in zip(predicted, reference))
        fn = sum(p[key] != PRESENT and r[key] == PRESENT for p, r in zip(predicted, reference))
        total_tp, total_fp, total_fn = total_tp + tp, total_fp + fp, total_fn + fn
        per_key[key] = {
            **_prf(tp, fp, fn), "tp": tp, "fp": fp, "fn": fn, "support": tp + fn,
            "predicted_uncertain": sum(p[key] == UNCERTAIN for p in predicted),
            "reference_uncertain": sum(r[key] == UNCERTAIN for r in reference),
        }
    scored = [k for k, v in per_key.items() if v["tp"] + v["fp"] + v["fn"] > 0]
    macro = sum(per_key[k]["f1"] for k in scored) / len(scored) if scored else 0.0
    return {
        "micro_f1": _prf(total_tp, total_fp, total_fn)["f1"],
        "micro_precision": _prf(total_tp, total_fp, total_fn)["precision"],
        "micro_recall": _prf(total_tp, total_fp, total_fn)["recall"],
        "macro_f1": round(macro, 6),
        "macro_keys": scored,
        "per_finding": per_key,
    }


def _prf(tp: int, fp: int, fn: int) -> dict[str, float]:
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": round(precision, 6), "recall": round(recall, 6), "f1": round(f1, 6)}


def match(predictions: list[Mapping[str, Any]], references: list[Mapping[str, Any]]
          ) -> list[tuple[Mapping[str, Any], Mapping[str, Any]]]:
    """Pairs (prediction, reference) by `study_uid`. Every prediction must have a reference; references
    without a prediction (other splits of a manifest) are left out."""
    by_uid: dict[str, Mapping[str, Any]] = {}
    for number, ref in enumerate(references, 1):
        uid = ref.get("study_uid") if isinstance(ref, Mapping) else None
        if not isinstance(uid, str) or not uid:
            raise MetricsError(f"reference {number} has no study_uid")
        by_uid[uid] = ref
    pairs, seen = [], set()
    for number, pred in enumerate(predictions, 1):
        uid = pred.get("study_uid") if isinstance(pred, Mapping) else None
        if not isinstance(uid, str) or not uid:
            raise MetricsError(f"prediction {number} has no study_uid")
        if uid in seen:
            raise MetricsError(f"prediction {number}: study {uid} predicted twice")
        if uid not in by_uid:
            raise MetricsError(f"prediction {number}: study {uid} is not among the references")
        seen.add(uid)
        pairs.append((pred, by_uid[uid]))
    if not pairs:
        raise MetricsError("no predictions to evaluate")
    return pairs


def evaluate(predictions: list[Mapping[str, Any]], references: list[Mapping[str, Any]]) -> dict[str, Any]:
    """All metrics for predictions (`study_uid`, `findings`, `impression`) against references (a manifest:
    `study_uid`, `report` {findings, impression}, optionally ground-truth `labels`)."""
    pairs = match(predictions, references)
    hyps = [report_text(p) for p, _ in pairs]
    refs = [report_text(r) for _, r in pairs]
    result: dict[str, Any] = {"n_studies": len(pairs), "n_references": len(references), **text_scores(hyps, refs)}
    result["sections"] = {
        s: text_scores([section_text(p, s) for p, _ in pairs], [section_text(r, s) for _, r in pairs])
        for s in SECTIONS
    }
    predicted_labels = [label_report(h) for h in hyps]
    reference_labels = [label_report(r) for r in refs]
    result["clinical"] = clinical_scores(predicted_labels, reference_labels)
    truth = [_ground_truth(r) for _, r in pairs]
    if all(t is not None for t in truth):
        result["clinical_vs_ground_truth"] = clinical_scores(predicted_labels, truth)
        result["reference_labeler_vs_ground_truth"] = clinical_scores(reference_labels, truth)
    result["comparison"] = comparison_scores(pairs)
    result["implementation"] = IMPLEMENTATION
    return result


def comparison_scores(pairs: list[tuple[Mapping[str, Any], Mapping[str, Any]]]) -> dict[str, Any]:
    """`micro_f1` (null without references that carry `change`) and `hallucinated` (null without studies
    lacking a prior), with their counts and per-change precision/recall/F1."""
    with_prior = [(p, r) for p, r in pairs if r.get("prior_study_uid")]
    without = [p for p, r in pairs if not r.get("prior_study_uid")]
    claims = sum(claims_comparison(report_text(p)) for p in without)
    result: dict[str, Any] = {
        "n_with_prior": len(with_prior), "n_without_prior": len(without), "claims_without_prior": claims,
        "hallucinated": round(claims / len(without), 6) if without else None,
        "micro_f1": None,
    }
    scored = [(p, r) for p, r in with_prior if isinstance(r.get("change"), Mapping)]
    if not scored:
        return result
    counts = {label: [0, 0, 0] for label in CHANGES}  # tp, fp, fn
    for prediction, reference in scored:
        truth, predicted = _comparable(reference, dict(reference["change"]), read_changes(report_text(prediction)))
        for key, label in predicted.items():
            counts[label][0 if truth.get(key) == label else 1] += 1
        for key, label in truth.items():
            if predicted.get(key) != label:
                counts[label][2] += 1
    tp, fp, fn = (sum(c[i] for c in counts.values()) for i in range(3))
    result.update({f"micro_{k}": v for k, v in _prf(tp, fp, fn).items()})
    result.update(tp=tp, fp=fp, fn=fn, n_scored=len(scored),
                  per_change={label: {**_prf(*c), "tp": c[0], "fp": c[1], "fn": c[2], "support": c[0] + c[2]}
                              for label, c in counts.items()})
    return result


def _comparable(reference: Mapping[str, Any], truth: dict[str, str], predicted: dict[str, str]
                ) -> tuple[dict[str, str], dict[str, str]]:
    """A device that only moved has no change label: what either side says of support devices is not scored."""
    unknown = {label for label in truth.values() if label not in CHANGES}
    if unknown:
        raise MetricsError(f"study {reference.get('study_uid')!r}: change must be one of {CHANGES}, got "
                           f"{min(unknown)!r}")
    moves = reference.get("device_change")
    if isinstance(moves, Mapping) and "moved" in moves.values():
        truth.pop("support_device", None)
        predicted.pop("support_device", None)
    return truth, predicted


def _ground_truth(reference: Mapping[str, Any]) -> dict[str, str] | None:
    labels = reference.get("labels")
    if not isinstance(labels, Mapping) or not labels:  # none known (a site's signed reports)
        return None
    if any(labels.get(k) not in LABEL_VALUES for k in LABEL_KEYS):
        raise MetricsError(f"study {reference.get('study_uid')!r}: labels must give every key of {LABEL_KEYS}")
    return {k: str(labels[k]) for k in LABEL_KEYS}


def format_table(result: Mapping[str, Any]) -> str:
    """A readable summary of `evaluate`'s result."""
    lines = [f"studies evaluated: {result['n_studies']}", "",
             f"{'text':<12}{'BLEU-1':>8}{'BLEU-2':>8}{'BLEU-3':>8}{'BLEU-4':>8}{'ROUGE-L':>9}"]
    rows = [("report", result)] + [(s, result["sections"][s]) for s in SECTIONS]
    for name, scores in rows:
        lines.append(f"{name:<12}" + "".join(f"{scores[f'bleu{n}']:>8.3f}" for n in range(1, 5))
                     + f"{scores['rouge_l']:>9.3f}")
    blocks = [("labeler(prediction) vs labeler(reference)", result["clinical"])]
    if "clinical_vs_ground_truth" in result:
        blocks.append(("labeler(prediction) vs ground truth", result["clinical_vs_ground_truth"]))
    comparison = result.get("comparison") or {}
    if comparison.get("micro_f1") is not None or comparison.get("hallucinated") is not None:
        f1, share = comparison.get("micro_f1"), comparison.get("hallucinated")
        lines += ["", (f"comparison: micro F1 {'-' if f1 is None else f'{f1:.3f}'} over {comparison['n_with_prior']} "
                  f"studies with a prior; hallucinated {'-' if share is None else f'{share:.3f}'} "
                  f"({comparison['claims_without_prior']} of {comparison['n_without_prior']} without a prior "
                  "claim a comparison)")]
    for title, clinical in blocks:
        lines += ["", f"clinical: {title}  micro F1 {clinical['micro_f1']:.3f}  macro F1 {clinical['macro_f1']:.3f}",
                  f"{'finding':<18}{'P':>7}{'R':>7}{'F1':>7}{'support':>9}{'unc(pred)':>11}{'unc(ref)':>10}"]
        for key, v in clinical["per_finding"].items():
            lines.append(f"{key:<18}{v['precision']:>7.3f}{v['recall']:>7.3f}{v['f1']:>7.3f}{v['support']:>9}"
                         f"{v['predicted_uncertain']:>11}{v['reference_uncertain']:>10}")
    return "\n".join(lines)


def plot_per_finding(result: Mapping[str, Any], path: str) -> None:
    """A bar chart of per-finding F1 (against the reference labels and, if present, the ground truth)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = [("vs reference report", result["clinical"])]
    if "clinical_vs_ground_truth" in result:
        series.append(("vs ground truth", result["clinical_vs_ground_truth"]))
    keys = list(result["clinical"]["per_finding"])
    width = 0.8 / len(series)
    fig, ax = plt.subplots(figsize=(10, 4.5))
    for i, (name, clinical) in enumerate(series):
        values = [clinical["per_finding"][k]["f1"] for k in keys]
        ax.bar([x + i * width for x in range(len(keys))], values, width, label=name)
    ax.set_xticks([x + width * (len(series) - 1) / 2 for x in range(len(keys))])
    ax.set_xticklabels(keys, rotation=30, ha="right")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("F1 (positive = present)")
    ax.set_title(f"Per-finding F1, {result['n_studies']} studies "
                 f"(micro F1 {result['clinical']['micro_f1']:.3f}, BLEU-4 {result['bleu4']:.3f})")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
