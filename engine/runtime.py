"""A loaded model bundle that drafts studies: `load_model(bundle_dir, settings).draft(paths)`."""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
from pydicom import Dataset
from tokenizers import Tokenizer

from engine import preprocess
from engine.batched import BatchRequest, generate_batch
from engine.bundle import SECTIONS, BundleManifest, validate_bundle
from engine.confidence import SectionTokens, finding_confidence
from engine.domain import UNKNOWN, DomainSignature, DomainState, read_signature
from engine.errors import BundleError, GenerationError
from engine.generation import (
    DecoderState,
    GenerationOptions,
    GenerationResult,
    TextCallback,
    generate,
    prefill,
    shared_prefix_length,
)
from engine.graphs import ModelGraphs, SessionOptions
from engine.indication import study_indication
from engine.prompts import (
    IMPRESSION_FROM_FINDINGS,
    MAX_INDICATION_TOKENS,
    MAX_PRIOR_REPORT_TOKENS,
    PROMPT_KINDS,
    PriorInput,
    cut_to_tokens,
    impression_kind,
    layout_prompt_text,
    prior_block,
    prompt_ids,
)
from engine.providers import ProviderChoice, choose_providers
from engine.settings import EngineSettings

log = logging.getLogger(__name__)

SectionCallback = Callable[[str, str], None]  # (section, text piece)


@dataclass(frozen=True)
class StudyInput:
    """What the model sees of a study: pixel values and the instances they came from."""

    pixel_values: np.ndarray
    sop_instance_uids: tuple[str, ...]
    views: tuple[str, ...]
    indication: str | None = None  # from the study's DICOM attributes (see engine.indication)
    skipped: tuple[tuple[str, str], ...] = ()  # (SOP Instance UID, why) of images nothing here decodes


@dataclass(frozen=True)
class PriorReady:
    """A prior as the prompts take it: the `{prior}` slot's text, the prior frontal image's pixel values
    (report+image bundles), and what was used (`used`: None when the draft has no prior; `note` says why)."""

    block: str = ""
    pixel_values: np.ndarray | None = field(default=None, repr=False, compare=False)
    used: dict[str, str] | None = None
    note: str = "none"

    @property
    def images(self) -> int:
        return 0 if self.pixel_values is None else int(self.pixel_values.shape[0])


@dataclass(frozen=True)
class Draft:
    findings: str
    impression: str
    model: str
    provider: str
    variant: str
    images: tuple[str, ...]
    prompts: dict[str, str]
    timings: dict[str, object] = field(default_factory=dict)
    # engine.domain: {in_domain: True / False / None (the bundle has no signature), score, threshold}
    domain: dict[str, object] = field(default_factory=UNKNOWN.to_dict)
    confidence: dict[str, float] = field(default_factory=dict)  # finding key -> probability (engine.confidence)
    skipped: tuple[tuple[str, str], ...] = ()  # images passed over: no installed decoder reads them
    prior: dict[str, str] | None = None  # the prior study the draft was compared with: study_uid, date

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    @property
    def out_of_domain(self) -> bool:
        return self.domain.get("in_domain") is False


