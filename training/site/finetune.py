"""`raddraft finetune`: fine-tune the current model on the site's signed reports, compare, decide.

Flow: what is fine-tuned (a bundle carrying its checkpoint, or a checkpoint folder) -> the recipe
(`training/configs/site-finetune.toml` + the site's dataset + the model's own preprocessing and prompts) ->
`run_training` (stage 2 only, resumable in `<out>/train`) -> the candidate bundle (`<out>/candidate`) ->
candidate and current drafted by the engine on the dataset's test split and scored side by side
(`compare.py`, `<out>/comparison.*`) -> the decision. Promotion (`promote`) installs the candidate in the
model registry next to the old versions and switches to it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from dicom_node.durable import write_text_atomically
from engine.bundle import BundleManifest, read_manifest
from engine.errors import EngineError
from training.site.compare import Decision, Rule, comparison_record, decide, model_metrics, write_comparison

DEFAULT_RECIPE = Path(__file__).resolve().parents[1] / "configs" / "site-finetune.toml"
MANIFEST_NAME = "manifest.jsonl"
REQUEST_NAME = "finetune.json"
ORIGINAL = "original"
SITE = "site"


class FinetuneError(Exception):
    """Fine-tuning cannot start or finish; the message says what to change."""


class Events(Protocol):
    """Where progress goes (a terminal, or JSON lines for the app)."""

    def stage(self, name: str) -> None: ...

    def progress(self, task: str, done: int, total: int, **extra: Any) -> None: ...

    def message(self, text: str) -> None: ...


@dataclass(frozen=True)
class FinetuneRequest:
    """source: a bundle with `checkpoint/`, or a checkpoint folder. data: a `raddraft dataset` folder.
    original: the original training data's manifest (None: the recipe's `original` source).
    original_share: share of each epoch's report samples drawn from the original data (0: none).
    current: the bundle to compare against (None: the source bundle, or the source checkpoint exported)."""

    source: Path
    data: Path
    out: Path
    recipe: Path = DEFAULT_RECIPE
    overrides: Mapping[str, Any] = field(default_factory=dict)
    original: Path | None = None
    original_share: float = 0.3
    current: Path | None = None
    rule: Rule = field(default_factory=Rule)
    force: bool = False
    version: str | None = None
    device: str | None = None
    progress_bars: bool = True

    def __post_init__(self) -> None:
        if not 0.0 <= self.original_share < 1.0:
            raise FinetuneError(f"--original-share must be in [0, 1), got {self.original_share}")
        if self.rule.tolerance < 0:
            raise FinetuneError(f"--tolerance must be 0 or more, got {self.rule.tolerance}")


@dataclass(frozen=True)
class Starting:
    """The model fine-tuned: its checkpoint, and its bundle when it came as one."""

    checkpoint: Path
    bundle: Path | None
    name: str
    version: str


@dataclass
class FinetuneOutcome:
    out: Path
    candidate: Path
    current: Path
    record: dict[str, Any]
    paths: dict[str, Path]
    seconds: dict[str, float]

    @property
    def decision(self) -> dict[str, Any]:
        return self.record["decision"]


# ----------------------------------------------------------------------------------------- inputs
def resolve_start(source: Path) -> Starting:
    source = Path(source)
    if (source / "model.json").is_file():
        try:
            manifest = read_manifest(source)
        except EngineError as error:
            raise FinetuneError(str(error)) from None
        if not manifest.checkpoint:
            raise FinetuneError(f"model bundle {source} carries no training checkpoint (no 'checkpoint' in "
                                "model.json); fine-tune from the checkpoint folder it was exported from "
                                "(the run's merged/ folder), or export it with --with-checkpoint")
        checkpoint = source / manifest.checkpoint
        if not (checkpoint / "config.json").is_file():
            raise FinetuneError(f"model bundle {source}: its checkpoint folder {checkpoint} has no config.json")
        return Starting(checkpoint, source, manifest.name, manifest.version)
    if (source / "config.json").is_file():
        return Starting(source, None, source.name, "0")
    raise FinetuneError(f"{source} is neither a model bundle (model.json) nor a checkpoint folder (config.json)")


def site_manifest(data: Path) -> Path:
    manifest = Path(data) / MANIFEST_NAME
    if not manifest.is_file():
        raise FinetuneError(f"{data} holds no dataset ({MANIFEST_NAME} is missing); build one with "
                            "`raddraft dataset --from-store STORE --out DIR`")
    return manifest


def split_counts(manifest: Path) -> dict[str, int]:
    from training.train.studies import StudyDataError, read_studies

    try:
        studies = read_studies(manifest, SITE)
    except StudyDataError as error:
        raise FinetuneError(str(error)) from None
    counts: dict[str, int] = {}
    for study in studies:
        counts[study.split] = counts.get(study.split, 0) + 1
    return counts


def original_weight(share: float, site_studies: int, original_studies: int) -> float:
    """The `original` source's weight so that about `share` of an epoch's studies come from it."""
    if share <= 0 or original_studies == 0:
        return 0.0
    return share * site_studies / ((1.0 - share) * original_studies)


def chosen_version(request: FinetuneRequest, start: Starting) -> str:
    """The candidate's version, kept across resumed runs of the same `out` folder."""
    saved = request.out / REQUEST_NAME
    identity = {"source": str(Path(request.source).resolve()), "data": str(Path(request.data).resolve())}
    if saved.is_file():
        previous = json.loads(saved.read_text(encoding="utf-8"))
        if {k: previous.get(k) for k in identity} != identity:
            raise FinetuneError(f"{request.out} holds a fine-tuning run of {previous.get('source')} on "
                                f"{previous.get('data')}; choose another --out")
        return previous["version"]
    version = request.version or f"{start.version}+site.{time.strftime('%Y%m%d%H%M%S', time.gmtime())}"
    write_text_atomically(saved, json.dumps({**identity, "version": version,
                                             "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
                                            indent=2) + "\n")
    return version


# ----------------------------------------------------------------------------------------- recipe
def build_recipe(request: FinetuneRequest, start: Starting, model: BundleManifest | None, version: str):
    """The training recipe of this run (a `TrainConfig`); raises `FinetuneError` naming a bad value."""
    import tomllib

    from training.train.config import TrainConfigError, apply_overrides, config_from_dict

    try:
        raw = tomllib.loads(Path(request.recipe).read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise FinetuneError(f"cannot read the fine-tuning recipe {request.recipe}: {error}") from None
    data = raw.setdefault("data", {})
    manifest = site_manifest(request.data)
    counts = split_counts(manifest)
    data["sources"] = [{"name": SITE, "manifest": str(manifest.resolve()), "weight": 1.0},
                       *original_sources(request, data, counts.get("train", 0))]
    data["test"] = {"name": "site-test", "manifest": str(manifest.resolve()), "split": "test"}
    data["data_dir"] = str(data_dir(request, data))
    data.setdefault("cache_dir", str(request.out.parent / "finetune-cache"))
    if model is not None:
        prep = model.preprocessing
        data.update(views=list(prep.views), combine=prep.combine, window=prep.window, mean=list(prep.mean),
                    std=list(prep.std))
        raw["prompts"] = {"findings": model.prompts.findings, "impression": model.prompts.impression,
                          "impression_from_findings": model.prompts.impression_from_findings}
        raw.setdefault("output", {})["max_new_tokens"] = model.generation.max_new_tokens
    raw["model"] = {"base": str(start.checkpoint.resolve())}
    output = raw.setdefault("output", {})
    output.update(run_dir=str(request.out / "train"), bundle_dir=str(request.out / "candidate"), name=start.name,
                  version=version, include_checkpoint=True,
                  description=card_notes(start, request, counts))
    if request.device:
        raw.setdefault("compute", {})["device"] = request.device
    try:
        apply_overrides(raw, request.overrides, request.recipe)
        return config_from_dict(raw, request.recipe)
    except TrainConfigError as error:
        raise FinetuneError(str(error)) from None


def original_sources(request: FinetuneRequest, data: dict[str, Any], site_train: int) -> list[dict[str, Any]]:
    """The recipe's (or --original's) original data, weighted to `original_share` of the epoch."""
    from training.train.studies import source_manifest

    recipe_sources = [s for s in data.get("sources", []) if s.get("name") == ORIGINAL]
    if request.original_share <= 0:
        return []
    if request.original is not None:
        source = {"name": ORIGINAL, "manifest": str(Path(request.original).resolve())}
    elif recipe_sources:
        source = dict(recipe_sources[0])
        if source.get("phantoms") is not None and released_checkpoint(Path(request_checkpoint(request))):
            raise FinetuneError(f"{request.source} is a released checkpoint: the recipe's phantom studies "
                                "would teach it the wrong pictures; give the generic share with --original "
                                "MANIFEST (earlier signed reports, or a public report set in the manifest format), "
                                "or --original-share 0")
    else:
        raise FinetuneError("--original-share is set but neither --original nor the recipe names the original "
                            "training data (a [[data.sources]] named 'original')")
    from training.train.config import TrainConfigError, data_source_from_dict
    from training.train.studies import StudyDataError

    try:
        typed = data_source_from_dict({**source, "weight": 1.0}, "data.sources.original")
        manifest = source_manifest(typed, data_dir(request, data))
    except (TrainConfigError, StudyDataError, OSError) as error:
        raise FinetuneError(f"the original training data cannot be used: {error}") from None
    original_train = split_counts(manifest).get("train", 0)
    source["weight"] = round(original_weight(request.original_share, site_train, original_train), 6)
    return [source]


def released_checkpoint(checkpoint: Path) -> bool:
    """A checkpoint brought from outside (its own image processor or chat template), not one of ours."""
    return any((checkpoint / name).is_file() for name in ("preprocessor_config.json", "chat_template.json",
                                                           "chat_template.jinja"))


def request_checkpoint(request: FinetuneRequest) -> Path:
    return resolve_start(request.source).checkpoint


def data_dir(request: FinetuneRequest, data: Mapping[str, Any]) -> Path:
    """Where generated data (the original phantoms) lives: shared by the runs beside `out`, made once."""
    return Path(data.get("data_dir") or request.out.parent / "finetune-data")


def card_notes(start: Starting, request: FinetuneRequest, counts: Mapping[str, int]) -> str:
    return (f"**Fine-tuned at this site** from {start.name} {start.version} on {counts.get('train', 0)} signed, "
            f"de-identified reports (dataset `{Path(request.data).name}`; validation {counts.get('validation', 0)}, "
            f"test {counts.get('test', 0)}), with {request.original_share:.0%} of each epoch drawn from the "
            f"original training data. The base model's card states what it was trained on and its limits; "
            f"they apply here too. Drafts are for a radiologist to review, edit and sign.")


# -------------------------------------------------------------------------------------------- run
def run_finetune(request: FinetuneRequest, events: Events) -> FinetuneOutcome:
    from training.train.pipeline import run_training

    started = time.perf_counter()
    seconds: dict[str, float] = {}
    start = resolve_start(request.source)
    model = read_manifest(start.bundle) if start.bundle else None
    request.out.mkdir(parents=True, exist_ok=True)
    version = chosen_version(request, start)
    config = build_recipe(request, start, model, version)
    seconds["prepare"] = round(time.perf_counter() - started, 1)

    events.stage("finetune")
    outcome = run_training(config, progress=request.progress_bars, report=events.message,
                           on_step=lambda step: events.progress("finetune", step["step"], step["total"],
                                                                epoch=step["epoch"], epochs=step["epochs"],
                                                                loss=step["loss"]))
    if not outcome.finished or outcome.bundle_dir is None:
        raise FinetuneError("fine-tuning stopped before the candidate bundle was written")
    seconds["train_export_evaluate"] = round(time.perf_counter() - started - seconds["prepare"], 1)

    current = current_bundle(request, start, events)
    events.stage("compare")
    compared = time.perf_counter()
    record = compare(config, outcome.run_dir, outcome.bundle_dir, current, request, events)
    seconds["compare"] = round(time.perf_counter() - compared, 1)
    seconds["total"] = round(time.perf_counter() - started, 1)
    record["seconds"] = seconds
    paths = write_comparison(request.out, record)
    return FinetuneOutcome(out=request.out, candidate=outcome.bundle_dir, current=current, record=record,
                           paths=paths, seconds=seconds)


def plan_finetune(request: FinetuneRequest, write: Callable[[str], None] = print) -> int:
    """`raddraft finetune --plan`: the memory plan of the run's recipe, without training (0: it fits)."""
    import dataclasses

    from training.train.plan import PlanError, report_plan

    start = resolve_start(request.source)
    model = read_manifest(start.bundle) if start.bundle else None
    # the mix weights do not change the memory, so the original data need not be read (or generated)
    config = build_recipe(dataclasses.replace(request, original_share=0.0), start, model, "plan")
    try:
        return report_plan(config, write)
    except PlanError as error:
        raise FinetuneError(str(error)) from None


def current_bundle(request: FinetuneRequest, start: Starting, events: Events) -> Path:
    """The bundle the candidate is compared with: --current, the source bundle, or the source exported."""
    if request.current is not None:
        return Path(request.current)
    if start.bundle is not None:
        return start.bundle
    from training.export import ExportError, export_bundle

    target = request.out / "current"
    if (target / "model.json").is_file():
        return target
    events.stage("export current")
    try:
        return export_bundle(start.checkpoint, target, name=start.name, version=start.version).bundle_dir
    except ExportError as error:
        raise FinetuneError(f"cannot export {start.checkpoint} to compare with it: {error}") from None


def compare(config, run_dir: Path, candidate: Path, current: Path, request: FinetuneRequest,
            events: Events) -> dict[str, Any]:
    """Both models drafted by the engine (fp32) on the same held-out studies, scored by the same labeler."""
    from training.train.evaluation import draft_with_engine, evaluate_drafts
    from training.train.pipeline import test_studies

    studies, where = test_studies(config)
    current_manifest, candidate_manifest = read_manifest(current), read_manifest(candidate)
    if not studies:
        empty = {"micro_f1": 0.0, "macro_f1": 0.0, "bleu4": 0.0, "rouge_l": 0.0, "per_finding_f1": {}, "support": {}}
        decision = Decision(promote=request.force, forced=request.force,
                            reasons=["the dataset has no test split to compare on"]
                            + (["promotion forced (--force) against the rule"] if request.force else []),
                            tolerance=request.rule.tolerance, min_test_studies=request.rule.min_test_studies)
        return comparison_record(identity(current, current_manifest), identity(candidate, candidate_manifest), 0,
                                 empty, empty, decision, test_set=where)
    results = {}
    for label, bundle in (("current", current), ("candidate", candidate)):
        drafts = saved_drafts(run_dir, studies) if label == "candidate" else None
        if drafts is None:
            drafts = draft_with_engine(bundle, studies, variant="fp32", threads=config.compute.threads,
                                       max_new_tokens=config.output.max_new_tokens,
                                       progress=Counter(events, f"evaluate {label}", len(studies)))
        write_text_atomically(request.out / f"drafts-{label}.jsonl", "".join(json.dumps(d) + "\n" for d in drafts))
        results[label] = model_metrics(evaluate_drafts(drafts, studies))
    decision = decide(results["current"], results["candidate"], studies=len(studies), rule=request.rule,
                      force=request.force)
    return comparison_record(identity(current, current_manifest), identity(candidate, candidate_manifest),
                             len(studies), results["current"], results["candidate"], decision,
                             test_set=where, variant="fp32", dataset=str(Path(request.data).resolve()))


class Counter:
    """A `progress(n)` callback that reports the running count as an event."""

    def __init__(self, events: Events, task: str, total: int) -> None:
        self.events, self.task, self.total, self.done = events, task, total, 0

    def __call__(self, count: int) -> None:
        self.done += count
        self.events.progress(self.task, self.done, self.total)


def saved_drafts(run_dir: Path, studies) -> list[dict] | None:
    """The candidate's fp32 drafts of the same studies, made by the training run's own evaluation."""
    path = run_dir / "evaluation" / "predictions-engine-fp32.jsonl"
    if not path.is_file():
        return None
    drafts = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return drafts if [d["study_uid"] for d in drafts] == [s.uid for s in studies] else None


def identity(path: Path, manifest: BundleManifest) -> dict[str, str]:
    return {"name": manifest.name, "version": manifest.version, "path": str(Path(path).resolve())}


# -------------------------------------------------------------------------------------- promotion
def promote(outcome_dir: Path, models_dir: Path, embedded: Path | None, *, force: bool = False,
            switch: bool = True, log: Callable[[str], None] = print):
    """Install `<outcome_dir>/candidate` in the registry with its comparison as the record, and use it.

    Refused when the decision says keep the current model, unless `force` (recorded as forced)."""
    from engine.registry import ModelRegistry

    record = json.loads((outcome_dir / "comparison.json").read_text(encoding="utf-8"))
    decision = dict(record["decision"])
    if not decision["promote"] and not force:
        raise FinetuneError("the comparison says keep the current model: " + "; ".join(decision["reasons"])
                            + " (promote anyway with --force)")
    if not decision["promote"]:
        decision.update(promote=True, forced=True, reasons=decision["reasons"] + ["promotion forced by the user"])
    registry = ModelRegistry(models_dir, embedded=embedded)
    installed = registry.install(outcome_dir / "candidate", {
        "decision": decision, "compared_with": record["current"], "test_studies": record["test_studies"],
        "metrics": record["metrics"], "comparison": str((outcome_dir / "comparison.json").resolve()),
        "dataset": record.get("dataset"), "promoted_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    log(f"installed {installed.name} {installed.version} in {installed.path}")
    if switch:
        registry.use(installed.version)
        log(f"now drafting with {installed.name} {installed.version}")
    return installed
