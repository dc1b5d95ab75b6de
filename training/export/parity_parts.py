"""The parity check of a large decoder, run a part at a time.

A decoder's fp32 graph is twice an fp16 checkpoint's size, so a 7 B decoder cannot be opened whole by
ONNX Runtime within the export's memory bound. The decoder written from the weights names the hidden
states after each layer (`decoder_graph.layer_output`), so it is cut there: a small graph file per part
(a layer, then the final norm and head) that points into the bundle's own external data, opened, run over
the whole prompt + torch's continuation in one call (teacher-forced), and closed before the next. The
vision and embedding graphs are run one after the other the same way. Only one part's weights are in
memory at a time; the logits are those of the bundle's graph, node for node (fp32 and int4: identical to the
whole graph's; fp16 within 3e-4, ONNX Runtime fusing a few casts across the cuts).

Greedy tokens come from the same pass: greedy decoding reproduces torch's tokens up to the first position
whose teacher-forced argmax differs, and that argmax is the token it takes there.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.bundle import LOGITS_TO_KEEP, Architecture, GraphFiles
from training.export.decoder_graph import layer_output

# A decoder graph larger than this (with its data) is checked a part at a time. Low, since ONNX Runtime on
# CPU holds more than the file: fp16 weights are cast to fp32 beside the originals, fp32 ones pre-packed.
PARTS_ABOVE_BYTES = 256 << 20
PART_FILE = ".parity-part.onnx"


def runs_in_parts(bundle_dir: Path, files: GraphFiles, arch: Architecture) -> bool:
    """Whether the variant's decoder is large and can be cut at its layers' outputs."""
    import onnx

    path = Path(bundle_dir) / files.decoder
    data = path.with_name(path.name + ".data")
    size = path.stat().st_size + (data.stat().st_size if data.exists() else 0)
    if size <= PARTS_ABOVE_BYTES:
        return False
    graph = onnx.load(str(path), load_external_data=False).graph
    produced = {name for node in graph.node for name in node.output}
    return all(layer_output(index) in produced for index in range(arch.num_layers))


def logits_in_parts(bundle_dir: Path, files: GraphFiles, arch: Architecture, ids: list[int],
                    pixel_values: np.ndarray, threads: int | None = None, keep: int = 0) -> np.ndarray:
    """Logits [len(ids) or keep, vocab] of the variant's graphs for `ids` (empty past), a graph part at a time:
    every position's, or the last `keep`."""
    from engine.generation import prompt_embeddings

    bundle_dir = Path(bundle_dir)
    packs = not _is_fp32(bundle_dir / files.decoder)
    vision = _session(bundle_dir / files.vision, threads, packs)
    features = vision.run(None, {vision.get_inputs()[0].name: pixel_values.astype(_float_of(vision), copy=False)})[0]
    del vision
    embedder = _Embedder(_session(bundle_dir / files.embed, threads, packs), arch)
    embeds = prompt_embeddings(embedder, ids, features)
    del embedder
    return _DecoderParts(bundle_dir, files.decoder, arch, threads, packs).logits(embeds, keep)


@dataclass
class _Embedder:
    """What `engine.generation.prompt_embeddings` needs of the engine's graphs."""

    session: object
    arch: Architecture

    def embed(self, ids: np.ndarray) -> np.ndarray:
        return self.session.run(["inputs_embeds"], {"input_ids": ids.astype(np.int64, copy=False)})[0]


