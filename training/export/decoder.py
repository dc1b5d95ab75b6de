"""The decoder graph through optimum's exporter (ML-NOTES route 1).

optimum has no LLaVA config, so the language model and `lm_head` are put back together as the decoder's
own `*ForCausalLM` and exported with optimum's ONNX config for that decoder type (`LlamaOnnxConfig`,
`MistralOnnxConfig`, `Qwen2OnnxConfig`), subclassed so its first input is `inputs_embeds` (the engine
embeds tokens itself so it can put image features in place of image tokens). The single graph takes
`past_key_values.{i}.key/.value` of any length, including 0 for the prefill, and returns `logits` and
`present.{i}.key/.value`: the names `engine/bundle.py` fixes.
"""

from __future__ import annotations

import os
from inspect import signature
from pathlib import Path

import torch
from torch import nn
from transformers import AutoModelForCausalLM, LlavaForConditionalGeneration

from training.export.errors import ExportError

DECODER_OPSET = 18
# Decoder types whose export is tested end to end (tests/training/test_checkpoints_*.py); optimum has
# configs for more, but an untested one would fail at parity at best.
SUPPORTED_DECODERS = ("llama", "mistral", "qwen2")


def check_decoder_type(text_type: str | None) -> None:
    if text_type not in SUPPORTED_DECODERS:
        raise ExportError(f"the language model is {text_type!r}; the export handles "
                          f"{', '.join(SUPPORTED_DECODERS)} decoders")


def language_model_with_head(model: LlavaForConditionalGeneration):
    """The decoder's own `*ForCausalLM` sharing the LLaVA's language model and `lm_head` (no copy of the weights)."""
    text_config = model.config.text_config
    check_decoder_type(getattr(text_config, "model_type", None))
    text_config._attn_implementation = "eager"
    with torch.device("meta"):
        causal = AutoModelForCausalLM.from_config(text_config, attn_implementation="eager")
    causal.model = model.model.language_model
    causal.lm_head = model.lm_head
    causal.config = text_config
    causal.eval()
    return causal


def optimum_config_class(text_type: str):
    """optimum's own ONNX config class for the decoder type (e.g. `MistralOnnxConfig` for "mistral")."""
    import optimum.exporters.onnx.model_configs  # noqa: F401 - importing it registers the ONNX configs
    from optimum.exporters.tasks import TasksManager

    check_decoder_type(text_type)
    try:
        constructor = TasksManager.get_exporter_config_constructor(
            exporter="onnx", model_type=text_type, task="text-generation-with-past", library_name="transformers")
    except (KeyError, ValueError) as error:
        raise ExportError(f"optimum has no ONNX config for {text_type!r} decoders ({error})") from None
    return getattr(constructor, "func", constructor)


def _onnx_config_class(text_type: str = "llama"):
    from optimum.utils.input_generators import DummyInputGenerator, DummyTextInputGenerator

    base = optimum_config_class(text_type)

    class DummyEmbedsGenerator(DummyTextInputGenerator):
        """Random `inputs_embeds` [batch, sequence, hidden] for tracing."""

        SUPPORTED_INPUT_NAMES = ("inputs_embeds",)

        def __init__(self, task, normalized_config, **kwargs):
            super().__init__(task, normalized_config, **kwargs)
            self.hidden_size = normalized_config.hidden_size

        def generate(self, input_name, framework="pt", int_dtype="int64", float_dtype="fp32"):
            shape = [self.batch_size, self.sequence_length, self.hidden_size]
            return self.random_float_tensor(shape, min_value=-1, max_value=1, framework=framework,
                                            dtype=float_dtype)

    class EmbedsOnnxConfig(base):
        DUMMY_INPUT_GENERATOR_CLASSES = (DummyEmbedsGenerator, *base.DUMMY_INPUT_GENERATOR_CLASSES)
        # The base class pads only when it finds `input_ids`; padding is done below instead.
        PAD_ATTENTION_MASK_TO_PAST = False

        @property
        def inputs(self):
            inputs = super().inputs
            renamed = {}
            for name, axes in inputs.items():
                renamed["inputs_embeds" if name == "input_ids" else name] = axes
            return renamed

        def generate_dummy_inputs(self, framework="pt", **kwargs):
            dummy = super().generate_dummy_inputs(framework=framework, **kwargs)
            if self.use_past_in_inputs and "past_key_values" in dummy:
                seq = dummy["inputs_embeds"].shape[1]
                past = dummy["past_key_values"][0][0].shape[-2]
                dummy["attention_mask"] = DummyInputGenerator.pad_input_on_dim(
                    dummy["attention_mask"], desired_length=past + seq, dim=1)
                batch = dummy["inputs_embeds"].shape[0]
                dummy["position_ids"] = torch.arange(past, past + seq, dtype=torch.int64).expand(batch, seq)
            return dummy

    return EmbedsOnnxConfig


