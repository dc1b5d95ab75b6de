"""The int8 variant of a graph written a weight at a time: what `quantize_dynamic` writes, without holding the graph.

onnxruntime's `quantize_dynamic` loads the whole graph with its weights (and reloads it after shape
inference), so a decoder's int8 step held about three times its fp32 size. Here the graph is read without
its external weights, and each MatMul whose B is a float initializer gets the same nodes and numbers
`quantize_dynamic(weight_type=QInt8, MatMulConstBOnly)` gives it:

    DynamicQuantizeLinear(A) -> MatMulInteger(A_q, B_q, A_zp, B_zp) -> Cast(float) -> Mul(A_scale * B_scale)

B quantized symmetrically to int8 (range -127..127, zero point 0) per output channel (B's last axis) or
per tensor, a tensor whose range is below float32's smallest normal getting scale 1, as
`onnxruntime.quantization.quant_utils.compute_scale_zp` does; one DynamicQuantizeLinear per activation
shared by the MatMuls reading it; the same tensor and node names. B is read from the fp32 data file in row
blocks, twice (its column ranges, then its values), and written to `<target>.data` as int8; the weights
left as they were (norms, biases) are copied there too. Peak memory: the graph's structure plus one block.
`tests/training/test_export_int8.py` checks the result equals `quantize_dynamic`'s, weight for weight.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from training.export.errors import ExportError
from training.export.external_data import ExternalDataFile

BLOCK_BYTES = 64 << 20  # the largest fp32 piece of a weight read at once
INT8_LIMIT = 127  # symmetric int8: -127..127, as onnxruntime quantizes QInt8 weights


@dataclass(frozen=True)
class _Quantized:
    values: str
    scale: str
    zero_point: str


def quantize_int8_streamed(source: Path, target: Path, per_channel: bool = True) -> Path:
    """Write the int8 graph of `source` (an fp32 graph, weights inline or in external data) to `target`,
    its weights in `<target>.data`."""
    import onnx

    source, target = Path(source), Path(target)
    model = onnx.load(str(source), load_external_data=False)
    graph = model.graph
    initializers = {tensor.name: tensor for tensor in graph.initializer}
    with _Int8Data(target.parent / f"{target.name}.data", source.parent) as data:
        rewrite = _Rewrite(initializers, data, per_channel)
        nodes = [new for node in graph.node for new in rewrite.node(node)]
        used = {name for node in nodes for name in node.input}
        kept = [data.copied(tensor) for tensor in graph.initializer if tensor.name in used]
        del graph.node[:]
        graph.node.extend(nodes)
        del graph.initializer[:]
        graph.initializer.extend(kept + rewrite.new_initializers)
    onnx.save_model(model, str(target))
    return target


class _Rewrite:
    """Nodes of the int8 graph, one source node at a time."""

    def __init__(self, initializers: dict, data: _Int8Data, per_channel: bool) -> None:
        self.initializers = initializers
        self.data = data
        self.per_channel = per_channel
        self.new_initializers: list = []
        self.activations: dict[str, _Quantized] = {}
        self.weights: dict[str, _Quantized] = {}

    def node(self, node) -> list:
        if not self._quantizes(node):
            return [node]
        from onnx import TensorProto, helper

        new: list = []
        activation = self._activation(node.input[0], new)
        weight = self._weight(self.initializers[node.input[1]])
        name = f"{node.name}_quant" if node.name else ""
        product = f"{node.output[0]}_output_quantized"
        new.append(helper.make_node("MatMulInteger", [activation.values, weight.values, activation.zero_point,
                                                      weight.zero_point], [product], name))
        new.append(helper.make_node("Cast", [product], [f"{product}_cast_output"], f"{product}_cast",
                                    to=TensorProto.FLOAT))
        scales = f"{name}_scales_mul" if name else f"{activation.scale}_{weight.scale}_mul"
        new.append(helper.make_node("Mul", [activation.scale, weight.scale], [f"{scales}:0"], scales))
        new.append(helper.make_node("Mul", [f"{product}_cast_output", f"{scales}:0"], [node.output[0]],
                                    f"{name}_output_scale_mul" if name else ""))
        return new

    def _quantizes(self, node) -> bool:
        """A MatMul with a constant float B and a computed A: the ones quantize_dynamic quantizes with
        MatMulConstBOnly (it skips the others too)."""
        from onnx import TensorProto

        if node.op_type != "MatMul" or node.domain not in ("", "ai.onnx") or len(node.input) != 2:
            return False
        weight = self.initializers.get(node.input[1])
        return weight is not None and weight.data_type == TensorProto.FLOAT and node.input[0] not in self.initializers

    def _activation(self, name: str, new: list) -> _Quantized:
        from onnx import helper

        if name not in self.activations:
            quantized = _Quantized(f"{name}_quantized", f"{name}_scale", f"{name}_zero_point")
            new.append(helper.make_node("DynamicQuantizeLinear", [name],
                                        [quantized.values, quantized.scale, quantized.zero_point],
                                        f"{name}_QuantizeLinear"))
            self.activations[name] = quantized
        return self.activations[name]

    def _weight(self, tensor) -> _Quantized:
        from onnx import numpy_helper

        if tensor.name not in self.weights:
            quantized = _Quantized(f"{tensor.name}_quantized", f"{tensor.name}_scale", f"{tensor.name}_zero_point")
            values, scale = self.data.quantized(tensor, quantized.values, self.per_channel)
            self.new_initializers += [values, numpy_helper.from_array(scale, quantized.scale),
                                      numpy_helper.from_array(np.zeros(scale.shape, np.int8), quantized.zero_point)]
            self.weights[tensor.name] = quantized
        return self.weights[tensor.name]


def int8_scales(low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """float32 scales of symmetric int8 for ranges [low, high] (float32), as onnxruntime's compute_scale_zp."""
    low, high = np.asarray(low, np.float32), np.asarray(high, np.float32)  # a per-tensor range is a scalar
    absmax = np.maximum(np.abs(np.minimum(low, 0)), np.abs(np.maximum(high, 0))).astype(np.float64)
    scale = (absmax - (-absmax)) / (2 * INT8_LIMIT)
    # a zero (or denormal) range gets scale 1: onnxruntime's fallback
    return np.where(scale < np.finfo(np.float32).tiny, 1.0, scale).astype(np.float32)


