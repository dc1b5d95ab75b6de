"""The training recipe: typed, frozen, every mistake named by its key."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from training.train.config import (
    TrainConfig,
    TrainConfigError,
    load_train_config,
    parse_override,
)

CONFIGS = Path(__file__).resolve().parents[2] / "training" / "configs"


@pytest.mark.parametrize("name", ["tiny.toml", "phantom-cxr.toml"])
def test_shipped_recipes_load(name):
    config = load_train_config(CONFIGS / name)
    assert isinstance(config, TrainConfig)
    assert config.model.from_scratch
    assert config.stages.finetune.trains == ("projector", "lora")
    assert config.stages.projector.trains == ("projector",)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.model.seed = 3  # type: ignore[misc]


def test_embedded_recipe_matches_what_the_issue_asks():
    config = load_train_config(CONFIGS / "phantom-cxr.toml")
    size = config.model.llava_size()
    assert size.vision.image_size == 128 and size.image_tokens == 64
    assert config.data.views == ("frontal",) and config.data.combine == "tokens"
    assert config.output.bundle_dir == Path("resources/models/raddraft-phantom-cxr")
    assert config.data.test is not None and config.data.test.phantoms.seed != config.data.sources[0].phantoms.seed
    assert "not for clinical use" in config.output.description.lower()


@pytest.mark.parametrize("key, value, message", [
    ("stages.finetune.optimisation.lrr", 1.0, "stages.finetune.optimisation.lrr: unknown key"),
    ("stages.finetune.optimisation.lr", -1.0, "stages.finetune.optimisation.lr: must be positive"),
    ("stages.finetune.optimisation.batch_size", "8", "stages.finetune.optimisation.batch_size: expected an integer"),
    ("stages.finetune.trains", ["projector", "wings"], "stages.finetune.trains: unknown part 'wings'"),
    ("stages.finetune.trains", ["lora", "language"], "stages.finetune.trains: train the language model"),
    ("stages.vision.enabled", False, "stages.vision.enabled: stage 0 cannot be skipped"),
    ("model.size", "huge", "model.size: must be one of"),
    ("model.vision.depth", 3, "model.vision.depth: unknown key"),
    ("data.views", ["oblique"], "data.views: must list some of"),
    ("data.combine", "collage", "data.combine: must be one of"),
    ("compute.device", "gpu", "compute.device: must be one of auto, cpu, cuda"),
    ("lora.dropout", 1.5, "lora.dropout: must lie in [0, 1)"),
    ("output.eval_engine", "onnx", "output.eval_engine: must be one of"),
    ("colour", "blue", "colour: unknown key"),
])
def test_bad_values_name_their_key(key, value, message):
    with pytest.raises(TrainConfigError) as caught:
        load_train_config(CONFIGS / "tiny.toml", {key: value})
    assert message in str(caught.value)
    assert "tiny.toml" in str(caught.value)


def test_a_source_needs_exactly_one_of_manifest_or_phantoms(tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text('[[data.sources]]\nname = "site"\nmanifest = "m.jsonl"\n'
                      'phantoms = { studies = 3, seed = 1 }\n')
    with pytest.raises(TrainConfigError, match=r"data.sources\[0\].manifest: give exactly one"):
        load_train_config(recipe)
    recipe.write_text("[model]\nsize = 3\n")
    with pytest.raises(TrainConfigError, match="model.size: expected a string"):
        load_train_config(recipe)
    recipe.write_text("[model\n")
    with pytest.raises(TrainConfigError, match="not valid TOML"):
        load_train_config(recipe)


def test_a_stage_table_overrides_only_what_it_names():
    config = load_train_config(CONFIGS / "tiny.toml", {"stages.finetune.optimisation.lr": 1e-4})
    assert config.stages.finetune.optimisation.lr == 1e-4
    assert config.stages.finetune.vqa_fraction == 0.2  # from tiny.toml, untouched
    bare = load_train_config(None, {"stages.finetune.optimisation.epochs": 2})
    assert bare.stages.finetune.trains == ("projector", "lora")  # the stage's default parts
    assert bare.stages.finetune.vqa_fraction > 0


def test_overrides_and_the_saved_form():
    assert parse_override("stages.finetune.optimisation.lr=1e-4") == ("stages.finetune.optimisation.lr", 1e-4)
    assert parse_override('data.views=["frontal", "lateral"]') == ("data.views", ["frontal", "lateral"])
    assert parse_override("output.name=my-model") == ("output.name", "my-model")
    with pytest.raises(TrainConfigError):
        parse_override("no-equals-sign")
    config = load_train_config(CONFIGS / "tiny.toml", {"output.run_dir": "/tmp/somewhere"})
    saved = json.loads(config.to_json())
    assert saved["output"]["run_dir"] == "/tmp/somewhere"
    assert saved["stages"]["finetune"]["optimisation"]["batch_size"] == 8


def test_make_model_chains_the_recipes_that_made_the_embedded_bundle():
    """`make model` runs phantom-cxr.toml, phantom-cxr-follows.toml, then phantom-cxr-priors.toml: each continues
    the checkpoint the one before wrote and writes the bundle back there, the last as the version shipped."""
    from engine.bundle import read_manifest

    makefile = (CONFIGS.parents[1] / "Makefile").read_text(encoding="utf-8")
    recipe = makefile.split("\nmodel:", 1)[1].split("\n\n", 1)[0]
    names = ("phantom-cxr.toml", "phantom-cxr-follows.toml", "phantom-cxr-priors.toml")
    assert [recipe.index(name) for name in names] == sorted(recipe.index(name) for name in names)
    first, *later = (load_train_config(CONFIGS / name) for name in names)
    for step in later:
        assert step.model.base == first.output.bundle_dir / "checkpoint"
        assert step.output.bundle_dir == first.output.bundle_dir
        assert "not for clinical use" in step.output.description.lower()
    second, third = later
    shipped = read_manifest(CONFIGS.parents[1] / first.output.bundle_dir)
    assert (third.output.name, third.output.version) == (shipped.name, shipped.version)
    assert (shipped.prior, shipped.impression_from) == (third.prior.intake, third.prompting.impression_from)
    assert second.data.test == first.data.test  # the two cards compare
    seeds = [{source.phantoms.seed for source in step.data.sources} for step in (first, second, third)]
    assert not seeds[0] & seeds[1] and not seeds[1] & seeds[2] and not seeds[0] & seeds[2]
    assert not {first.data.test.phantoms.seed, third.data.test.phantoms.seed} & set().union(*seeds)
    assert all(s.phantoms.wording == "house" for s in third.data.sources if s.phantoms.priors)
