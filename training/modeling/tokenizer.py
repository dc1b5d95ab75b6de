"""A byte-level BPE tokenizer trained offline on report text, in Hugging Face `tokenizers` format.

The special tokens are fixed because the engine and the bundle refer to them by name: `<s>` (start),
`</s>` (end of a section), `<pad>` and `<image>` (one per image feature, expanded by the engine).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

BOS = "<s>"
EOS = "</s>"
PAD = "<pad>"
IMAGE = "<image>"
SPECIAL_TOKENS = (BOS, EOS, PAD, IMAGE)


def train_tokenizer(texts: Iterable[str], vocab_size: int = 1024, min_frequency: int = 2) -> Tokenizer:
    """Train a byte-level BPE on `texts`; the special tokens get ids 0-3 in `SPECIAL_TOKENS` order."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return tokenizer


def as_transformers(tokenizer: Tokenizer) -> PreTrainedTokenizerFast:
    """Wrap for transformers; without the explicit input names `token_type_ids` reach `generate` and fail."""
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        additional_special_tokens=[IMAGE],
        model_input_names=["input_ids", "attention_mask"],
    )


def load_tokenizer(path: Path) -> PreTrainedTokenizerFast:
    """Load a `tokenizer.json` (or a folder holding one) written by `train_tokenizer`."""
    path = Path(path)
    file = path / "tokenizer.json" if path.is_dir() else path
    return as_transformers(Tokenizer.from_file(str(file)))