def quantize_rows(rows: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """int8 of fp32 `rows` at `scale` (zero point 0), rounded and clipped as onnxruntime's quantize_nparray."""
    values = (rows / scale).round()
    np.clip(values, -128, 127, out=values)
    return values.astype(np.int8)


class _Int8Data(ExternalDataFile):
    """The int8 graph's external data: quantized weights and copied ones."""

    def __init__(self, path: Path, source_dir: Path) -> None:
        super().__init__(path)
        self.source_dir = source_dir

    def quantized(self, tensor, name: str, per_channel: bool):
        """Write `tensor` as int8: (the TensorProto `name` pointing at it, its scale per column or a scalar)."""
        from onnx import TensorProto

        dims = list(tensor.dims)
        low, high = None, None
        for rows in self._row_blocks(tensor):
            block_low, block_high = (rows.min(axis=0), rows.max(axis=0)) if per_channel else (rows.min(), rows.max())
            low = block_low if low is None else np.minimum(low, block_low)
            high = block_high if high is None else np.maximum(high, block_high)
        if low is None:  # an empty tensor: nothing to scale
            low = high = np.zeros(dims[-1:] if per_channel else (), np.float32)
        scale = int8_scales(low, high)
        offset = self.align()
        for rows in self._row_blocks(tensor):
            self.file.write(memoryview(quantize_rows(rows, scale)).cast("B"))
        return self.point(TensorProto(name=name, data_type=TensorProto.INT8, dims=dims), offset), scale

    def copied(self, tensor):
        """`tensor` pointing into this file: an external weight's bytes copied here, an inline one as it is."""
        from onnx.external_data_helper import uses_external_data

        if not uses_external_data(tensor):
            return tensor
        offset = self.align()
        location, start, length = self._where(tensor)
        with open(location, "rb") as source:
            source.seek(start)
            remaining = length
            while remaining > 0:
                chunk = source.read(min(remaining, BLOCK_BYTES))
                if not chunk:
                    raise ExportError(f"{location.name} ends before the weight {tensor.name}")
                self.file.write(chunk)
                remaining -= len(chunk)
        del tensor.external_data[:]
        return self.point(tensor, offset)

    def _row_blocks(self, tensor) -> Iterator[np.ndarray]:
        """The fp32 tensor as [rows, last dim] blocks of at most BLOCK_BYTES, read from disk one at a time."""
        from onnx import numpy_helper
        from onnx.external_data_helper import uses_external_data

        dims = list(tensor.dims) or [1]
        width = dims[-1]
        rows = int(np.prod(dims[:-1], dtype=np.int64))
        if not width or not rows:
            return
        if not uses_external_data(tensor):
            yield numpy_helper.to_array(tensor).astype(np.float32, copy=False).reshape(rows, width)
            return
        location, start, length = self._where(tensor)
        if length < 4 * rows * width:
            raise ExportError(f"the weight {tensor.name} has {length} bytes in {location.name}, "
                              f"expected {4 * rows * width}")
        per_block = max(1, BLOCK_BYTES // (4 * width))
        with open(location, "rb") as source:
            source.seek(start)
            for first in range(0, rows, per_block):
                count = min(per_block, rows - first)
                block = np.empty((count, width), np.float32)
                if source.readinto(memoryview(block).cast("B")) != block.nbytes:
                    raise ExportError(f"{location.name} ends inside the weight {tensor.name}")
                yield block

    def _where(self, tensor) -> tuple[Path, int, int]:
        from onnx.external_data_helper import ExternalDataInfo

        info = ExternalDataInfo(tensor)
        location = self.source_dir / info.location
        length = info.length if info.length else location.stat().st_size - (info.offset or 0)
        return location, int(info.offset or 0), int(length)

