"""The decoder graph written directly from the weights, a layer at a time (no tracing).

Tracing a decoder, even on weightless placeholders, costs about its fp32 size in memory for a moment;
the Llama-family decoders (Llama, Mistral, Qwen2) are few standard ops, so their graph is written here
with `onnx.helper`, each weight cast to fp32 and appended to `<target>.data` as it is reached (in row
blocks for the large ones). Peak memory is the model as loaded plus one block.

Same I/O as the traced graph (`engine/bundle.py`): `inputs_embeds` [batch, seq, hidden], `attention_mask`
[batch, past + seq], `position_ids` [batch, seq], `past_key_values.{i}.key/.value` [batch, kv_heads, past,
head_dim] -> `logits` [batch, seq, vocab], `present.{i}.key/.value`; and `logits_to_keep` int64 [1], as
transformers' argument of that name: the head runs over the last that many positions only (0: all). The ops follow transformers' eager
code: RMSNorm in fp32 (Pow, ReduceMean, Add, Sqrt, Div: the pattern ONNX Runtime fuses), rotary embeddings
from the model's own `inv_freq` and attention scaling, attention with the causal (and sliding-window)
mask as an additive bias, grouped KV heads repeated, SwiGLU MLP. MatMul weights are stored transposed
([in, out]) so the int4 and int8 quantizers find a constant B.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from engine.bundle import LOGITS_TO_KEEP
from training.export.errors import ExportError
from training.export.external_data import ExternalDataFile

DECODER_GRAPH_OPSET = 18
DECODER_IR_VERSION = 10  # read by every ONNX Runtime the engine supports
BLOCK_BYTES = 64 << 20  # the largest fp32 piece of a weight held at once while writing it
# rotary types whose frequencies do not depend on the sequence length (the others recompute them at run time)
STATIC_ROPE_TYPES = ("default", "linear", "llama3")


@dataclass(frozen=True)
class DecoderShape:
    hidden_size: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int
    rms_norm_eps: float
    windows: tuple[int | None, ...]  # per layer: the sliding window, or None for full attention


def unsupported_reason(model) -> str | None:
    """Why this LLaVA's decoder cannot be written directly (it is then traced), or None when it can."""
    text = model.config.text_config
    if getattr(text, "model_type", None) not in ("llama", "mistral", "qwen2"):
        return f"decoder type {getattr(text, 'model_type', None)!r}"
    if getattr(text, "hidden_act", "silu") != "silu":
        return f"activation {text.hidden_act!r}"
    rope = getattr(model.model.language_model, "rotary_emb", None)
    if rope is None or getattr(rope, "rope_type", "default") not in STATIC_ROPE_TYPES:
        return f"rotary type {getattr(rope, 'rope_type', None)!r}"
    for layer in model.model.language_model.layers:
        attention, mlp = getattr(layer, "self_attn", None), getattr(layer, "mlp", None)
        if attention is None or mlp is None or not all(
                hasattr(attention, name) for name in ("q_proj", "k_proj", "v_proj", "o_proj")) or not all(
                hasattr(mlp, name) for name in ("gate_proj", "up_proj", "down_proj")):
            return "a layer without the Llama attention and MLP projections"
    return None