DECODER_METHODS = ("auto", "direct", "trace")


def decoder_method(model: LlavaForConditionalGeneration, method: str = "auto") -> str:
    """"direct" (the graph written from the weights: `decoder_graph.py`) for the decoders it handles,
    "trace" otherwise; "auto" chooses, the others insist."""
    from training.export.decoder_graph import unsupported_reason

    if method not in DECODER_METHODS:
        raise ExportError(f"unknown decoder method {method!r}; choose from {', '.join(DECODER_METHODS)}")
    reason = unsupported_reason(model)
    if method == "direct" and reason:
        raise ExportError(f"the decoder cannot be written directly: {reason}")
    if method == "auto":
        return "trace" if reason else "direct"
    return method


def export_decoder(model: LlavaForConditionalGeneration, target: Path, method: str = "auto") -> Path:
    """Write the fp32 decoder graph (with KV cache inputs and outputs) to `target`, weights in `<target>.data`.

    Llama, Mistral and Qwen2 decoders are written directly from the weights (`decoder_graph.py`: the
    least memory, no trace); `method="trace"`, or a decoder that needs what that writer lacks, is traced.
    The graph is traced by torch's exporter with optimum's ONNX config for the decoder type, on a twin of
    the decoder whose parameters are zero-byte placeholders and are left out of the graph
    (`export_params=False`); the real weights, in whatever dtype the checkpoint was loaded, are then written
    as fp32 external data one tensor at a time. So the weights are never held a second time, neither as
    an fp32 copy of the model nor inside the ONNX proto."""
    if decoder_method(model, method) == "direct":
        from training.export.decoder_graph import write_decoder_graph

        return write_decoder_graph(model, target)
    causal = language_model_with_head(model)
    config_class = _onnx_config_class(causal.config.model_type)
    onnx_config = config_class(causal.config, task="text-generation", use_past=True, use_past_in_inputs=True)
    target = Path(target)
    twin, weights = weightless_twin(causal)
    try:
        _trace_without_weights(twin, onnx_config, target)
    except ExportError:
        raise
    except Exception as error:  # torch's exporter raises many kinds; keep the cause chained
        first = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise ExportError(f"the decoder export failed: {type(error).__name__}: {first}") from error
    attach_weights(target, weights)
    return target


def weightless_twin(causal):
    """(a twin of `causal` on zero-byte fp32 placeholders, parameter/buffer name -> the real tensor).

    The placeholders are one distinct value expanded to each weight's shape (stride 0: no memory); tied
    weights stay tied, so the graph names each tensor once. Buffers (rotary frequencies) are small and copied as fp32."""
    with torch.device("meta"):
        twin = AutoModelForCausalLM.from_config(causal.config, attn_implementation="eager")
    placeholders: dict[int, nn.Parameter] = {}
    weights: dict[str, torch.Tensor] = {}
    for name, parameter in causal.named_parameters(remove_duplicate=False):
        if id(parameter) not in placeholders:
            # a distinct value each: the exporter merges initializers that compare equal
            stand_in = torch.full((), 1e-6 * (len(placeholders) + 1)).expand(parameter.shape)
            placeholders[id(parameter)] = nn.Parameter(stand_in, requires_grad=False)
        owner, _, leaf = name.rpartition(".")
        twin.get_submodule(owner)._parameters[leaf] = placeholders[id(parameter)]
        weights[name] = parameter
    for name, buffer in causal.named_buffers(remove_duplicate=False):
        owner, _, leaf = name.rpartition(".")
        module = twin.get_submodule(owner)
        module._buffers[leaf] = buffer.detach().to(torch.float32, copy=True)
        # persistent, so the exporter names its graph input after it (it leaves unnamed the ones it isn't)
        module._non_persistent_buffers_set.discard(leaf)
        weights[name] = buffer
    for module_name, module in causal.named_modules():
        if hasattr(module, "original_inv_freq"):  # a plain attribute, not a buffer: the meta twin lacks it
            twin.get_submodule(module_name).original_inv_freq = module.original_inv_freq.to(torch.float32)
    twin.config = causal.config
    twin.eval()
    return twin, weights


