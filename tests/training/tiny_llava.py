"""A tiny LLaVA checkpoint on disk, as training would save it: model `save_pretrained` + `tokenizer.json`.

Used by the export tests (and handy for anything else that needs a real checkpoint folder). Random weights:
it exercises shapes and plumbing, not quality.
"""

from __future__ import annotations

from pathlib import Path

REPORT_TEXTS = [
    "Findings: The lungs are clear. No pleural effusion or pneumothorax. The heart size is normal.",
    "Findings: Small right pleural effusion. Mild bibasilar atelectasis. No pneumothorax.",
    "Impression: No acute cardiopulmonary process.",
    "Impression: Moderate cardiomegaly with mild pulmonary edema.",
    "Findings: Endotracheal tube terminates approximately 4 cm above the carina.",
    "Findings: Consolidation in the right lower lobe. The cardiomediastinal silhouette is normal.",
    "Impression: Right lower lobe pneumonia. Small left pleural effusion.",
    "Findings: A nodule in the left upper lobe measures 8 mm. No focal consolidation.",
]


def save_tiny_llava(out_dir: Path, *, seed: int = 0, size=None, vocab_size: int = 300) -> Path:
    """Build a random `LlavaForConditionalGeneration` of `size` (default `TINY`) and save it to `out_dir`."""
    from training.modeling.llava import TINY, build_llava
    from training.modeling.tokenizer import as_transformers, train_tokenizer

    out_dir = Path(out_dir)
    tokenizer = as_transformers(train_tokenizer(REPORT_TEXTS * 4, vocab_size=vocab_size, min_frequency=1))
    model = build_llava(size or TINY, tokenizer, seed=seed)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir
