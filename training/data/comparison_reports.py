"""Reference reports that compare with a prior study (or say there is none), in varied radiology phrasing.

`ComparisonReportWriter(rng).write_with_prior(findings, prior)` describes the current findings as
`ReportWriter` does, each with how it changed since the prior ("Moderate right pleural effusion, increased
since 2024-03-02.", "Stable 18 mm nodule in the right upper lobe."), adds what resolved or was removed
("Interval resolution of the left lower lobe consolidation."), and puts a change statement for every
pathology in the impression. `write_without_prior(findings)` says that no prior is available and never
uses a word of comparison (new, stable, unchanged, interval, since...).

`wording="house"` writes the same facts the way a drafting model is best taught to: every finding first, with
its severity, and its change after it ("Moderate right pleural effusion, increased since 2024-03-02."),
resolved findings and removed devices after the current ones, and the first wording of each comparison
statement, always (the findings themselves keep `ReportWriter`'s varied words and severity synonyms). In the
impression each finding is named with one grade word per severity ("small", "moderate", "large" for effusion
and pneumothorax, "mild", "moderate", "marked" for the others, the size of a nodule), followed by the prior's
grade when the prior had it: "Small right pleural effusion, previously large, decreased since 2024-03-02."
A model decoding such a text greedily has written what it sees, and then what the prior report said in the
same words, before it chooses the change; the change is then a comparison of two words it has just written.
In the varied wording it must often pick "Increased" or "Interval increase" before naming the finding, read
the prior's severity from synonyms ("trace", "minimal", "dense ... with volume loss") and compare in one
step, and each change's chance is spread over four phrasings.
"""

from __future__ import annotations

from training.data.findings import Finding
from training.data.longitudinal import (
    DECREASED,
    INCREASED,
    MOVED,
    NEW,
    PLACED,
    REMOVED,
    RESOLVED,
    UNCHANGED,
    PriorSpec,
    check_wording,
)
from training.data.reports import (
    DEVICE_IMPRESSION,
    PRIORITY,
    SEVERITY_BOOST,
    SEVERITY_WORDS,
    SIZE_WORDS,
    ReportWriter,
)

DEVICE_NAMES = {"endotracheal_tube": ["endotracheal tube", "ET tube"],
                "central_venous_catheter": ["central venous catheter", "central line"],
                "nasogastric_tube": ["nasogastric tube", "enteric tube"],
                "pacemaker": ["cardiac pacemaker", "pacemaker"]}
NO_PRIOR = ["No prior studies are available for comparison.", "No prior for comparison.",
            "There are no prior radiographs for comparison.", "No previous examination is available for comparison."]
INTRO = ["Comparison is made with the prior radiograph of {date}.", "Compared with {date}.",
         "Comparison: chest radiograph of {date}.", "Comparison is made to the study dated {date}."]
# suffixes after a description ("Moderate right pleural effusion, increased since 2024-03-02.")
SUFFIX = {
    NEW: ["new since {date}", "new since the prior study", "new compared with the prior radiograph",
          "which is new"],
    INCREASED: ["increased since {date}", "increased compared with the prior study", "larger than on {date}",
                "increased in size since the prior radiograph"],
    DECREASED: ["decreased since {date}", "smaller than on the prior study", "improved compared with {date}",
                "decreased in size since the prior radiograph"],
    UNCHANGED: ["unchanged since {date}", "unchanged from the prior study", "stable compared with {date}",
                "similar to the prior radiograph"],
}
# standalone statements around a noun phrase ("{np}": "moderate right pleural effusion")
STATEMENT = {
    NEW: ["New {np}.", "Interval development of {a} {np}.", "There is a new {np}.",
          "Compared with {date}, there is a new {np}."],
    INCREASED: ["Interval increase in the {np}.", "The {np} has increased since {date}.",
                "Compared with {date}, the {np} has increased.", "Increased {np}."],
    DECREASED: ["Interval decrease in the {np}.", "The {np} has decreased since the prior study.",
                "Compared with {date}, the {np} has decreased.", "Improving {np}."],
    UNCHANGED: ["Unchanged {np}.", "Stable {np}.", "The {np} is unchanged from {date}.",
                "The {np} is again seen, unchanged."],
    RESOLVED: ["Interval resolution of the {np}.", "The previously seen {np} has resolved.",
               "The {np} seen on {date} has resolved.", "Resolved {np}."],
}
DEVICE_STATEMENT = {
    UNCHANGED: ["The {name} is unchanged in position.", "Stable position of the {name}.",
                "{Name} unchanged in position."],
    PLACED: ["Interval placement of {a} {name}.", "New {name} in satisfactory position.",
             "{A} {name} has been placed since the prior study."],
    REMOVED: ["Interval removal of the {name}.", "The {name} has been removed.",
              "The previously seen {name} has been removed."],
}
MOVED_TEXT = {
    "endotracheal_tube": ["The endotracheal tube has been {verb} and now terminates {cm} cm above the carina.",
                          "Interval {noun} of the ET tube, tip now {cm} cm above the carina."],
    "central_venous_catheter": ["The central venous catheter has been repositioned, tip now in the lower SVC.",
                                "Interval repositioning of the central line, tip at the cavoatrial junction."],
    "nasogastric_tube": ["The nasogastric tube has been {verb}, tip now in the stomach.",
                         "Interval {noun} of the enteric tube, tip in the gastric fundus."],
}
STABLE_NORMAL = ["No significant interval change.", "No interval change.", "Stable appearance of the chest."]