def _trace_without_weights(twin, onnx_config, output: Path) -> None:
    """optimum's `export_pytorch` steps (dummy inputs, model patcher, input order, dynamic axes) with the
    parameters left out of the graph: they become graph inputs named as in the state dict."""
    with torch.no_grad():
        twin.config.return_dict = True
        for key, value in (onnx_config.values_override or {}).items():
            setattr(twin.config, key, value)
        dummy = onnx_config.rename_ambiguous_inputs(onnx_config.generate_dummy_inputs(framework="pt"))
        # as optimum does: logits at every position (transformers' default keeps a traced constant)
        model_kwargs = {"logits_to_keep": 0} if "logits_to_keep" in signature(twin.forward).parameters else {}
        with onnx_config.patch_model_for_export(twin, model_kwargs=model_kwargs):
            inputs = onnx_config.ordered_inputs(twin)
            axes = {**inputs, **onnx_config.outputs}
            torch.onnx.export(twin, (dummy,), f=str(output), input_names=list(inputs),
                              output_names=list(onnx_config.outputs), dynamic_axes=axes,
                              opset_version=DECODER_OPSET, export_params=False, do_constant_folding=False,
                              dynamo=False)


def attach_weights(path: Path, weights: dict[str, torch.Tensor]) -> None:
    """Turn the graph's weight inputs into fp32 initializers stored in `<path>.data`, one tensor at a time.

    A weight the exporter transposes for a MatMul (`Transpose(W)`, what constant folding would have done
    with the weights in the graph) is written transposed in place of that node, so MatMul sees a
    constant B and the int4/int8 quantizers find it."""
    import onnx
    from onnx import TensorProto

    graph_model = onnx.load(str(path))
    graph = graph_model.graph
    weight_inputs = [value.name for value in graph.input if value.name in weights]
    unknown = [value.name for value in graph.input if value.name not in weights
               and not _is_runtime_input(value.name)]
    if unknown:
        raise ExportError(f"the decoder graph takes inputs that are neither weights nor runtime inputs: "
                          f"{', '.join(unknown[:5])}")
    consumers: dict[str, list] = {name: [] for name in weight_inputs}
    for node in graph.node:
        for name in node.input:
            if name in consumers:
                consumers[name].append(node)
    folded = []  # (initializer name, source weight name, transposed)
    for name in weight_inputs:
        kept = False
        for node in consumers[name]:
            if node.op_type == "Transpose" and _is_2d_swap(node, weights[name]):
                folded.append((node.output[0], name, True))
                graph.node.remove(node)
            else:
                kept = True
        if kept:
            folded.append((name, name, False))
    keep_inputs = [value for value in graph.input if value.name not in weights]
    del graph.input[:]
    graph.input.extend(keep_inputs)

    data_name = f"{path.name}.data"
    with open(path.parent / data_name, "wb") as data:
        for initializer_name, source, transposed in folded:
            tensor = weights[source].detach()
            tensor = (tensor.t() if transposed else tensor).to(torch.float32).contiguous()
            array = tensor.numpy()
            data.write(b"\0" * (-data.tell() % 4096))  # page-aligned, as onnx writes them
            offset = data.tell()
            data.write(memoryview(array).cast("B"))
            proto = TensorProto(name=initializer_name, data_type=TensorProto.FLOAT, dims=list(array.shape))
            proto.data_location = TensorProto.EXTERNAL
            for key, value in (("location", data_name), ("offset", str(offset)), ("length", str(array.nbytes))):
                entry = proto.external_data.add()
                entry.key, entry.value = key, value
            graph.initializer.append(proto)
            del tensor, array
        data.flush()
        os.fsync(data.fileno())
    onnx.save_model(graph_model, str(path))


def _is_runtime_input(name: str) -> bool:
    return name in ("inputs_embeds", "attention_mask", "position_ids") or name.startswith("past_key_values.")


def _is_2d_swap(node, weight: torch.Tensor) -> bool:
    perm = next((list(attribute.ints) for attribute in node.attribute if attribute.name == "perm"), None)
    return weight.dim() == 2 and perm in (None, [1, 0])