class DraftModel:
    def __init__(self, bundle_dir: Path, manifest: BundleManifest, variant: str, graphs: ModelGraphs,
                 tokenizer: Tokenizer, choice: ProviderChoice, max_new_tokens: int) -> None:
        self.bundle_dir = bundle_dir
        self.manifest = manifest
        self.variant = variant
        self.graphs = graphs
        self.tokenizer = tokenizer
        self.provider_choice = choice
        self._max_new_tokens = max_new_tokens or manifest.generation.max_new_tokens
        self.domain_signature: DomainSignature | None = read_signature(bundle_dir, manifest.domain.get("signature"))
        self.load_seconds = 0.0  # set by load_model
        self.resident_bytes = 0  # process resident memory right after loading

    @property
    def model_id(self) -> str:
        return self.manifest.model_id

    @property
    def provider(self) -> str:
        return self.graphs.provider

    def default_options(self, **changes: object) -> GenerationOptions:
        defaults = self.manifest.generation
        values: dict[str, object] = {
            "max_new_tokens": self._max_new_tokens, "temperature": defaults.temperature,
            "top_p": defaults.top_p, "repetition_penalty": defaults.repetition_penalty}
        values.update(changes)
        return GenerationOptions(**values)  # type: ignore[arg-type]

    def prepare(self, study: Sequence[Path] | Sequence[Dataset]) -> StudyInput:
        datasets = list(study) if study and isinstance(study[0], Dataset) else preprocess.load_study(study)
        prepared = preprocess.prepare_study(datasets, self.manifest.preprocessing)
        return StudyInput(prepared.pixel_values, tuple(prepared.sop_instance_uids),
                          tuple(view or "unknown" for view in prepared.views), study_indication(datasets),
                          prepared.skipped)

    def image_features(self, study: StudyInput, prior: PriorReady | None = None) -> np.ndarray:
        """Features of the study's images, then of the prior's frontal image when the prompt takes it."""
        if prior is None or prior.pixel_values is None:
            return self.graphs.image_features(study.pixel_values)
        pixels = np.concatenate([study.pixel_values, prior.pixel_values.astype(study.pixel_values.dtype)])
        return self.graphs.image_features(pixels)

    @property
    def takes_prior(self) -> str:
        """What the bundle's prompts take of a prior study: "none", "report" or "report+image"."""
        return self.manifest.prior

    def prepare_prior(self, prior: PriorInput | None) -> PriorReady:
        """The prior as this bundle's prompts take it. A bundle that takes priors is told there is none
        when `prior` is None or, for report+image, when the prior has no image that can be read."""
        mode, words = self.takes_prior, self.manifest.prior_prompts
        if mode == "none":
            return PriorReady(note="not taken by this model" if prior is not None else "none")
        if prior is None:
            return PriorReady(block=prior_block(words, mode, None))
        pixels = None
        if mode == "report+image":
            pixels = self._prior_pixels(prior)
            if pixels is None:
                return PriorReady(block=prior_block(words, mode, None), note="none (its image cannot be read)")
        report = cut_to_tokens(self.tokenizer, prior.report, MAX_PRIOR_REPORT_TOKENS)
        return PriorReady(block=prior_block(words, mode, prior, report), pixel_values=pixels,
                          used=prior.identity(), note="given")

    def _prior_pixels(self, prior: PriorInput) -> np.ndarray | None:
        if not prior.image_paths:
            return None
        try:
            datasets = preprocess.load_study(list(prior.image_paths))
            return preprocess.prepare_prior_frontal(datasets, self.manifest.preprocessing).pixel_values[:1]
        except preprocess.PreprocessError as error:
            log.warning("drafting without the prior %s: %s", prior.study_uid, error)
            return None

    @property
    def takes_indication(self) -> bool:
        return self.manifest.prompting.takes_indication

    def limit_indication(self, text: str | None) -> str | None:
        """At most MAX_INDICATION_TOKENS tokens of `text` (whitespace collapsed), None when empty."""
        text = " ".join((text or "").split())
        if not text:
            return None
        ids = self.tokenizer.encode(text, add_special_tokens=False).ids
        if len(ids) <= MAX_INDICATION_TOKENS:
            return text
        return self.tokenizer.decode(ids[:MAX_INDICATION_TOKENS], skip_special_tokens=True).strip() or None

    def prompt_text(self, kind: str, views: Sequence[str] | None = None, findings: str | None = None,
                    indication: str | None = None, prior: str | None = None) -> str:
        """The rendered prompt for `kind` and `views` (default: the bundle's views). prior: the `{prior}`
        slot's text (default: what the bundle says without a prior)."""
        views = tuple(views or self.manifest.preprocessing.views)
        if not self.manifest.prior_in(kind):
            prior = ""
        elif prior is None:
            prior = self.prepare_prior(None).block
        return layout_prompt_text(self.manifest.prompting, self.manifest.prompts, kind, views, findings, indication,
                                  prior)

    def prompt_ids(self, kind: str, num_images: int, findings: str | None = None, *,
                   views: Sequence[str] | None = None, indication: str | None = None, prior: str | None = None,
                   prior_images: int = 0) -> list[int]:
        """num_images: the study's images and the prior's frontal image (`prior_images`: 1 when given), which
        a prompt that takes no prior leaves out."""
        arch = self.manifest.architecture
        own = num_images - prior_images
        if not self.manifest.prior_in(kind):
            prior_images = 0
        views = tuple(views or self.manifest.preprocessing.views[:own])
        text = self.prompt_text(kind, views, findings, indication, prior)
        return prompt_ids(self.tokenizer, text, arch.image_token_id, arch.image_tokens, own, prior_images)

    def generate(self, kind: str, features: np.ndarray, options: GenerationOptions | None = None,
                 findings: str | None = None, on_text: TextCallback | None = None, *,
                 views: Sequence[str] | None = None, indication: str | None = None, prior: str | None = None,
                 prior_images: int = 0, reuse: tuple[DecoderState, ...] = ()) -> GenerationResult:
        """features: the study's image features, then the prior's (`prior_images` of them) when given."""
        ids = self.prompt_ids(kind, features.shape[0], findings, views=views, indication=indication,
                              prior=prior, prior_images=prior_images)
        return generate(self.graphs, self.tokenizer, ids, self.section_features(kind, features, prior_images),
                        options or self.default_options(), on_text, reuse=reuse)

    def section_features(self, kind: str, features: np.ndarray, prior_images: int) -> np.ndarray:
        """The features the prompt of `kind` takes: the study's and the prior's, or (a prompt that takes no
        prior) a view of the study's alone, which still shares the cache of their common prefix."""
        if prior_images and not self.manifest.prior_in(kind):
            return features[:features.shape[0] - prior_images]
        return features

    @property
    def impression_from_findings(self) -> bool:
        """Whether the bundle drafts the impression from the drafted findings unless told otherwise."""
        return self.manifest.impression_from == "findings"

    def draft(self, study: Sequence[Path] | Sequence[Dataset], *, options: GenerationOptions | None = None,
              impression_from_findings: bool | None = None, on_piece: SectionCallback | None = None,
              indication: str | None = None, prior: PriorInput | None = None) -> Draft:
        """Findings and Impression of one study (the DICOM files or folder of one study, or datasets).

        impression_from_findings: draft the impression from the drafted findings (True) or from the image
        (False); None: as the bundle says (`impression_from`). Empty findings give an impression from the image.

        indication: the reason for the exam (typed by the radiologist); None takes the study's own
        (DICOM request attributes). Used only when the bundle's prompts take one.
        prior: the patient's previous study (the most recent), for bundles that take priors; with None a
        bundle that takes priors is told there is none."""
        started = time.perf_counter()
        study_input = self.prepare(study)
        ready = self.prepare_prior(prior)
        prepared = time.perf_counter()
        features = self.image_features(study_input, ready)
        encoded = time.perf_counter()
        domain = self.domain_state(features[:features.shape[0] - ready.images])
        layout = self.prompt_layout(study_input, indication, ready)
        used_indication = layout["indication"]
        options = options or self.default_options()
        shared, shared_s = self._shared_prefill(features, options, **layout)
        findings = self.generate("findings", features, options, on_text=_section(on_piece, "findings"),
                                 reuse=shared, **layout)
        if impression_from_findings is None:
            impression_from_findings = self.impression_from_findings
        kind = impression_kind(findings.text) if impression_from_findings else "impression"
        continued = findings_cache_for(kind, findings)
        findings = replace(findings, state=None)  # (a 7 B model's cache is ~0.7 GB: let go before the impression)
        impression = self.generate(kind, features, options, findings=findings.text,
                                   on_text=_section(on_piece, "impression"), reuse=(*shared, *continued), **layout)
        shared_timing = {"shared_prefix_tokens": len(shared[0].token_ids) if shared else 0,
                         "shared_prefill_s": round(shared_s, 4)}
        done = time.perf_counter()
        timings = {"preprocess_s": round(prepared - started, 4), "vision_s": round(encoded - prepared, 4),
                   **shared_timing, "findings": findings.timings(), "impression": impression.timings(),
                   "total_s": round(done - started, 4)}
        return self._assemble(study_input, findings, impression, kind, used_indication, domain, timings,
                              prior=ready, asked_prior=prior is not None)

    def draft_section(self, study: Sequence[Path] | Sequence[Dataset], section: str, *, findings: str | None = None,
                      prior: PriorInput | None = None, indication: str | None = None,
                      on_text: TextCallback | None = None, options: GenerationOptions | None = None
                      ) -> GenerationResult:
        """One section on demand, prompted as `draft` prompts it (the study's views, indication and prior):
        "findings", or "impression", from `findings` when they are given (else from the image)."""
        if section not in SECTIONS:
            raise GenerationError(f"unknown section {section!r}; expected one of {', '.join(SECTIONS)}")
        study_input = self.prepare(study)
        ready = self.prepare_prior(prior)
        features = self.image_features(study_input, ready)
        kind = impression_kind(findings) if section == "impression" else section
        return self.generate(kind, features, options, findings=findings if kind == IMPRESSION_FROM_FINDINGS else None,
                             on_text=on_text, **self.prompt_layout(study_input, indication, ready))

    def draft_batch(self, studies: Sequence[StudyInput], *, options: GenerationOptions | None = None,
                    priors: Sequence[PriorInput | None] | None = None) -> list[Draft]:
        """Findings and Impression of several prepared studies (`prepare`), decoded together: each study's
        sections are rows of one batch (engine.batched). Each draft has the text `draft` gives that study
        alone (the study's own indication, its prior, the impression from where the bundle says). A bundle
        that drafts the impression from the findings decodes in two rounds: every study's findings, then
        every study's impression from them.

        priors: per study, its previous study (as `draft` takes it) or None; default none for all."""
        if not studies:
            return []
        priors = list(priors) if priors is not None else [None] * len(studies)
        if len(priors) != len(studies):
            raise GenerationError(f"{len(priors)} priors for {len(studies)} studies")
        options = options or self.default_options()
        started = time.perf_counter()
        readies = [self.prepare_prior(prior) for prior in priors]
        exact = self.rows_independent
        features = self.batch_image_features(studies, readies) if exact else \
            [self.image_features(s, ready) for s, ready in zip(studies, readies)]
        encoded = time.perf_counter()
        layouts = [self.prompt_layout(study, None, ready) for study, ready in zip(studies, readies)]
        prefills = [self._shared_prefill(f, options, **layout) for f, layout in zip(features, layouts)]
        if self.impression_from_findings:
            findings = self._batch_rows(["findings"] * len(studies), features, layouts, prefills, options)
            kinds = [impression_kind(result.text) for result in findings]
            # rows run one at a time (int8) keep their findings' cache; rows run together keep none
            continued = [findings_cache_for(kind, result) for result, kind in zip(findings, kinds)]
            findings = [replace(result, state=None) for result in findings]
            impressions = self._batch_rows(kinds, features, layouts, prefills, options,
                                           [result.text for result in findings], continued)
        else:  # one round: each study's findings and impression rows side by side
            kinds = ["impression"] * len(studies)
            twice = [i for i in range(len(studies)) for _ in range(2)]
            rows = self._batch_rows(["findings", "impression"] * len(studies), [features[i] for i in twice],
                                    [layouts[i] for i in twice], [prefills[i] for i in twice], options)
            findings, impressions = rows[0::2], rows[1::2]
        total = time.perf_counter() - started
        drafts = []
        for i, study in enumerate(studies):
            (shared, shared_s), ready = prefills[i], readies[i]
            timings = {"vision_s": round(encoded - started, 4),
                       "shared_prefix_tokens": len(shared[0].token_ids) if shared else 0,
                       "shared_prefill_s": round(shared_s, 4), "findings": findings[i].timings(),
                       "impression": impressions[i].timings(), "total_s": round(total, 4), "batch": len(studies)}
            own = features[i][:features[i].shape[0] - ready.images]
            drafts.append(self._assemble(study, findings[i], impressions[i], kinds[i], layouts[i]["indication"],
                                         self.domain_state(own), timings, prior=ready,
                                         asked_prior=priors[i] is not None))
        return drafts

    def _batch_rows(self, kinds: Sequence[str], features: Sequence[np.ndarray], layouts: Sequence[dict],
                    prefills: Sequence[tuple[tuple[DecoderState, ...], float]], options: GenerationOptions,
                    findings: Sequence[str | None] | None = None,
                    continued: Sequence[tuple[DecoderState, ...]] | None = None) -> list[GenerationResult]:
        """One batch of rows, row i the `kinds[i]` prompt over `features[i]` (prompted by `layouts[i]`, from
        `findings[i]` for an impression from findings), reusing its study's shared prefill and `continued[i]`
        (the cache of the findings it continues)."""
        findings = findings or [None] * len(kinds)
        continued = continued or [()] * len(kinds)
        requests = []
        for kind, study_features, layout, (shared, _), text, more in zip(kinds, features, layouts, prefills,
                                                                          findings, continued):
            ids = self.prompt_ids(kind, study_features.shape[0], text if kind == IMPRESSION_FROM_FINDINGS else None,
                                  **layout)
            section_features = self.section_features(kind, study_features, layout["prior_images"])
            requests.append(BatchRequest(tuple(ids), section_features, (*shared, *more)))
        return generate_batch(self.graphs, self.tokenizer, requests, options, together=self.rows_independent)

    @property
    def rows_independent(self) -> bool:
        """Whether rows run together give each row what it gets alone: not for int8, whose activations are
        quantized with one scale over the whole batch (so `draft_batch` runs its rows one at a time)."""
        return self.variant != "int8" and self.graphs.takes_batches

    def batch_image_features(self, studies: Sequence[StudyInput],
                             priors: Sequence[PriorReady] | None = None) -> list[np.ndarray]:
        """The image features of each study, then of its prior's frontal image when the prompt takes it (as
        `image_features`), from one run of the vision graph over all their images."""
        priors = priors or [PriorReady()] * len(studies)
        pixels = [study.pixel_values if ready.pixel_values is None else
                  np.concatenate([study.pixel_values, ready.pixel_values.astype(study.pixel_values.dtype)])
                  for study, ready in zip(studies, priors)]
        counts = [block.shape[0] for block in pixels]
        features = self.graphs.image_features(np.concatenate(pixels))
        bounds = np.cumsum([0, *counts])
        return [np.ascontiguousarray(features[start:end]) for start, end in itertools.pairwise(bounds)]

    def _assemble(self, study: StudyInput, findings: GenerationResult, impression: GenerationResult, kind: str,
                  used_indication: str | None, domain: DomainState, timings: dict[str, object], *,
                  prior: PriorReady | None = None, asked_prior: bool = False) -> Draft:
        prior = prior or self.prepare_prior(None)
        return Draft(
            findings=findings.text, impression=impression.text, model=self.model_id, provider=self.provider,
            variant=self.variant, images=study.sop_instance_uids, skipped=study.skipped,
            prompts={"findings": "findings", "impression": kind,
                     **({"indication": used_indication} if used_indication else {}),
                     **({"prior": prior.note} if asked_prior else {})},  # what became of the prior given
            timings=timings, domain=domain.to_dict(), confidence=self.confidence(findings, impression),
            prior=prior.used,
        )

    def domain_state(self, features: np.ndarray) -> DomainState:
        """How far the study's images lie from the training images; UNKNOWN for a bundle without a signature."""
        if self.domain_signature is None:
            return UNKNOWN
        return self.domain_signature.state(features, self.variant)

    def confidence(self, findings: GenerationResult, impression: GenerationResult) -> dict[str, float]:
        return finding_confidence(self.tokenizer, {
            name: SectionTokens(result.text, result.token_ids, result.token_probs)
            for name, result in (("findings", findings), ("impression", impression))})


    def _shared_prefill(self, features: np.ndarray, options: GenerationOptions, *, views: tuple[str, ...],
                        indication: str | None, prior: str | None = None, prior_images: int = 0
                        ) -> tuple[tuple[DecoderState, ...], float]:
        """One prefill of what the findings and impression prompts share (the image tokens, the prior and
        the text around them up to where the sections differ) and its seconds; nothing when they share
        nothing or caching is off."""
        if not options.use_cache:
            return (), 0.0
        images = features.shape[0]
        same = {"views": views, "indication": indication, "prior": prior, "prior_images": prior_images}
        first = self.prompt_ids("findings", images, **same)
        second = self.prompt_ids("impression", images, **same)
        length = min(shared_prefix_length(first, second), len(first) - 1, len(second) - 1)
        if length <= 0:
            return (), 0.0
        started = time.perf_counter()
        state = prefill(self.graphs, first[:length], features)
        return (state,), time.perf_counter() - started

    def prompt_layout(self, study: StudyInput, indication: str | None = None, prior: PriorReady | None = None) -> dict:
        """The views, the indication and the prior the prompts of `study` take (the keywords of `generate`):
        every way of drafting a study (queued, on demand, from given findings) prompts it alike.

        indication: typed by the radiologist; None takes the study's own (DICOM request attributes).
        prior: from `prepare_prior` (None: the study has no prior)."""
        prior = prior or self.prepare_prior(None)
        views = tuple(view for view in study.views if view in self.manifest.preprocessing.views) or \
            self.manifest.preprocessing.views[:1]
        used = self.limit_indication(indication if indication is not None else study.indication) \
            if self.takes_indication else None
        return {"views": views, "indication": used, "prior": prior.block, "prior_images": prior.images}

    def check_fits(self) -> None:
        """Every prompt this bundle can build (any views, the longest indication, findings as long as
        max_new_tokens) plus max_new_tokens fits the decoder's positions; `BundleError` otherwise."""
        arch, budget = self.manifest.architecture, self._max_new_tokens
        indication = "x" if self.takes_indication else None
        longest_prior = self._longest_prior()
        for kind, views in self._prompt_cases():
            images = 1 if self.manifest.preprocessing.combine == "stitch" else len(views)
            findings = "x" if kind == IMPRESSION_FROM_FINDINGS else None
            try:
                length = len(self.prompt_ids(kind, images + longest_prior.images, findings, views=views,
                                             indication=indication, prior=longest_prior.block,
                                             prior_images=longest_prior.images))
            except GenerationError as error:
                raise BundleError(f"model bundle {self.bundle_dir}: {error}") from None
            # drafted findings are at most `budget` tokens; an indication is cut to MAX_INDICATION_TOKENS,
            # a prior's report to MAX_PRIOR_REPORT_TOKENS
            length += (budget if findings else 0) + (MAX_INDICATION_TOKENS if indication else 0)
            length += MAX_PRIOR_REPORT_TOKENS if longest_prior.used and self.manifest.prior_in(kind) else 0
            if length + budget > arch.max_positions:
                raise BundleError(
                    f"model bundle {self.bundle_dir}: the {kind} prompt for {'+'.join(views)} takes {length} "
                    f"tokens; with {budget} new tokens that exceeds the model's {arch.max_positions} positions "
                    "(lower engine.max_new_tokens or use fewer views)")

    def _longest_prior(self) -> PriorReady:
        """A prior as long as any the prompts take (its report counted apart, at its cut)."""
        mode = self.takes_prior
        if mode == "none":
            return PriorReady()
        size = self.manifest.preprocessing.image_size
        pixels = np.zeros((1, 3, size, size), dtype=np.float32) if mode == "report+image" else None
        stand_in = PriorInput(date="0000-00-00", study_uid="-")
        return PriorReady(block=prior_block(self.manifest.prior_prompts, mode, stand_in, ""), pixel_values=pixels,
                          used=stand_in.identity())

    def _prompt_cases(self) -> list[tuple[str, tuple[str, ...]]]:
        variants = self.manifest.prompting.variants
        if variants:
            return sorted({(v.section, tuple(v.views)) for v in variants})
        views = self.manifest.preprocessing.views
        return [(kind, tuple(views[:count])) for kind in PROMPT_KINDS for count in range(1, len(views) + 1)]


