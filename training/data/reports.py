"""Reference reports written from the ground truth: FINDINGS and IMPRESSION in varied radiology phrasing.

Each statement has several templates; absent findings are stated as negations ("No pleural effusion or
pneumothorax."), mild findings are sometimes hedged (`Finding.hedged`), and the impression lists what
matters first (a large pneumothorax before a small effusion, devices and normal statements last).
"""

from __future__ import annotations

import numpy as np

from training.data.findings import Finding

ZONE_WORDS = {
    ("right", "upper"): ["right upper lobe", "right upper zone", "right apex", "right upper lung"],
    ("right", "middle"): ["right middle lobe", "right mid lung", "right mid zone", "right perihilar region"],
    ("right", "lower"): ["right lower lobe", "right base", "right lung base", "right lower zone"],
    ("left", "upper"): ["left upper lobe", "left upper zone", "left apex", "left upper lung"],
    ("left", "middle"): ["lingula", "left mid lung", "left mid zone", "left perihilar region"],
    ("left", "lower"): ["left lower lobe", "left base", "left lung base", "left retrocardiac region"],
}
SEVERITY_WORDS = {"mild": ["mild", "minimal", "slight"], "moderate": ["moderate"],
                  "severe": ["marked", "severe", "extensive"]}
SIZE_WORDS = {"mild": ["small", "trace"], "moderate": ["moderate", "moderate-sized"], "severe": ["large"]}
PRIORITY = {"pneumothorax": 9.0, "consolidation": 7.0, "nodule": 6.5, "edema": 6.0, "pleural_effusion": 5.0,
            "cardiomegaly": 4.0, "atelectasis": 3.0, "support_device": 1.0}
SEVERITY_BOOST = {"mild": 0.0, "moderate": 1.0, "severe": 2.5}
DEVICE_TEXT = {
    "endotracheal_tube": [
        "Endotracheal tube terminates approximately {cm} cm above the carina.",
        "An endotracheal tube is in place with its tip {cm} cm above the carina.",
        "The ET tube tip projects {cm} cm above the carina.",
    ],
    "central_venous_catheter": [
        "Central venous catheter with tip in the lower superior vena cava.",
        "A central line terminates at the cavoatrial junction.",
        "Central venous catheter tip projects over the distal SVC.",
    ],
    "nasogastric_tube": [
        "Enteric tube courses below the diaphragm with its tip in the stomach.",
        "A nasogastric tube is seen with the tip in the stomach.",
        "NG tube tip projects over the gastric fundus.",
    ],
    "pacemaker": [
        "Left chest wall pacemaker with leads in the right atrium and right ventricle.",
        "A dual-lead cardiac pacemaker is in place.",
        "Left-sided pacemaker generator with leads terminating in the right heart.",
    ],
}
DEVICE_IMPRESSION = {
    "endotracheal_tube": ["Endotracheal tube in satisfactory position.", "ET tube in appropriate position."],
    "central_venous_catheter": ["Central venous catheter in satisfactory position.",
                                "Central line tip in the SVC."],
    "nasogastric_tube": ["Nasogastric tube in the stomach.", "Enteric tube in satisfactory position."],
    "pacemaker": ["Pacemaker leads in expected position.", "Cardiac pacemaker in place."],
}

# the short negatives of `ReportWriter.brief_findings`, per finding kind
BRIEF_NEGATIVES = {
    "pneumothorax": ["No pneumothorax."],
    "pleural_effusion": ["No effusion.", "No pleural effusion."],
    "consolidation": ["No consolidation.", "No focal consolidation."],
    "nodule": ["No nodule.", "No nodule or mass."],
    "edema": ["No edema.", "No pulmonary edema."],
    "cardiomegaly": ["Normal heart size.", "Heart not enlarged."],
    "atelectasis": ["No atelectasis."],
    "support_device": ["No lines.", "No lines or tubes.", "No devices."],
}


