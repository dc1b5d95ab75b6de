"""The export's weight handling that keeps its memory bounded, checked on small graphs."""

from __future__ import annotations

import pytest

pytest.importorskip("torch", reason="the export needs the training extra (torch)")


def test_parts_cast_to_fp32_one_at_a_time_compute_as_an_fp32_model():
    import copy

    import torch

    from training.export.precision import in_float32, units_in_float32

    torch.manual_seed(0)
    layers = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.GELU(), torch.nn.Linear(32, 8)).half()
    reference = copy.deepcopy(layers).float()
    x = torch.randn(4, 16)
    with torch.no_grad(), units_in_float32([layers[0], layers[2]]):
        during = layers(x)
        dtypes_after_each = [p.dtype for p in layers.parameters()]
    torch.testing.assert_close(during, reference(x))  # fp16 -> fp32 is exact: same weights, fp32 compute
    assert during.dtype == torch.float32 and set(dtypes_after_each) == {torch.float16}
    with in_float32(layers):
        assert {p.dtype for p in layers.parameters()} == {torch.float32}
    assert {p.dtype for p in layers.parameters()} == {torch.float16}


def test_a_unit_that_raises_gets_its_own_weights_back():
    import torch

    from training.export.precision import units_in_float32

    class Failing(torch.nn.Linear):
        def forward(self, x):
            raise RuntimeError("out of memory")

    layers = torch.nn.Sequential(torch.nn.Linear(4, 4), Failing(4, 4)).half()
    with pytest.raises(RuntimeError, match="out of memory"), torch.no_grad(), units_in_float32(list(layers)):
        layers(torch.randn(2, 4))
    assert {p.dtype for p in layers.parameters()} == {torch.float16}


def half_llava(tower: str):
    """A tiny LLaVA saved in fp16 (as the Hub ships 7 B models), with a CLIP or a SigLIP tower."""
    import torch
    from transformers import (
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        SiglipVisionConfig,
    )

    vision = {"image_size": 32, "patch_size": 16, "hidden_size": 32, "num_hidden_layers": 2,
              "num_attention_heads": 2, "intermediate_size": 64}
    vision_config = CLIPVisionConfig(**vision) if tower == "clip" else SiglipVisionConfig(**vision)
    text = LlamaConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                       intermediate_size=64, max_position_embeddings=64)
    torch.manual_seed(0)
    config = LlavaConfig(vision_config=vision_config, text_config=text, image_token_index=63,
                         vision_feature_select_strategy="default" if tower == "clip" else "full",
                         vision_feature_layer=-2)
    return LlavaForConditionalGeneration(config).eval().half()


@pytest.mark.parametrize("tower", ["clip", "siglip"])
def test_a_half_precision_llava_computes_in_fp32_a_part_at_a_time(tower):
    """The torch reference of the export: the same logits as the model cast to fp32 whole, and the fp16
    weights back afterwards. SigLIP's embeddings read the pixels' dtype from their patch embedding's weight
    before calling it, which a cast weight by weight got wrong."""
    import copy

    import torch

    from training.export.precision import llava_in_float32

    model = half_llava(tower)
    reference = copy.deepcopy(model).float()
    image_tokens = 4  # 2 x 2 patches, no CLS token once selected
    ids = torch.tensor([[1, *[63] * image_tokens, 5, 9, 12]])
    pixels = torch.randn(1, 3, 32, 32)
    with torch.no_grad(), llava_in_float32(model):
        logits = model(input_ids=ids, pixel_values=pixels).logits
    with torch.no_grad():
        expected = reference(input_ids=ids, pixel_values=pixels).logits
    assert logits.dtype == torch.float32
    torch.testing.assert_close(logits, expected)
    assert {parameter.dtype for parameter in model.parameters()} == {torch.float16}


# A real-width, cut-depth LLaVA of bench/real_scale.py, saved in fp16 (as the Hub ships 7 B models): the
# "medium" shape is CLIP 1024 wide, a Llama decoder 1024 wide with a 32064-token vocabulary, 2 + 2 layers.
BUILD_CHECKPOINT = """
import sys
from pathlib import Path
from bench.real_scale import build_checkpoint
build_checkpoint(sys.argv[1], Path(sys.argv[2]))
"""
EXPORT = """
import sys
from training.export import export_bundle
export_bundle(sys.argv[1], sys.argv[2], name="medium", version="1", parity=False, quantize=["int8"])
"""


PEAK_LINE = """
from training.export.bundle import peak_resident_bytes as _peak
print("PEAK_BYTES", _peak())
"""


def run_child(code: str, *args: str) -> int:
    """Run `code` in a fresh interpreter; its own peak resident bytes, as it reads them itself (wait4's
    ru_maxrss would carry this test process's high-water mark over: see peak_resident_bytes)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-c", code + PEAK_LINE, *args], cwd=root, capture_output=True, check=False,
                          text=True, env={**os.environ, "PYTHONPATH": str(root)})
    assert done.returncode == 0, f"child exited {done.returncode}: {done.stderr[-2000:]}"
    peak = [line.split()[1] for line in done.stdout.splitlines() if line.startswith("PEAK_BYTES ")]
    return int(peak[-1])


@pytest.mark.slow
def test_a_real_width_fp16_checkpoint_exports_within_the_memory_bound(tmp_path):
    import json

    checkpoint, bundle = tmp_path / "checkpoint", tmp_path / "bundle"
    run_child(BUILD_CHECKPOINT, "medium", str(checkpoint))
    weights = sum(path.stat().st_size for path in checkpoint.glob("*.safetensors"))
    peak = run_child(EXPORT, str(checkpoint), str(bundle))

    bound = 1.5 * weights + (1 << 30)
    assert peak <= bound, f"export peak RSS {peak / 1e9:.2f} GB over the bound {bound / 1e9:.2f} GB"
    record = json.loads((bundle / "export.json").read_text())
    # the decoder takes inputs_embeds: its weights are the language model's less the token embeddings,
    # fp32 (4 bytes each) in its external data, written from the fp16 model
    decoder = record["parameters"]["language_model"] + record["parameters"]["lm_head"] - 32064 * 1024
    assert (bundle / "decoder.onnx.data").stat().st_size >= 4 * decoder
    assert (bundle / "decoder.onnx").stat().st_size < 10_000_000
    # int8 (written a weight at a time) is inside the same bound, its weights external too
    assert "int8" in record["variants"], record["failed_variants"]
    assert (bundle / "decoder.int8.onnx").stat().st_size < 10_000_000