def decoder_shape(model) -> DecoderShape:
    text = model.config.text_config
    heads = int(text.num_attention_heads)
    layers = int(text.num_hidden_layers)
    return DecoderShape(
        hidden_size=int(text.hidden_size), num_heads=heads,
        num_kv_heads=int(getattr(text, "num_key_value_heads", None) or heads),
        head_dim=int(getattr(text, "head_dim", None) or text.hidden_size // heads),
        vocab_size=int(text.vocab_size), rms_norm_eps=float(text.rms_norm_eps),
        windows=tuple(_sliding_window(text, index) for index in range(layers)))


def _sliding_window(text, layer: int) -> int | None:
    window = getattr(text, "sliding_window", None)
    layer_types = getattr(text, "layer_types", None)
    if layer_types is not None and layer_types[layer] != "sliding_attention":
        return None
    if text.model_type == "qwen2" and layer_types is None and not getattr(text, "use_sliding_window", False):
        return None
    # a window as long as the positions never masks anything
    if window is None or window >= int(text.max_position_embeddings):
        return None
    return int(window)


def write_decoder_graph(model, target: Path) -> Path:
    """Write the fp32 decoder of `model` (a LLaVA, any dtype) to `target`, its weights in `<target>.data`."""
    import onnx

    reason = unsupported_reason(model)
    if reason:
        raise ExportError(f"the decoder cannot be written directly: {reason}")
    target = Path(target)
    shape = decoder_shape(model)
    language = model.model.language_model
    rope = language.rotary_emb
    with _WeightFile(target.parent / f"{target.name}.data") as weights, torch.no_grad():
        builder = _Builder(shape, weights)
        hidden = builder.inputs()
        builder.rotary(rope.inv_freq.detach().to(torch.float32).numpy(), float(rope.attention_scaling))
        builder.attention_biases()
        for index, layer in enumerate(language.layers):
            hidden = builder.layer(index, layer, hidden)
        hidden = builder.rms_norm(hidden, language.norm.weight, "model.norm")
        hidden = builder.kept_positions(hidden)
        builder.linear(hidden, model.lm_head, "lm_head", output="logits")
        graph = builder.model()
    onnx.save_model(graph, str(target))
    return target


def layer_output(index: int) -> str:
    """The hidden states after layer `index`: where the graph can be cut into parts (`parity.py` runs a
    large decoder a part at a time)."""
    return f"model.layers.{index}.output"


class _WeightFile(ExternalDataFile):
    """fp32 tensors appended to one external-data file."""

    def tensor(self, name: str, value: torch.Tensor, transpose: bool = False):
        """A TensorProto naming `value` (cast to fp32, `.t()` when `transpose`) written to the file in row blocks."""
        from onnx import TensorProto

        value = value.detach()
        matrix = value.t() if transpose else value
        offset = self.align()
        if matrix.dim() == 0:
            matrix = matrix.reshape(1)
        row_bytes = 4 * max(1, math.prod(matrix.shape[1:]))
        rows = max(1, BLOCK_BYTES // row_bytes)
        for start in range(0, matrix.shape[0], rows):
            block = matrix[start:start + rows].to(torch.float32).contiguous().numpy()
            self.file.write(memoryview(block).cast("B"))
            del block
        return self.point(TensorProto(name=name, data_type=TensorProto.FLOAT, dims=list(matrix.shape)), offset)


class _Builder:
    """Nodes, initializers and graph I/O of one decoder, added in order."""

    def __init__(self, shape: DecoderShape, weights: _WeightFile) -> None:
        self.shape = shape
        self.weights = weights
        self.nodes: list = []
        self.initializers: list = []
        self.graph_inputs: list = []
        self.graph_outputs: list = []
        self._constants: dict[tuple, str] = {}

    # ------------------------------------------------------------------ plumbing
    def node(self, op: str, inputs: list[str], output: str | None = None, **attributes) -> str:
        from onnx import helper

        output = output or f"/{op}_{len(self.nodes)}"
        self.nodes.append(helper.make_node(op, inputs, [output], name=f"{op}_{len(self.nodes)}", **attributes))
        return output

    def constant(self, values, dtype=np.int64) -> str:
        """A small inline initializer (shapes, axes, scalars), one per distinct value."""
        from onnx import numpy_helper

        array = np.asarray(values, dtype=dtype)
        key = (array.dtype.str, array.shape, array.tobytes())
        if key not in self._constants:
            name = f"const_{len(self._constants)}"
            self.initializers.append(numpy_helper.from_array(array, name))
            self._constants[key] = name
        return self._constants[key]

    def weight(self, name: str, value: torch.Tensor, transpose: bool = False) -> str:
        self.initializers.append(self.weights.tensor(name, value, transpose))
        return name

    def model(self):
        from onnx import helper

        graph = helper.make_graph(self.nodes, "decoder", self.graph_inputs, self.graph_outputs, self.initializers)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", DECODER_GRAPH_OPSET)],
                                  producer_name="raddraft export (decoder written from the weights)")
        model.ir_version = DECODER_IR_VERSION
        return model

    # ------------------------------------------------------------------ graph parts
    def inputs(self) -> str:
        from onnx import TensorProto, helper

        shape = self.shape
        self.graph_inputs += [
            helper.make_tensor_value_info("inputs_embeds", TensorProto.FLOAT,
                                          ["batch_size", "sequence_length", shape.hidden_size]),
            helper.make_tensor_value_info("attention_mask", TensorProto.INT64,
                                          ["batch_size", "total_sequence_length"]),
            helper.make_tensor_value_info("position_ids", TensorProto.INT64, ["batch_size", "sequence_length"])]
        self.graph_outputs.append(helper.make_tensor_value_info(
            "logits", TensorProto.FLOAT, ["batch_size", "kept_length", shape.vocab_size]))
        for index in range(len(shape.windows)):
            for part in ("key", "value"):
                self.graph_inputs.append(helper.make_tensor_value_info(
                    f"past_key_values.{index}.{part}", TensorProto.FLOAT,
                    ["batch_size", shape.num_kv_heads, "past_sequence_length", shape.head_dim]))
                self.graph_outputs.append(helper.make_tensor_value_info(
                    f"present.{index}.{part}", TensorProto.FLOAT,
                    ["batch_size", shape.num_kv_heads, "total_sequence_length", shape.head_dim]))
        return "inputs_embeds"

    def rotary(self, inv_freq: np.ndarray, scaling: float) -> None:
        """cos, sin [batch, 1, seq, head_dim] of the positions, as transformers' rotary embedding computes them."""
        from onnx import TensorProto

        positions = self.node("Unsqueeze", [self.node("Cast", ["position_ids"], to=TensorProto.FLOAT),
                                            self.constant([-1])])
        freqs = self.node("Mul", [positions, self.constant(inv_freq, np.float32)])
        angles = self.node("Unsqueeze", [self.node("Concat", [freqs, freqs], axis=-1), self.constant([1])])
        cos, sin = self.node("Cos", [angles]), self.node("Sin", [angles])
        if scaling != 1.0:
            cos = self.node("Mul", [cos, self.constant(scaling, np.float32)])
            sin = self.node("Mul", [sin, self.constant(scaling, np.float32)])
        self.cos, self.sin = cos, sin

    def attention_biases(self) -> None:
        """0 where a query may attend a key, the float32 minimum elsewhere: [batch, 1, seq, total], one per window."""
        from onnx import TensorProto

        total = self.node("Squeeze", [self.node("Shape", ["attention_mask"], start=1, end=2), self.constant([0])])
        # from position_ids, not inputs_embeds, so a part of the graph after the first layer needs no embeddings
        seq = self.node("Squeeze", [self.node("Shape", ["position_ids"], start=1, end=2), self.constant([0])])
        one, zero = self.constant(1), self.constant(0)
        query = self.node("Unsqueeze", [self.node("Range", [self.node("Sub", [total, seq]), total, one]),
                                        self.constant([1])])  # [seq, 1]: each query's position
        key = self.node("Range", [zero, total, one])  # [total]
        causal = self.node("LessOrEqual", [key, query])
        padding = self.node("Unsqueeze", [self.node("Cast", ["attention_mask"], to=TensorProto.BOOL),
                                          self.constant([1, 2])])
        self.biases: dict[int | None, str] = {}
        for window in sorted(set(self.shape.windows), key=lambda w: -1 if w is None else w):
            allowed = causal
            if window is not None:
                earliest = self.node("Sub", [query, self.constant(window)])
                allowed = self.node("And", [allowed, self.node("Greater", [key, earliest])])
            allowed = self.node("And", [allowed, padding])
            self.biases[window] = self.node("Where", [allowed, self.constant(0.0, np.float32),
                                                      self.constant(np.finfo(np.float32).min, np.float32)])

    def kept_positions(self, hidden: str) -> str:
        """hidden[:, -logits_to_keep:], every position for 0. A prompt's next token needs the logits of
        its last position only; the head over all of them costs a 1.5 B Qwen2's 733-token prefill about
        0.34 TFLOP and a 445 MB buffer (vocabulary 151,936)."""
        from onnx import TensorProto, helper

        # an input, not an overridable initializer with a default: ONNX Runtime's I/O binding cannot bind those
        self.graph_inputs.append(helper.make_tensor_value_info(LOGITS_TO_KEEP, TensorProto.INT64, [1]))
        start = self.node("Neg", [LOGITS_TO_KEEP])
        return self.node("Slice", [hidden, start, self.constant([np.iinfo(np.int64).max]), self.constant([1])])

    def rms_norm(self, hidden: str, weight: torch.Tensor, prefix: str) -> str:
        squared = self.node("Pow", [hidden, self.constant(2.0, np.float32)])
        mean = self.node("ReduceMean", [squared, self.constant([-1])], keepdims=1)
        root = self.node("Sqrt", [self.node("Add", [mean, self.constant(self.shape.rms_norm_eps, np.float32)])])
        normed = self.node("Div", [hidden, root])
        return self.node("Mul", [self.weight(f"{prefix}.weight", weight), normed])

    def linear(self, hidden: str, module, prefix: str, output: str | None = None) -> str:
        bias = getattr(module, "bias", None)
        product = self.node("MatMul", [hidden, self.weight(f"{prefix}.weight_t", module.weight, transpose=True)],
                            output=None if bias is not None else output)
        if bias is None:
            return product
        return self.node("Add", [product, self.weight(f"{prefix}.bias", bias)], output=output)

    def heads(self, projected: str, count: int) -> str:
        """[batch, seq, count * head_dim] -> [batch, count, seq, head_dim]."""
        split = self.node("Reshape", [projected, self.constant([0, 0, count, self.shape.head_dim])])
        return self.node("Transpose", [split], perm=[0, 2, 1, 3])

    def rotate(self, states: str) -> str:
        """states * cos + rotate_half(states) * sin."""
        half = self.shape.head_dim // 2
        first = self.node("Slice", [states, self.constant([0]), self.constant([half]), self.constant([-1])])
        second = self.node("Slice", [states, self.constant([half]), self.constant([self.shape.head_dim]),
                                     self.constant([-1])])
        rotated = self.node("Concat", [self.node("Neg", [second]), first], axis=-1)
        return self.node("Add", [self.node("Mul", [states, self.cos]), self.node("Mul", [rotated, self.sin])])

    def repeat_kv(self, states: str) -> str:
        repeats = self.shape.num_heads // self.shape.num_kv_heads
        if repeats == 1:
            return states
        widened = self.node("Expand", [self.node("Unsqueeze", [states, self.constant([2])]),
                                       self.constant([1, 1, repeats, 1, 1])])
        return self.node("Reshape", [widened, self.constant([0, self.shape.num_heads, -1, self.shape.head_dim])])

    def layer(self, index: int, layer, hidden: str) -> str:
        shape = self.shape
        prefix = f"model.layers.{index}"
        attention, mlp = layer.self_attn, layer.mlp
        normed = self.rms_norm(hidden, layer.input_layernorm.weight, f"{prefix}.input_layernorm")
        query = self.rotate(self.heads(self.linear(normed, attention.q_proj, f"{prefix}.self_attn.q_proj"),
                                       shape.num_heads))
        key = self.rotate(self.heads(self.linear(normed, attention.k_proj, f"{prefix}.self_attn.k_proj"),
                                     shape.num_kv_heads))
        value = self.heads(self.linear(normed, attention.v_proj, f"{prefix}.self_attn.v_proj"), shape.num_kv_heads)
        keys = self.node("Concat", [f"past_key_values.{index}.key", key], f"present.{index}.key", axis=2)
        values = self.node("Concat", [f"past_key_values.{index}.value", value], f"present.{index}.value", axis=2)
        scores = self.node("MatMul", [query, self.node("Transpose", [self.repeat_kv(keys)], perm=[0, 1, 3, 2])])
        scores = self.node("Mul", [scores, self.constant(shape.head_dim ** -0.5, np.float32)])
        scores = self.node("Add", [scores, self.biases[shape.windows[index]]])
        context = self.node("MatMul", [self.node("Softmax", [scores], axis=-1), self.repeat_kv(values)])
        context = self.node("Reshape", [self.node("Transpose", [context], perm=[0, 2, 1, 3]),
                                        self.constant([0, 0, shape.num_heads * shape.head_dim])])
        hidden = self.node("Add", [hidden, self.linear(context, attention.o_proj, f"{prefix}.self_attn.o_proj")])
        normed = self.rms_norm(hidden, layer.post_attention_layernorm.weight, f"{prefix}.post_attention_layernorm")
        gate = self.linear(normed, mlp.gate_proj, f"{prefix}.mlp.gate_proj")
        activated = self.node("Mul", [gate, self.node("Sigmoid", [gate])])
        up = self.linear(normed, mlp.up_proj, f"{prefix}.mlp.up_proj")
        down = self.linear(self.node("Mul", [activated, up]), mlp.down_proj, f"{prefix}.mlp.down_proj")
        return self.node("Add", [hidden, down], output=layer_output(index))