class ReportWriter:
    """Writes one report; `rng` picks among the templates so phrasing varies between studies."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng

    def pick(self, options: list[str]) -> str:
        return options[int(self.rng.integers(len(options)))]

    def write(self, findings: tuple[Finding, ...]) -> dict[str, str]:
        return {"findings": self.findings_section(findings), "impression": self.impression(findings)}

    # ------------------------------------------------------------------------------------------ findings
    def findings_section(self, findings: tuple[Finding, ...]) -> str:
        kinds = {f.kind for f in findings}
        sentences: list[str] = []
        sentences += [self.device(f) for f in findings if f.kind == "support_device"]
        lung = [f for f in findings if f.kind in ("consolidation", "nodule", "edema", "atelectasis")]
        sentences += [self.describe(f) for f in lung]
        sentences += self.lung_negatives(kinds, lung_findings=bool(lung))
        pleural = [f for f in findings if f.kind in ("pleural_effusion", "pneumothorax")]
        sentences += [self.describe(f) for f in pleural]
        sentences += self.pleural_negatives(kinds)
        heart = [f for f in findings if f.kind == "cardiomegaly"]
        sentences += [self.describe(f) for f in heart] or [self.pick([
            "Heart size is normal.", "The cardiomediastinal silhouette is within normal limits.",
            "Normal heart size.", "The heart is not enlarged.", "Cardiac silhouette is normal in size.",
            "The cardiomediastinal silhouette is unremarkable."])]
        if self.rng.random() < 0.5:
            sentences.append(self.pick(["No acute osseous abnormality.", "The osseous structures are intact.",
                                        "Visualized bones are unremarkable.", "No displaced rib fracture."]))
        return " ".join(sentences)

    def brief_findings(self, findings: tuple[Finding, ...]) -> str:
        """Findings as a radiologist types them over a draft: what is there, and a few short negatives
        ("Large right pneumothorax. No nodule. No lines.")."""
        kinds = {f.kind for f in findings}
        sentences = [self.describe(f) for f in findings if f.kind != "support_device"]
        sentences += [self.device(f) for f in findings if f.kind == "support_device"]
        absent = [kind for kind in BRIEF_NEGATIVES if kind not in kinds]
        chosen = [absent[int(i)] for i in self.rng.permutation(len(absent))[:int(self.rng.integers(0, 4))]]
        sentences += [self.pick(BRIEF_NEGATIVES[kind]) for kind in chosen]
        if not sentences:
            sentences = [self.pick(["Lungs are clear.", "Clear lungs.", "No acute findings."])]
        return " ".join(sentences)

    def lung_negatives(self, kinds: set[str], *, lung_findings: bool) -> list[str]:
        absent = [k for k in ("consolidation", "edema", "nodule") if k not in kinds]
        if not lung_findings and "atelectasis" not in kinds and self.rng.random() < 0.55:
            return [self.pick(["The lungs are clear.", "Lungs are clear.", "The lungs are well expanded and clear.",
                               "Clear lungs."])]
        phrases = {"consolidation": ["focal consolidation", "focal airspace consolidation", "consolidation"],
                   "edema": ["pulmonary edema", "edema"], "nodule": ["suspicious pulmonary nodule",
                                                                     "pulmonary nodule or mass"]}
        chosen = [self.pick(phrases[k]) for k in absent if self.rng.random() < 0.8]
        if not chosen:
            return []
        return [self.pick(["No {}.", "There is no {}.", "No evidence of {}."]).format(_join_or(chosen))]

    def pleural_negatives(self, kinds: set[str]) -> list[str]:
        absent = [k for k in ("pleural_effusion", "pneumothorax") if k not in kinds]
        if not absent:
            return []
        words = {"pleural_effusion": self.pick(["pleural effusion", "effusion"]), "pneumothorax": "pneumothorax"}
        if len(absent) == 2:
            return [self.pick(["No pleural effusion or pneumothorax.", "No pneumothorax or pleural effusion.",
                               "There is no pleural effusion or pneumothorax.",
                               "No effusion or pneumothorax is seen.",
                               "The costophrenic angles are sharp. No pneumothorax."])]
        return [self.pick(["No {}.", "There is no {}.", "No {} is seen."]).format(words[absent[0]])]

    def device(self, f: Finding) -> str:
        return self.pick(DEVICE_TEXT[f.device or "endotracheal_tube"]).format(cm=int(self.rng.integers(3, 7)))

    def describe(self, f: Finding) -> str:
        text = getattr(self, f"_{f.kind}")(f)
        return text[0].upper() + text[1:]

    def _place(self, f: Finding) -> str:
        if f.side == "bilateral":
            return self.pick([f"both {f.zone} zones", f"bilateral {f.zone} lobes", "both lung bases"
                              if f.zone == "lower" else f"bilateral {f.zone} zones"])
        return self.pick(ZONE_WORDS[(f.side or "right", f.zone or "lower")])

    def _side(self, f: Finding) -> str:
        return "bilateral" if f.side == "bilateral" else f.side or ""

    def _cardiomegaly(self, f: Finding) -> str:
        if f.hedged:
            return self.pick(["Borderline enlargement of the cardiac silhouette.",
                              "The heart size is at the upper limits of normal, possibly mildly enlarged.",
                              "Possible mild cardiomegaly."])
        word = self.pick(SEVERITY_WORDS[f.severity])
        adverb = {"mild": "mildly", "minimal": "minimally", "slight": "slightly", "moderate": "moderately",
                  "marked": "markedly", "severe": "severely", "extensive": "markedly"}[word]
        return self.pick([f"The heart is {adverb} enlarged.", f"The cardiac silhouette is {adverb} enlarged.",
                          f"{word.capitalize()} cardiomegaly.", f"There is {word} cardiomegaly.",
                          f"{word.capitalize()} enlargement of the cardiac silhouette."])

    def _pleural_effusion(self, f: Finding) -> str:
        size = self.pick(SIZE_WORDS[f.severity])
        if f.hedged:
            return self.pick([f"Blunting of the {f.side} costophrenic angle may represent a small effusion.",
                              f"Possible trace {self._side(f)} pleural effusion.",
                              f"Minimal {self._side(f)} costophrenic angle blunting, cannot exclude a small effusion."])
        if f.side == "bilateral":
            return self.pick([f"{size.capitalize()} bilateral pleural effusions.",
                              f"There are {size} bilateral pleural effusions.",
                              f"Bilateral {size} pleural effusions with blunting of the costophrenic angles."])
        return self.pick([f"{size.capitalize()} {f.side} pleural effusion.",
                          f"There is a {size} {f.side} pleural effusion.",
                          f"{size.capitalize()} {f.side} pleural effusion with blunting of the costophrenic angle.",
                          f"A {size} {f.side}-sided effusion is present."])

    def _pneumothorax(self, f: Finding) -> str:
        size = self.pick(SIZE_WORDS[f.severity])
        if f.hedged:
            return self.pick([f"Questionable small {f.side} apical pneumothorax.",
                              f"A tiny {f.side} apical pneumothorax cannot be excluded."])
        return self.pick([f"{size.capitalize()} {f.side} pneumothorax.",
                          f"There is a {size} {f.side} pneumothorax.",
                          f"{size.capitalize()} {f.side} pneumothorax with a visible pleural line.",
                          f"A {size} {f.side}-sided pneumothorax is present."])

    def _consolidation(self, f: Finding) -> str:
        place = self._place(f)
        if f.hedged:
            return self.pick([f"Possible early consolidation in the {place}.",
                              f"Questionable subtle airspace disease in the {place}."])
        kind = {"mild": ["patchy airspace opacity", "patchy opacity", "mild airspace disease"],
                "moderate": ["airspace consolidation", "consolidation", "focal consolidation"],
                "severe": ["dense consolidation", "extensive airspace consolidation"]}[f.severity]
        return self.pick([f"{self.pick(kind)} in the {place}.", f"There is {self.pick(kind)} in the {place}.",
                          f"{self.pick(kind)} is present in the {place}."])

    def _nodule(self, f: Finding) -> str:
        place = self._place(f)
        size_mm = int(f.size_mm or 15)
        size = f"{size_mm} mm" if size_mm < 30 else f"{size_mm / 10:.1f} cm"
        if f.hedged:
            return self.pick([f"Possible {size} nodule in the {place}; CT is suggested.",
                              f"A questionable nodule in the {place} may represent overlapping vessels."])
        if f.severity == "severe":
            return self.pick([f"There is a {size} mass in the {place}.", f"{size} lobulated mass in the {place}.",
                              f"A {size} mass projects over the {place}."])
        return self.pick([f"There is a {size} nodule in the {place}.", f"{size} pulmonary nodule in the {place}.",
                          f"A {size} rounded nodule projects over the {place}."])

    def _edema(self, f: Finding) -> str:
        word = self.pick(SEVERITY_WORDS[f.severity])
        if f.hedged:
            return self.pick(["Mild vascular indistinctness, possibly early interstitial edema.",
                              "Possible mild interstitial edema."])
        return self.pick([f"{word.capitalize()} pulmonary edema.",
                          f"Bilateral perihilar haziness consistent with {word} pulmonary edema.",
                          f"There is {word} interstitial edema with perihilar predominance.",
                          f"{word.capitalize()} pulmonary edema with indistinct perihilar vessels."])

    def _atelectasis(self, f: Finding) -> str:
        place = self._place(f)
        if f.hedged:
            return self.pick([f"Possible subsegmental atelectasis in the {place}.",
                              f"Minimal streaky density in the {place}, may represent atelectasis."])
        if f.severity == "mild":
            return self.pick([f"Plate-like atelectasis in the {place}.", f"Subsegmental atelectasis in the {place}.",
                              f"Linear atelectasis at the {place}."])
        if f.severity == "moderate":
            return self.pick([f"Segmental atelectasis in the {place}.", f"Atelectasis in the {place}.",
                              f"There is atelectasis in the {place} with mild volume loss."])
        return self.pick([f"Lobar collapse of the {place}.", f"Complete atelectasis of the {place}.",
                          f"Dense atelectasis of the {place} with volume loss."])

    # ---------------------------------------------------------------------------------------- impression
    def impression(self, findings: tuple[Finding, ...]) -> str:
        pathologies = [f for f in findings if f.kind != "support_device"]
        devices = [f for f in findings if f.kind == "support_device"]
        ranked = sorted(pathologies, key=lambda f: -(PRIORITY[f.kind] + SEVERITY_BOOST[f.severity]))
        items = [self.impression_item(f) for f in ranked]
        items += [self.pick(DEVICE_IMPRESSION[d.device or "endotracheal_tube"]) for d in devices]
        if not pathologies:
            items.append(self.pick(["No acute cardiopulmonary abnormality.", "No acute cardiopulmonary process.",
                                    "Normal chest radiograph.", "No acute intrathoracic abnormality."]))
        if len(items) > 1 and self.rng.random() < 0.5:
            return " ".join(f"{i}. {item}" for i, item in enumerate(items, 1))
        return " ".join(items)

    def impression_item(self, f: Finding) -> str:
        options = self.impression_options(f)
        return options[0] if f.hedged else self.pick(options)  # (a hedge has one wording and draws nothing)

    def impression_options(self, f: Finding) -> list[str]:
        """The ways of stating `f` in an impression; the first says its severity where the kind has one."""
        side = self._side(f)
        if f.hedged:
            hedge = {"cardiomegaly": "Possible mild cardiomegaly.",
                     "pleural_effusion": f"Possible small {side} pleural effusion.",
                     "pneumothorax": f"Possible small {side} pneumothorax; consider repeat imaging.",
                     "consolidation": "Possible early consolidation; clinical correlation recommended.",
                     "nodule": "Possible pulmonary nodule; CT chest suggested.",
                     "edema": "Possible mild interstitial edema.",
                     "atelectasis": "Possible subsegmental atelectasis."}
            return [hedge[f.kind]]
        sev = self.pick(SEVERITY_WORDS[f.severity])
        size = self.pick(SIZE_WORDS[f.severity])
        options = {
            "cardiomegaly": [f"{sev.capitalize()} cardiomegaly.", "Cardiomegaly."],
            "pleural_effusion": [f"{size.capitalize()} {side} pleural effusion{'s' if side == 'bilateral' else ''}."],
            "pneumothorax": [f"{size.capitalize()} {side} pneumothorax.", f"{side.capitalize()} pneumothorax."],
            "consolidation": [f"{self._place(f).capitalize()} consolidation, concerning for pneumonia.",
                              (f"{self._place(f).capitalize()} airspace disease, likely pneumonia in the "
                               "appropriate clinical setting."), "Consolidation, compatible with pneumonia."],
            "nodule": ([f"{side.capitalize()} lung mass; CT chest recommended.",
                        "Pulmonary mass, further evaluation with CT is recommended."] if f.severity == "severe" else
                       [f"{side.capitalize()} pulmonary nodule; recommend CT for further evaluation.",
                        "Pulmonary nodule, CT chest suggested."]),
            "edema": [f"{sev.capitalize()} pulmonary edema.", "Pulmonary edema."],
            "atelectasis": [f"{self._place(f).capitalize()} atelectasis.", "Atelectasis."],
        }
        return options[f.kind]


def _join_or(words: list[str]) -> str:
    if len(words) == 1:
        return words[0]
    return ", ".join(words[:-1]) + (", or " if len(words) > 2 else " or ") + words[-1]
