"""Two-stage LLaVA fine-tuning with LoRA (`raddraft train`), with stage 0 pretraining when starting from scratch.

- `config`: the recipe (`load_train_config`, `TrainConfig`, `TrainConfigError`).
- `pipeline.run_training(config)`: the whole chain; `finish`: merged checkpoint, export, evaluation, card.
- `studies` (manifests, phantom sets, cached pixels), `samples` (epoch plans, tokens, batches), `vqa` (mixup).
- `stages` (which parameters train), `trainer` (the accelerate loop), `checkpoint` (exact resume).
- `vision_pretrain`, `lm_pretrain` (stage 0), `tasks` (the stages as loop tasks), `merge`, `drafting`,
  `evaluation`, `curves`; `tiny_run` builds a tiny run for tests and benchmarks.

Importing this package is cheap; torch loads with the modules that need it.
"""
