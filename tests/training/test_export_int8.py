"""The int8 variant written a weight at a time is what onnxruntime's quantize_dynamic writes, and the vision
export leaves no fp32 copy of the tower behind."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the export needs the training extra (torch)")
pytest.importorskip("onnxruntime")

from test_export_decoder_graph import llama_with_biases_and_linear_rope, tiny_llava


def node_signatures(graph) -> list:
    from onnx import helper

    return sorted((node.op_type, node.name, tuple(node.input), tuple(node.output),
                   tuple((a.name, str(helper.get_attribute_value(a))) for a in node.attribute)) for node in graph.node)


def initializer_values(model, base_dir) -> dict:
    from onnx import numpy_helper

    return {tensor.name: numpy_helper.to_array(tensor, str(base_dir)) for tensor in model.graph.initializer}


@pytest.mark.parametrize("per_channel", [True, False])
def test_streamed_int8_decoder_equals_quantize_dynamic(tmp_path, per_channel):
    import onnx
    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from training.export.decoder_graph import write_decoder_graph
    from training.export.quantize import QuantizeOptions, quantize_int8

    model = tiny_llava(llama_with_biases_and_linear_rope())
    with torch.no_grad():  # an all-zero output channel: onnxruntime's scale-1 fallback
        model.model.language_model.layers[0].mlp.up_proj.weight[3].zero_()
    source = write_decoder_graph(model, tmp_path / "decoder.onnx")
    reference = tmp_path / "reference.onnx"
    quantize_dynamic(str(source), str(reference), weight_type=QuantType.QInt8, per_channel=per_channel,
                     op_types_to_quantize=["MatMul", "Gemm"], extra_options={"MatMulConstBOnly": True})
    streamed = quantize_int8(source, tmp_path / "decoder.int8.onnx", QuantizeOptions(per_channel=per_channel))

    expected, written = onnx.load(str(reference)), onnx.load(str(streamed), load_external_data=False)
    assert node_signatures(written.graph) == node_signatures(expected.graph)
    assert (tmp_path / "decoder.int8.onnx.data").stat().st_size > 0  # the weights are external data
    want, got = initializer_values(expected, tmp_path), initializer_values(written, tmp_path)
    assert set(got) == set(want)
    for name, value in want.items():
        assert got[name].dtype == value.dtype and got[name].shape == value.shape, name
        np.testing.assert_array_equal(got[name], value, err_msg=name)

    rng = np.random.default_rng(0)
    feed = {"inputs_embeds": rng.standard_normal((1, 5, 64)).astype(np.float32),
            "attention_mask": np.ones((1, 5), np.int64), "position_ids": np.arange(5, dtype=np.int64)[None],
            "logits_to_keep": np.zeros(1, np.int64)}
    for index in range(2):
        for part in ("key", "value"):
            feed[f"past_key_values.{index}.{part}"] = np.zeros((1, 2, 0, 16), np.float32)
    run = lambda path: ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(["logits"], feed)[0]
    np.testing.assert_array_equal(run(streamed), run(reference))


def test_vision_export_frees_its_fp32_copy_of_the_tower(tmp_path):
    import gc
    import weakref

    from training.export import graphs

    model = tiny_llava(llama_with_biases_and_linear_rope()).half()
    copies = []
    original_init = graphs.VisionGraph.__init__

    def remember_copy(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        copies.extend(weakref.ref(parameter) for parameter in self.parameters())

    graphs.VisionGraph.__init__ = remember_copy
    try:
        graphs.export_vision(model, tmp_path / "vision.onnx", image_size=32)
    finally:
        graphs.VisionGraph.__init__ = original_init
    gc.collect()
    assert copies, "export_vision made no fp32 copy to check"
    alive = [ref() for ref in copies if ref() is not None]
    assert not alive, f"{len(alive)} fp32 tensors of the tower copy outlive the vision export"