class ComparisonReportWriter(ReportWriter):
    """A `ReportWriter` whose statements carry the change since a prior (none: `write_without_prior`).

    wording: "varied" or "house" (`training.data.longitudinal.WORDINGS`, the module docstring)."""

    def __init__(self, rng, wording: str = "varied") -> None:
        super().__init__(rng)
        check_wording(wording)
        self.house = wording == "house"
        self._prior: PriorSpec | None = None

    def say(self, options: list[str]) -> str:
        """One of the wordings of a comparison statement: the first in the house wording."""
        return options[0] if self.house else self.pick(options)

    def chance(self, probability: float) -> bool:
        """A varied wording's coin; the house wording always takes the first branch."""
        return self.house or bool(self.rng.random() < probability)

    # -------------------------------------------------------------------------------------- entry points
    def write_without_prior(self, findings: tuple[Finding, ...]) -> dict[str, str]:
        self._prior = None
        sections = self.write(findings)
        sections["findings"] = f"{self.say(NO_PRIOR)} {sections['findings']}"
        return sections

    def write_with_prior(self, findings: tuple[Finding, ...], prior: PriorSpec) -> dict[str, str]:
        self._prior = prior
        try:
            return self.write(findings)
        finally:
            self._prior = None

    @property
    def date(self) -> str:
        return self._prior.date_text if self._prior else ""

    def fill(self, template: str, np_: str = "", name: str = "", *, sentence: bool = True) -> str:
        word = np_ or name
        article = "an" if word and word[0].lower() in "aeiou" else "a"
        text = template.format(date=self.date, np=np_, a=article, A=article.capitalize(), name=name,
                               Name=name[:1].upper() + name[1:])
        return text[0].upper() + text[1:] if sentence else text

    # ----------------------------------------------------------------------------------------- findings
    def findings_section(self, findings: tuple[Finding, ...]) -> str:
        body = super().findings_section(findings)
        if self._prior is None:
            return body
        gone = self.gone_statements()
        if gone and not self.house and self.rng.random() < 0.5:
            body = " ".join([*gone, body])
        elif gone:
            body = " ".join([body, *gone])
        if not self._prior.change or self.chance(0.7):  # with nothing changed, the intro says it was compared
            body = f"{self.fill(self.say(INTRO))} {body}"
        return body

    def gone_statements(self) -> list[str]:
        prior = self._prior
        if prior is None:
            return []
        statements = []
        for kind, how in prior.change:
            if how == RESOLVED and kind != "support_device":
                earlier = prior.prior_of(kind)
                if earlier is not None:
                    statements.append(self.fill(self.say(STATEMENT[RESOLVED]), self.noun_phrase(earlier)))
        for device, how in prior.device_change:
            if how == REMOVED:
                statements.append(self.fill(self.say(DEVICE_STATEMENT[REMOVED]), name=self.pick(DEVICE_NAMES[device])))
        return statements

    def describe(self, f: Finding) -> str:
        text = super().describe(f)
        how = self._prior.change_of(f.kind) if self._prior else None
        if how is None:
            return text
        if f.hedged or self.chance(0.5):
            return self.with_suffix(text, how)
        return self.fill(self.pick(STATEMENT[how]), self.noun_phrase(f))

    def with_suffix(self, text: str, how: str) -> str:
        """The statement with its change after the finding, before any advice ("...; CT is suggested.")."""
        head, semicolon, advice = text.rstrip(".").partition(";")
        return f"{head}, {self.fill(self.say(SUFFIX[how]), sentence=False)}{semicolon}{advice}."

    def device(self, f: Finding) -> str:
        text = super().device(f)
        how = dict(self._prior.device_change).get(str(f.device)) if self._prior else None
        if how is None:
            return text
        name = self.pick(DEVICE_NAMES[str(f.device)])
        if how == MOVED:
            return self.moved(str(f.device))
        return self.fill(self.say(DEVICE_STATEMENT[how]), name=name) + " " + text

    def moved(self, device: str) -> str:
        verb, noun = self.pick([("advanced", "advancement"), ("withdrawn", "withdrawal"), ("retracted", "retraction")])
        return self.say(MOVED_TEXT[device]).format(verb=verb, noun=noun, cm=int(self.rng.integers(3, 7)))

    # ------------------------------------------------------------------------------------------ wording
    def noun_phrase(self, f: Finding) -> str:
        """A short name of the finding with its size or severity ("moderate right pleural effusion")."""
        sev, size, side = self.pick(SEVERITY_WORDS[f.severity]), self.pick(SIZE_WORDS[f.severity]), self._side(f)
        if f.kind == "cardiomegaly":
            return self.pick([f"{sev} cardiomegaly", "cardiomegaly", f"{sev} enlargement of the cardiac silhouette"])
        if f.kind == "pleural_effusion":
            return f"{size} {side} pleural effusion{'s' if side == 'bilateral' else ''}"
        if f.kind == "pneumothorax":
            return self.pick([f"{size} {side} pneumothorax", f"{side} pneumothorax"])
        if f.kind == "consolidation":
            place = self._place(f)
            return self.pick([f"{place} consolidation", f"consolidation in the {place}",
                              f"airspace consolidation in the {place}"])
        if f.kind == "nodule":
            measure = self.grade(f)
            noun = "mass" if f.severity == "severe" else "nodule"
            return self.pick([f"{measure} {self._place(f)} {noun}", f"{measure} {noun} in the {self._place(f)}",
                              f"{side} lung {noun}"])
        if f.kind == "edema":
            return self.pick([f"{sev} pulmonary edema", "pulmonary edema", f"{sev} interstitial edema"])
        if f.kind == "atelectasis":
            return self.pick([f"{self._place(f)} atelectasis", f"atelectasis in the {self._place(f)}"])
        raise ValueError(f"no noun phrase for {f.kind}")

    # --------------------------------------------------------------------------------------- impression
    def impression(self, findings: tuple[Finding, ...]) -> str:
        if self._prior is None:
            return super().impression(findings)
        prior = self._prior
        pathologies = [f for f in findings if f.kind != "support_device"]
        ranked = sorted(pathologies, key=self._rank)
        items = [self.changed_item(f, prior.change_of(f.kind) or UNCHANGED) for f in ranked]
        resolved = [prior.prior_of(k) for k, how in prior.change if how == RESOLVED and k != "support_device"]
        items += [self.fill(self.say(STATEMENT[RESOLVED]), self.resolved_phrase(f)) for f in resolved if f is not None]
        items += [self.device_item(f) for f in findings if f.kind == "support_device"]
        items += [self.fill(self.say(DEVICE_STATEMENT[REMOVED]), name=self.pick(DEVICE_NAMES[d]))
                  for d, how in prior.device_change if how == REMOVED]
        if not pathologies:
            items.append(self.pick(["No acute cardiopulmonary abnormality.", "No acute cardiopulmonary process.",
                                    "No acute intrathoracic abnormality."]))
            if not any(how != UNCHANGED for _, how in prior.change) and self.chance(0.5):
                items.append(self.say(STABLE_NORMAL))
        if len(items) > 1 and not self.house and self.rng.random() < 0.5:
            return " ".join(f"{i}. {item}" for i, item in enumerate(items, 1))
        return " ".join(items)

    def _rank(self, f: Finding) -> float:
        return -(PRIORITY[f.kind] + SEVERITY_BOOST[f.severity])

    def impression_item(self, f: Finding) -> str:
        """In the house wording, the statement that carries the severity: the change is judged against it."""
        return self.impression_options(f)[0] if self.house else super().impression_item(f)

    def resolved_phrase(self, f: Finding) -> str:
        return self.graded_phrase(f)[0] if self.house else self.noun_phrase(f)

    def changed_item(self, f: Finding, how: str) -> str:
        if self.house and not f.hedged:
            return self.graded_item(f, how)
        if f.hedged or self.house:
            return self.with_suffix(self.impression_item(f), how)
        return self.fill(self.pick(STATEMENT[how]), self.noun_phrase(f))

    def graded_item(self, f: Finding, how: str) -> str:
        """The house impression item: the finding with its grade, the prior's grade when it had the finding,
        then the change ("Small right pleural effusion, previously large, decreased since 2024-03-02.")."""
        head, advice = self.graded_phrase(f)
        earlier = self._prior.prior_of(f.kind) if self._prior and how != NEW else None
        before = f", previously {self.grade(earlier)}" if earlier is not None else ""
        text = f"{head}{before}, {self.fill(SUFFIX[how][0], sentence=False)}{advice}."
        return text[0].upper() + text[1:]

    def grade(self, f: Finding) -> str:
        """One word (a size for a nodule) per severity of each kind, the same in every house report."""
        if f.kind == "nodule":
            size_mm = int(f.size_mm or 15)
            return f"{size_mm} mm" if size_mm < 30 else f"{size_mm / 10:.1f} cm"
        words = SIZE_WORDS if f.kind in ("pleural_effusion", "pneumothorax") else SEVERITY_WORDS
        return words[f.severity][0]

    def graded_phrase(self, f: Finding) -> tuple[str, str]:
        """(the finding named after its grade, any advice after a semicolon)."""
        grade, side = self.grade(f), self._side(f)
        if f.kind == "pleural_effusion":
            return f"{grade} {side} pleural effusion{'s' if side == 'bilateral' else ''}", ""
        if f.kind == "pneumothorax":
            return f"{grade} {side} pneumothorax", ""
        if f.kind == "nodule":
            noun = "lung mass" if f.severity == "severe" else "pulmonary nodule"
            return f"{grade} {side} {noun}", "; recommend CT for further evaluation"
        if f.kind in ("consolidation", "atelectasis"):
            return f"{grade} {self._place(f)} {f.kind}", ""
        noun = {"cardiomegaly": "cardiomegaly", "edema": "pulmonary edema"}[f.kind]
        return f"{grade} {noun}", ""

    def device_item(self, f: Finding) -> str:
        how = dict(self._prior.device_change).get(str(f.device)) if self._prior else None
        if how == MOVED:
            return self.moved(str(f.device))
        if how in (UNCHANGED, PLACED):
            return self.fill(self.say(DEVICE_STATEMENT[how]), name=self.pick(DEVICE_NAMES[str(f.device)]))
        return self.pick(DEVICE_IMPRESSION[str(f.device)])