def findings_cache_for(kind: str, findings: GenerationResult) -> tuple[DecoderState, ...]:
    """The findings' cache, for an impression that continues the findings (any other shares no more with it
    than with the shared prefill). Continuing it, rather than prefilling the findings again in one chunk, is
    also what keeps int8 exact: its activation scale spans a prefilled chunk, not a decoded token."""
    return (findings.state,) if findings.state and kind == IMPRESSION_FROM_FINDINGS else ()


def _section(callback: SectionCallback | None, section: str) -> TextCallback | None:
    if callback is None:
        return None
    return lambda piece: callback(section, piece)


# Above this many parameters a CPU is memory-bandwidth bound at int8 too: int4 halves the bytes per token.
INT4_ON_CPU_ABOVE = 1_000_000_000


def resolve_variant(manifest: BundleManifest, requested: str, preferred_provider: str, batch: int = 1) -> str:
    """The variant "auto" means for this provider. batch > 1 passes over int8: its dynamic activation
    quantization takes one scale over all rows of a batch, so a study's draft would depend on the
    studies drafted beside it (engine.batched); fp32 batched is faster per study than int8 alone."""
    if requested != "auto":
        return requested
    if preferred_provider != "cpu":
        order: tuple[str, ...] = ("fp16", "int4")
    elif model_parameters(manifest) > INT4_ON_CPU_ABOVE:
        order = ("int4",) if batch > 1 else ("int4", "int8")
    else:
        order = ("fp32",) if batch > 1 else ("int8", "int4")
    for candidate in order:
        if candidate in manifest.variants:
            return candidate
    return manifest.default_variant


