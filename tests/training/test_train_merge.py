"""Merging LoRA: the merged model computes what the LoRA model computed, and survives save + reload."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from transformers import LlavaForConditionalGeneration

from training.train.merge import merge_lora, save_hf_checkpoint
from training.train.stages import lora_parameters, prepare_stage
from training.train.tiny_run import fresh_llava, tiny_context, tiny_recipe


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    return tiny_context(tiny_recipe(tmp_path_factory.mktemp("merge") / "run"))


def trained_lora_model(ctx):
    """A LoRA + projector model whose adapters are not zero (as after training)."""
    model, _ = prepare_stage(fresh_llava(ctx), ("projector", "lora"), ctx.config.lora)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in lora_parameters(model):
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.2)
        projector = model.get_base_model().model.multi_modal_projector.modules_to_save["default"]
        for parameter in projector.parameters():
            parameter.add_(torch.randn(parameter.shape, generator=generator) * 0.2)
    return model.eval()


def logits(model, batch):
    with torch.no_grad():
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                     pixel_values=batch["pixel_values"]).logits


def a_batch(ctx, model):
    from training.train.samples import Item, collate

    items = [Item(i, kind) for i in range(3) for kind in ("findings", "impression")]
    return collate(items, ctx.train.studies, ctx.train.pixels, ctx.report_encoder(model), ctx.pad_id)


def test_merged_model_matches_the_lora_model_and_reloads_exactly(ctx, tmp_path):
    model = trained_lora_model(ctx)
    batch = a_batch(ctx, model)
    with_lora = logits(model, batch)
    plain = fresh_llava(ctx).eval()
    assert not torch.allclose(with_lora, logits(plain, batch), atol=1e-3)  # the adapters matter

    merged = merge_lora(model).eval()
    assert isinstance(merged, LlavaForConditionalGeneration)
    assert not any("lora" in name for name, _ in merged.named_parameters())
    torch.testing.assert_close(logits(merged, batch), with_lora, rtol=1e-5, atol=1e-5)

    folder = save_hf_checkpoint(merged, ctx.tokenizer, tmp_path / "merged")
    assert (folder / "tokenizer.json").is_file() and (folder / "config.json").is_file()
    reloaded = LlavaForConditionalGeneration.from_pretrained(folder, attn_implementation="eager").eval()
    torch.testing.assert_close(logits(reloaded, batch), logits(merged, batch), rtol=0, atol=0)