class _DecoderParts:
    def __init__(self, bundle_dir: Path, decoder: str, arch: Architecture, threads: int | None,
                 packs: bool) -> None:
        import onnx

        self.bundle_dir = bundle_dir
        self.packs = packs
        self.arch = arch
        self.threads = threads
        self.model = onnx.load(str(bundle_dir / decoder), load_external_data=False)
        graph = self.model.graph
        self.inputs = {value.name: value for value in graph.input}
        self.outputs = {value.name: value for value in graph.output}
        self.elem_type = self.inputs["inputs_embeds"].type.tensor_type.elem_type
        self.float = _numpy_of(self.elem_type)
        self.producers = {name: node for node in graph.node for name in node.output}
        self.initializers = {tensor.name: tensor for tensor in graph.initializer}

    def logits(self, embeds: np.ndarray, keep: int = 0) -> np.ndarray:
        seq = embeds.shape[1]
        runtime = {"attention_mask": np.ones((1, seq), dtype=np.int64),
                   "position_ids": np.arange(seq, dtype=np.int64)[None, :]}
        empty = np.zeros((1, self.arch.num_kv_heads, 0, self.arch.head_dim), dtype=self.float)
        hidden_name, hidden = "inputs_embeds", embeds.astype(self.float, copy=False)
        for index in range(self.arch.num_layers):
            past = {f"past_key_values.{index}.{part}": empty for part in ("key", "value")}
            out = layer_output(index)
            hidden = self._run([hidden_name, "attention_mask", "position_ids", *past], [out],
                               {hidden_name: hidden, **runtime, **past})
            hidden_name = out
        kept = np.array([keep], dtype=np.int64)
        logits = self._run([hidden_name, LOGITS_TO_KEEP], ["logits"], {hidden_name: hidden, LOGITS_TO_KEEP: kept})[0]
        if keep and len(logits) > keep:  # a graph written before it took logits_to_keep
            logits = logits[-keep:]
        return logits.astype(np.float32, copy=False)

    def _run(self, input_names: list[str], output_names: list[str], feed: dict) -> np.ndarray:
        path = self.bundle_dir / PART_FILE  # beside the graph, so its external data resolves as the graph's
        used = self._write_part(input_names, output_names, path)
        try:
            session = _session(path, self.threads, self.packs)
            result = session.run(output_names, {name: feed[name] for name in used})[0]
            del session
        finally:
            path.unlink(missing_ok=True)
        return result

    def _write_part(self, input_names: list[str], output_names: list[str], path: Path) -> list[str]:
        """The nodes between `input_names` and `output_names`, with the weights they use (external, unread);
        returns the inputs the part takes."""
        from onnx import helper

        given = set(input_names)
        kept: set[int] = set()
        used_weights: set[str] = set()
        pending = list(output_names)
        seen: set[str] = set()
        while pending:
            name = pending.pop()
            if name in seen or not name:
                continue
            seen.add(name)
            if name in given:
                continue
            if name in self.initializers:
                used_weights.add(name)
                continue
            node = self.producers.get(name)
            if node is None:
                raise ValueError(f"the decoder part to {output_names} needs {name!r}, which is not given")
            if id(node) not in kept:
                kept.add(id(node))
                pending.extend(node.input)
        nodes = [node for node in self.model.graph.node if id(node) in kept]
        taken = [name for name in input_names if name in seen]
        inputs = [self._value_info(name) for name in taken]
        outputs = [self._value_info(name) for name in output_names]
        graph = helper.make_graph(nodes, "decoder-part", inputs, outputs,
                                  [self.initializers[name] for name in sorted(used_weights)])
        part = helper.make_model(graph, opset_imports=list(self.model.opset_import))
        part.ir_version = self.model.ir_version
        with open(path, "wb") as out:
            out.write(part.SerializeToString())
            out.flush()
            os.fsync(out.fileno())
        return taken

    def _value_info(self, name: str):
        from onnx import helper

        if name in self.inputs:
            return self.inputs[name]
        if name in self.outputs:
            return self.outputs[name]
        # a layer's output: the hidden states, shaped as the embeddings
        return helper.make_tensor_value_info(name, self.elem_type, ["batch_size", "sequence_length",
                                                                    self.arch.hidden_size])


def _session(path: Path, threads: int | None, packs: bool):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or 0
    options.log_severity_level = 3
    if not packs:
        # fp32: one copy of the weights (ONNX Runtime's memory map of the data file, not a pre-packed
        # second one) and the same sums. Quantized kernels compute differently unpacked, and their
        # weights are small: they are packed as the engine packs them.
        options.add_session_config_entry("session.disable_prepacking", "1")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _is_fp32(decoder: Path) -> bool:
    import onnx
    from onnx import TensorProto

    graph = onnx.load(str(decoder), load_external_data=False).graph
    floats = {value.type.tensor_type.elem_type for value in graph.input if value.name == "inputs_embeds"}
    quantized = any(node.domain == "com.microsoft" or "Integer" in node.op_type or "Quantize" in node.op_type
                    for node in graph.node)
    return floats == {TensorProto.FLOAT} and not quantized


def _float_of(session) -> type:
    return np.float16 if session.get_inputs()[0].type == "tensor(float16)" else np.float32


def _numpy_of(elem_type: int) -> type:
    from onnx import TensorProto

    return np.float16 if elem_type == TensorProto.FLOAT16 else np.float32
