"""Findings as a radiologist leaves them after editing a draft, with the impression they call for.

A model drafting the impression from findings must follow the text it is given, also when the radiologist
deleted a finding, added one the image does not show, or typed three terse sentences. Another study's
findings teach the first two; this module teaches the rest: from a study's structured findings (phantoms),
a random share is kept and written again, often briefly (`ReportWriter.brief_findings`), and the target is
the impression of exactly what is left.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from training.data.findings import Finding
from training.data.reports import ReportWriter

KEEP = 0.7  # the chance that each finding stays in the edited text
BRIEF = 0.6  # the chance that the edited text is brief rather than a full findings section


def edited_report(findings: Sequence[Mapping], seed: int) -> tuple[str, str]:
    """(findings text, impression) of a random share of `findings` (the manifest's structured findings),
    the same for the same seed."""
    rng = np.random.default_rng(seed)
    kept = tuple(Finding(**dict(f)) for f in findings if rng.random() < KEEP)
    writer = ReportWriter(rng)
    text = writer.brief_findings(kept) if rng.random() < BRIEF else writer.findings_section(kept)
    return text, writer.impression(kept)