def model_parameters(manifest: BundleManifest) -> int:
    """Parameters as counted at export (model.json provenance), else estimated from the decoder's shape."""
    counted = manifest.provenance.get("export", {}).get("parameters") if isinstance(
        manifest.provenance.get("export"), dict) else None
    if isinstance(counted, int) and counted > 0:
        return counted
    arch = manifest.architecture
    # embeddings + head, and per layer attention (~4 h^2) + a gated MLP of ~2.7 h (~8 h^2)
    return 2 * arch.vocab_size * arch.hidden_size + arch.num_layers * 12 * arch.hidden_size ** 2


def load_model(bundle_dir: Path, settings: EngineSettings) -> DraftModel:
    """Validate and open a bundle; `BundleError` names what is wrong. Logs loudly on a CPU fallback.
    `settings.batch_size` (studies `draft_batch` drafts at once) weighs in on the variant "auto" means."""
    bundle_dir = Path(bundle_dir)
    started, resident_before = time.perf_counter(), resident_bytes()
    choice = choose_providers(settings.providers)
    manifest = validate_bundle(bundle_dir)
    variant = resolve_variant(manifest, settings.variant, choice.preferred, settings.batch_size)
    manifest = validate_bundle(bundle_dir, variant)
    tokenizer = _load_tokenizer(bundle_dir / manifest.tokenizer)
    graphs = ModelGraphs(bundle_dir, manifest.variants[variant], manifest.architecture, choice,
                         SessionOptions(settings.intra_op_threads, settings.inter_op_threads))
    if choice.fallback_reason:
        log.warning("GPU not used: %s", choice.fallback_reason)
    elif choice.preferred != graphs.provider:
        log.warning("GPU not used: requested %s, but ONNX Runtime could not start it and runs on %s "
                    "(check the CUDA/cuDNN libraries)", choice.preferred, graphs.provider)
    model = DraftModel(bundle_dir, manifest, variant, graphs, tokenizer, choice, settings.max_new_tokens)
    model.check_fits()
    model.load_seconds = time.perf_counter() - started
    model.resident_bytes = resident_bytes()
    log.info("model %s (%s) loaded on %s in %.1f s; process resident memory %.2f GB (+%.2f GB for the model)",
             manifest.model_id, variant, graphs.provider, model.load_seconds, model.resident_bytes / 1e9,
             max(model.resident_bytes - resident_before, 0) / 1e9)
    return model


def resident_bytes() -> int:
    """This process's resident memory now (0 where the platform does not say)."""
    try:
        import psutil
    except ImportError:
        return 0
    return int(psutil.Process().memory_info().rss)


def _load_tokenizer(path: Path) -> Tokenizer:
    try:
        return Tokenizer.from_file(str(path))
    except Exception as error:  # tokenizers raises a plain Exception on bad JSON
        raise BundleError(f"model bundle {path.parent}: {path.name} is not a valid tokenizer ({error})") from None
