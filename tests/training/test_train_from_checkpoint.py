"""Training starts from a released checkpoint and prompts it as the exported bundle will run it.

A miniature LLaVA-1.5 checkpoint (Llama + CLIP + SentencePiece + the llava-hf chat template) is fine-tuned
by `run_training` for a few steps on phantom studies with one or two views, some with an indication. Then:
- the loss falls;
- the prompt part of every training input (labels -100) is, token for token, what the engine builds from
  the exported bundle for that study's views and indication, and what transformers' own `LlavaProcessor`
  makes of the chat template;
- the bundle keeps the checkpoint's image processor (CLIP mean/std) and its template's prompts.
"""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")
pytest.importorskip("sentencepiece")
pytest.importorskip("optimum.exporters.onnx")

from checkpoint_layouts import LLAVA_15, save_checkpoint

from engine.runtime import load_model
from engine.settings import EngineSettings
from training.train.config import PhantomSet
from training.train.samples import IGNORE, Item
from training.train.studies import ensure_phantoms
from training.train.tiny_run import tiny_recipe

pytestmark = pytest.mark.slow
INDICATION = "Indication: {indication}"
SECTIONS = ("findings", "impression", "impression_from_findings")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from training.train.pipeline import run_training

    root = tmp_path_factory.mktemp("from-checkpoint")
    checkpoint = save_checkpoint(LLAVA_15, root / "checkpoint")
    config_file = checkpoint / "config.json"  # the miniature vocabulary spells phantom reports byte by byte
    saved = json.loads(config_file.read_text())
    saved["text_config"]["max_position_embeddings"] = 2048
    config_file.write_text(json.dumps(saved))
    phantoms = ensure_phantoms(PhantomSet(16, seed=11, image_size=64, lateral_fraction=0.5, workers=1),
                               root / "phantoms")
    records = [json.loads(line) for line in phantoms.read_text().splitlines() if line.strip()]
    for index, record in enumerate(records):  # every other study states why it was asked for
        record["split"] = "train"
        if index % 2 == 0:
            record["indication"] = f"Cough and fever for {index + 2} days."
    manifest = phantoms.with_name("with-indication.jsonl")
    manifest.write_text("".join(json.dumps(r) + "\n" for r in records))
    config = tiny_recipe(root / "run", {
        "model.base": str(checkpoint),
        "data.sources": [{"name": "site", "manifest": str(manifest)}],
        "data.test": {}, "data.views": ["frontal", "lateral"],
        "prompting.indication": INDICATION,
        "stages.projector.enabled": False,
        "stages.finetune.vqa_fraction": 0.0, "stages.finetune.validation_drafts": 0,
        "stages.finetune.optimisation": {"lr": 1e-2, "batch_size": 4, "epochs": 3, "warmup": 0.0},
        "output.evaluate": False, "output.include_checkpoint": False,
    })
    outcome = run_training(config, progress=False)
    return {"config": config, "outcome": outcome, "checkpoint": checkpoint}


@pytest.fixture(scope="module")
def context(run):
    """The run's own data, tokenizer and prompts, as `run_training` assembles them."""
    from training.train.pipeline import (
        base_image_size,
        base_prompt_spec,
        preprocessing,
        tokenizer_for,
        training_prompts,
    )
    from training.train.studies import training_pools
    from training.train.tasks import Context

    config = run["config"]
    spec = base_prompt_spec(config)
    prep = preprocessing(config, base_image_size(config), spec)
    train, validation = training_pools(config.data.sources, prep, config.data_dir, config.cache_dir)
    tokenizer = tokenizer_for(config, train, config.output.run_dir)
    return Context(config, tokenizer, train, validation, config.output.run_dir, training_prompts(config, spec))


def test_the_loss_falls(run):
    assert run["outcome"].finished
    losses = [r["loss"] for r in run["outcome"].stages["finetune"]["history"] if r["kind"] == "train"]
    assert len(losses) >= 6
    assert sum(losses[-5:]) / 5 < 0.97 * sum(losses[:5]) / 5  # a random miniature LM: slow, but steady


def test_training_prompts_are_the_bundles_prompts(run, context):
    from transformers import LlavaForConditionalGeneration

    from training.train.tasks import report_task

    engine = load_model(run["outcome"].bundle_dir, EngineSettings(providers=("cpu",), variant="fp32"))
    model = LlavaForConditionalGeneration.from_pretrained(run["checkpoint"], attn_implementation="eager")
    task = report_task(context, "finetune", model)
    pool = context.train
    views_seen, with_indication = set(), 0
    for index, study in enumerate(pool.studies):
        views = pool.pixels.study_views(index, ("frontal", "lateral"))
        views_seen.add(views)
        for section in SECTIONS:
            batch = task.collate([Item(index, section)])
            ids, labels = batch["input_ids"][0].tolist(), batch["labels"][0].tolist()
            prompt = ids[:labels.index(next(v for v in labels if v != IGNORE))]
            findings = study.findings_text if section == "impression_from_findings" else None
            expected = engine.prompt_ids(section, pool.pixels.num_images(index), findings, views=views,
                                         indication=engine.limit_indication(study.indication))
            assert prompt == expected, (study.uid, section, views)
            if study.indication:
                with_indication += 1
                assert f"Indication: {study.indication}" in engine.tokenizer.decode(prompt)
    assert views_seen == {("frontal",), ("frontal", "lateral")}
    assert with_indication >= 4 * len(SECTIONS)


def test_a_training_prompt_is_what_the_llava_processor_makes(run, context):
    from transformers import AutoProcessor

    from training.train.samples import SampleEncoder

    processor = AutoProcessor.from_pretrained(run["checkpoint"])
    pool = context.train
    index = next(i for i, s in enumerate(pool.studies) if s.indication and pool.pixels.num_images(i) == 2)
    study = pool.studies[index]
    instruction = "Write the findings section of the radiology report for this chest X-ray."
    text = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "image"},
                                      {"type": "text", "text": f"Indication: {study.indication}\n{instruction}"}]}],
        add_generation_prompt=True)
    from PIL import Image

    images = [Image.new("RGB", (64, 64))] * 2  # the token ids depend on the number of images only
    reference = processor(images=images, text=text, return_tensors="pt")
    encoder: SampleEncoder = context.report_encoder(_config_only_model(run["checkpoint"]))
    assert study.indication
    assert encoder.section_prompt("findings", study, 2, ("frontal", "lateral")) == reference["input_ids"][0].tolist()


def _config_only_model(checkpoint):
    """`report_encoder` reads only the model's config."""
    from types import SimpleNamespace

    from transformers import AutoConfig

    return SimpleNamespace(config=AutoConfig.from_pretrained(checkpoint))


def test_the_bundle_keeps_the_checkpoints_inputs(run):
    bundle = json.loads((run["outcome"].bundle_dir / "model.json").read_text())
    processor = json.loads((run["checkpoint"] / "preprocessor_config.json").read_text())
    assert bundle["preprocessing"]["mean"] == pytest.approx(processor["image_mean"])
    assert bundle["preprocessing"]["std"] == pytest.approx(processor["image_std"])
    assert bundle["preprocessing"]["views"] == ["frontal", "lateral"]
    assert "USER:" in bundle["prompts"]["findings"] and "ASSISTANT:" in bundle["prompts"]["findings"]
    assert any(v["indication"] for v in bundle["prompting"]["variants"])
    merged = run["outcome"].merged_dir
    assert json.loads((merged / "raddraft_prompts.json").read_text())["indication"] == INDICATION
    assert (merged / "preprocessor_config.json").is_file()
