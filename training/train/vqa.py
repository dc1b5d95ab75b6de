"""Generic "mixup" samples for stage 2: short questions and answers about a study, from its structured findings.

They keep the language model answering questions (not only writing reports) and tie words such as
"right" or "large" to what the image shows: "Is there a pleural effusion?" -> "Yes, on the right.",
"Which side is the pneumothorax on?" -> "Left.". Built from the manifest's `findings` list (kind, side,
severity, device), so every answer is ground truth.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from engine.bundle import IMAGE_PLACEHOLDER

VQA_PROMPT = "<s>" + IMAGE_PLACEHOLDER + "\nQuestion: {question}\nAnswer:"
NAMES = {"cardiomegaly": "cardiomegaly", "pleural_effusion": "pleural effusion", "pneumothorax": "pneumothorax",
         "consolidation": "consolidation", "nodule": "pulmonary nodule or mass", "edema": "pulmonary edema",
         "atelectasis": "atelectasis", "support_device": "support device"}
SIDED = ("pleural_effusion", "pneumothorax", "consolidation", "nodule", "atelectasis")
SIZED = ("pleural_effusion", "pneumothorax")
ARTICLE = ("pleural_effusion", "pneumothorax", "nodule", "support_device")
SIZE_WORDS = {"mild": "Small.", "moderate": "Moderate.", "severe": "Large."}
SEVERITY_WORDS = {"mild": "Mild.", "moderate": "Moderate.", "severe": "Severe."}
DEVICE_WORDS = {"endotracheal_tube": "an endotracheal tube", "central_venous_catheter": "a central venous catheter",
                "nasogastric_tube": "a nasogastric tube", "pacemaker": "a pacemaker"}


class VqaError(ValueError):
    """A study's structured findings cannot be turned into questions (unknown kind)."""


def vqa_prompt(question: str) -> str:
    return VQA_PROMPT.replace("{question}", question)


def _both(sides: set[str]) -> bool:
    return sides >= {"right", "left"} or "bilateral" in sides


def _side_words(sides: set[str]) -> str:
    """"on both sides", "on the right", or "" when no side is known."""
    if _both(sides):
        return "on both sides"
    return f"on the {next(iter(sides))}" if sides else ""


def _by_kind(findings: Sequence[Mapping]) -> dict[str, list[Mapping]]:
    grouped: dict[str, list[Mapping]] = {}
    for finding in findings:
        kind = finding.get("kind")
        if kind not in NAMES:
            raise VqaError(f"unknown finding kind {kind!r} in structured findings")
        grouped.setdefault(str(kind), []).append(finding)
    return grouped


def presence_pair(kind: str, grouped: dict[str, list[Mapping]]) -> tuple[str, str]:
    question = f"Is there {'a ' if kind in ARTICLE else ''}" \
               f"{NAMES[kind]}?"
    found = grouped.get(kind, [])
    if not found:
        return question, "No."
    hedge = "Possibly" if all(f.get("hedged") for f in found) else "Yes"
    if kind == "support_device":
        devices = sorted({DEVICE_WORDS.get(str(f.get("device")), "a device") for f in found})
        return question, f"{hedge}, {' and '.join(devices)}."
    sides = {str(f["side"]) for f in found if f.get("side")}
    where = _side_words(sides) if kind in SIDED else ""
    return question, f"{hedge}, {where}." if where else f"{hedge}."


def side_pair(kind: str, grouped: dict[str, list[Mapping]]) -> tuple[str, str]:
    question = f"Which side is the {NAMES[kind]} on?"
    found = grouped.get(kind, [])
    if not found:
        return question, f"There is no {NAMES[kind]}."
    sides = {str(f["side"]) for f in found if f.get("side")}
    if _both(sides):
        return question, "Both sides."
    return question, f"{next(iter(sides)).capitalize()}." if sides else "Unclear."


def severity_pair(kind: str, grouped: dict[str, list[Mapping]]) -> tuple[str, str]:
    found = grouped.get(kind, [])
    if kind in SIZED:
        question = f"How large is the {NAMES[kind]}?"
        table = SIZE_WORDS
    else:
        question = f"How severe is the {NAMES[kind]}?"
        table = SEVERITY_WORDS
    if not found:
        return question, f"There is no {NAMES[kind]}."
    worst = max(found, key=lambda f: ("mild", "moderate", "severe").index(str(f.get("severity", "moderate"))))
    return question, table[str(worst.get("severity", "moderate"))]


def normal_pair(grouped: dict[str, list[Mapping]]) -> tuple[str, str]:
    pathologies = [k for k in grouped if k != "support_device"]
    if not pathologies:
        return "Is this chest radiograph normal?", "Yes, no acute cardiopulmonary abnormality."
    names = ", ".join(NAMES[k] for k in sorted(pathologies))
    return "Is this chest radiograph normal?", f"No: {names}."


def question_pairs(findings: Sequence[Mapping]) -> list[tuple[str, str]]:
    """Every question this module asks about a study, with its ground-truth answer."""
    grouped = _by_kind(findings)
    pairs = [presence_pair(kind, grouped) for kind in NAMES]
    pairs += [side_pair(kind, grouped) for kind in SIDED if kind in grouped]
    pairs += [severity_pair(kind, grouped) for kind in grouped if kind != "support_device"]
    pairs.append(normal_pair(grouped))
    return pairs


def draw_question(findings: Sequence[Mapping], rng: np.random.Generator) -> tuple[str, str]:
    """One (question, answer) about a study; questions about present findings are drawn more often."""
    pairs = question_pairs(findings)
    weights = np.array([1.0 if answer.startswith(("No.", "There is no")) else 2.0 for _, answer in pairs])
    return pairs[int(rng.choice(len(pairs), p=weights / weights.sum()))]
