"""A tiny run to exercise the training code quickly: `training/configs/tiny.toml` on a few small phantoms.

Used by the tests (`tests/training/test_train_*.py`), the DDP check and `bench/train_throughput.py`:
`tiny_context(run_dir)` generates (or reuses) the phantom studies, decodes their pixels, trains the
tokenizer, and returns the `Context` every stage needs; `fresh_llava(ctx)` builds the model.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import nn

from training.train.config import TrainConfig, load_train_config
from training.train.tasks import Context

TINY_RECIPE = Path(__file__).resolve().parents[1] / "configs" / "tiny.toml"


def tiny_recipe(run_dir: Path, overrides: Mapping[str, Any] | None = None,
                recipe: Path = TINY_RECIPE) -> TrainConfig:
    """The tiny recipe with its run folder (and data) under `run_dir`."""
    return load_train_config(recipe, {"output.run_dir": str(run_dir), **dict(overrides or {})})


def tiny_context(config: TrainConfig) -> Context:
    """Data, pixels and tokenizer of `config` (generated once, reused from the run folder afterwards)."""
    from training.train.pipeline import base_image_size, preprocessing, tokenizer_for
    from training.train.studies import training_pools

    logging.getLogger("openjpeg").setLevel(logging.WARNING)
    run_dir = config.output.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    prep = preprocessing(config, base_image_size(config))
    train, validation = training_pools(config.data.sources, prep, config.data_dir, config.cache_dir,
                                       config.data.validation_limit)
    return Context(config, tokenizer_for(config, train, run_dir), train, validation, run_dir)


def fresh_llava(ctx: Context, seed: int | None = None) -> nn.Module:
    from training.modeling.llava import build_llava

    model = build_llava(ctx.config.model.llava_size(), ctx.tokenizer,
                        seed=ctx.config.model.seed if seed is None else seed)
    model.train()
    return model
