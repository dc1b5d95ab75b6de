"""The export's weight handling that keeps its memory bounded, checked on small graphs."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

pytest.importorskip("torch", reason="the export needs the training extra (torch)")

from training.export.decoder import gather_external_data  # noqa: E402


def two_matmuls(rng) -> onnx.ModelProto:
    first = numpy_helper.from_array(rng.standard_normal((8, 16)).astype(np.float32), "w1")
    second = numpy_helper.from_array(rng.standard_normal((16, 4)).astype(np.float32), "w2")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w1"], ["h"]), helper.make_node("MatMul", ["h", "w2"], ["y"])],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 4])], [first, second])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def run(path, x):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def test_per_tensor_weight_files_are_gathered_into_one_data_file(tmp_path):
    rng = np.random.default_rng(0)
    traced = tmp_path / "work" / "model.onnx"
    traced.parent.mkdir()
    onnx.save_model(two_matmuls(rng), str(traced), save_as_external_data=True, all_tensors_to_one_file=False,
                    size_threshold=0)  # as torch.onnx.export writes a graph over 2 GB: one file per tensor
    assert len(list(traced.parent.iterdir())) == 3
    x = rng.standard_normal((3, 8)).astype(np.float32)
    expected = run(traced, x)

    target = tmp_path / "decoder.onnx"
    gather_external_data(traced, target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["decoder.onnx", "decoder.onnx.data", "work"]
    locations = {entry.value for tensor in onnx.load(str(target), load_external_data=False).graph.initializer
                 for entry in tensor.external_data if entry.key == "location"}
    assert locations == {"decoder.onnx.data"}
    np.testing.assert_array_equal(run(target, x), expected)


def test_a_graph_without_external_data_is_moved_as_is(tmp_path):
    source = tmp_path / "model.onnx"
    onnx.save_model(two_matmuls(np.random.default_rng(1)), str(source))
    content = source.read_bytes()
    gather_external_data(source, tmp_path / "decoder.onnx")
    assert (tmp_path / "decoder.onnx").read_bytes() == content and not source.exists()
