"""The decoder graph written from the weights computes what transformers computes: grouped KV heads,
projection biases, scaled rotary frequencies, a sliding window on some layers, with and without a past."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")

HIDDEN, HEADS, KV_HEADS, LAYERS, VOCAB = 64, 4, 2, 2, 96


def tiny_llava(text_config):
    from transformers import CLIPVisionConfig, LlavaConfig, LlavaForConditionalGeneration

    vision = CLIPVisionConfig(image_size=32, patch_size=16, hidden_size=32, num_hidden_layers=1,
                              num_attention_heads=2, intermediate_size=64, projection_dim=32)
    torch.manual_seed(0)
    model = LlavaForConditionalGeneration(LlavaConfig(vision_config=vision, text_config=text_config,
                                                      image_token_index=VOCAB - 1)).eval()
    with torch.no_grad():  # random norms and biases, so a weight put in the wrong place shows
        for name, parameter in model.named_parameters():
            if "norm" in name or name.endswith("bias"):
                parameter.normal_(1.0 if "norm" in name else 0.0, 0.3)
    return model


def llama_with_biases_and_linear_rope():
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                       num_key_value_heads=KV_HEADS, intermediate_size=128, attention_bias=True,
                       rope_scaling={"rope_type": "linear", "factor": 2.0}, max_position_embeddings=64)


def qwen2_with_a_sliding_layer():
    from transformers import Qwen2Config

    # layer 0 full attention, layer 1 a window of 5 positions
    return Qwen2Config(vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                       num_key_value_heads=KV_HEADS, intermediate_size=128, use_sliding_window=True,
                       sliding_window=5, max_window_layers=1, max_position_embeddings=64)


def run(session, embeds: np.ndarray, past: list[np.ndarray], start: int) -> list[np.ndarray]:
    seq = embeds.shape[1]
    feed = {"inputs_embeds": embeds, "attention_mask": np.ones((1, start + seq), dtype=np.int64),
            "position_ids": np.arange(start, start + seq, dtype=np.int64)[None, :],
            "logits_to_keep": np.zeros(1, dtype=np.int64)}
    for index in range(LAYERS):
        feed[f"past_key_values.{index}.key"], feed[f"past_key_values.{index}.value"] = past[2 * index:2 * index + 2]
    return session.run(None, feed)


@pytest.mark.parametrize("text_config", [llama_with_biases_and_linear_rope, qwen2_with_a_sliding_layer])
def test_written_decoder_equals_transformers_with_and_without_past(tmp_path, text_config):
    import onnx

    from training.export.decoder_graph import decoder_shape, write_decoder_graph

    model = tiny_llava(text_config())
    path = write_decoder_graph(model, tmp_path / "decoder.onnx")
    onnx.checker.check_model(str(path))
    shape = decoder_shape(model)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    embeds = torch.randn(1, 12, HIDDEN)
    with torch.no_grad():
        expected = model.lm_head(model.model.language_model(inputs_embeds=embeds).last_hidden_state).numpy()
    empty = [np.zeros((1, shape.num_kv_heads, 0, shape.head_dim), np.float32)] * (2 * LAYERS)
    whole = run(session, embeds.numpy(), empty, 0)
    np.testing.assert_allclose(whole[0], expected, atol=1e-5)
    first = run(session, embeds[:, :7].numpy(), empty, 0)
    rest = run(session, embeds[:, 7:].numpy(), first[1:], 7)
    np.testing.assert_allclose(rest[0], expected[:, 7:], atol=1e-5)
    assert rest[1].shape == (1, KV_HEADS, 12, HIDDEN // HEADS)


def test_sliding_windows_are_read_per_layer():
    """Qwen2's layer types (layer 0 full, layer 1 sliding); Llama has none. 12 positions against a window of 5
    make the window bite in the parity test above."""
    from training.export.decoder_graph import decoder_shape

    assert decoder_shape(tiny_llava(qwen2_with_a_sliding_layer())).windows == (None, 5)
    assert decoder_shape(tiny_llava(llama_with_biases_and_linear_rope())).windows == (None, None)


def test_a_decoder_it_cannot_write_is_traced_instead():
    from transformers import LlamaConfig

    from training.export.decoder import decoder_method
    from training.export.errors import ExportError

    dynamic = LlamaConfig(vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=1, num_attention_heads=HEADS,
                          intermediate_size=128, rope_scaling={"rope_type": "dynamic", "factor": 2.0})
    model = tiny_llava(dynamic)
    assert decoder_method(model, "auto") == "trace"
    with pytest.raises(ExportError, match="rotary type 'dynamic'"):
        decoder_method(model, "direct")
    assert decoder_method(tiny_llava(llama_with_biases_and_linear_rope()), "auto") == "direct"


@pytest.mark.parametrize("keep", [1, 3])
def test_written_decoder_computes_the_head_over_the_last_positions_it_is_asked_for(tmp_path, keep):
    """`logits_to_keep` as transformers reads it: 0 every position, k the last k, with the same values."""
    from engine.bundle import LOGITS_TO_KEEP
    from training.export.decoder_graph import decoder_shape, write_decoder_graph

    model = tiny_llava(llama_with_biases_and_linear_rope())
    session = ort.InferenceSession(str(write_decoder_graph(model, tmp_path / "decoder.onnx")),
                                   providers=["CPUExecutionProvider"])
    shape = decoder_shape(model)
    embeds = torch.randn(1, 9, HIDDEN).numpy()
    feed = {"inputs_embeds": embeds, "attention_mask": np.ones((1, 9), dtype=np.int64),
            "position_ids": np.arange(9, dtype=np.int64)[None, :]}
    for index in range(LAYERS):
        for part in ("key", "value"):
            feed[f"past_key_values.{index}.{part}"] = np.zeros((1, shape.num_kv_heads, 0, shape.head_dim), np.float32)
    every = session.run(None, {**feed, LOGITS_TO_KEEP: np.zeros(1, dtype=np.int64)})
    kept = session.run(None, {**feed, LOGITS_TO_KEEP: np.array([keep], dtype=np.int64)})
    assert every[0].shape == (1, 9, VOCAB)
    assert kept[0].shape == (1, keep, VOCAB)
    np.testing.assert_allclose(kept[0], every[0][:, -keep:], atol=1e-6)
    for whole_cache, kept_cache in zip(every[1:], kept[1:], strict=True):  # the cache is of every position still
        np.testing.assert_array_equal(whole_cache, kept_cache)
