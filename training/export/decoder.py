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
import shutil
import tempfile
from pathlib import Path

import torch
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


def export_decoder(model: LlavaForConditionalGeneration, target: Path) -> Path:
    """Write the decoder graph (with KV cache inputs and outputs) to `target`.

    Traced by optimum's exporter with its ONNX config for the decoder type; a graph over 2 GB has its
    weights written one file per tensor, gathered here tensor by tensor into `<target>.data`."""
    causal = language_model_with_head(model)
    config_class = _onnx_config_class(causal.config.model_type)
    onnx_config = config_class(causal.config, task="text-generation", use_past=True, use_past_in_inputs=True)
    target = Path(target)
    work = Path(tempfile.mkdtemp(prefix=".decoder-", dir=target.parent))
    try:
        traced = work / "model.onnx"
        try:
            _trace(causal, onnx_config, traced)
        except Exception as error:  # optimum and torch raise many kinds; keep the cause chained
            first = str(error).strip().splitlines()[0] if str(error).strip() else ""
            raise ExportError(f"the decoder export failed: {type(error).__name__}: {first}") from error
        gather_external_data(traced, target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


def _trace(causal, onnx_config, output: Path) -> None:
    from optimum.exporters.onnx import convert, onnx_export_from_model

    # optimum reloads a graph with external data whole to gather its weights into one file, while the
    # caller still holds the torch model: two copies. Tell it the graph has none; gather_external_data
    # gathers them afterwards one tensor at a time.
    real_check = convert.check_model_uses_external_data
    convert.check_model_uses_external_data = lambda model: False
    try:
        onnx_export_from_model(causal, output.parent, opset=DECODER_OPSET, task="text-generation-with-past",
                               custom_onnx_configs={"model": onnx_config}, do_validation=False,
                               no_post_process=True)
    finally:
        convert.check_model_uses_external_data = real_check
    produced = sorted(output.parent.glob("*.onnx"))
    if len(produced) != 1:
        raise ExportError(f"optimum wrote {len(produced)} decoder graphs ({', '.join(p.name for p in produced)}); "
                          "expected one")
    if produced[0] != output:
        produced[0].rename(output)


def gather_external_data(source: Path, target: Path) -> None:
    """Move the graph at `source` to `target`; weights the exporter wrote as one file per tensor are copied,
    one tensor at a time, into `<target>.data` (never all in memory at once)."""
    import onnx
    from onnx.external_data_helper import ExternalDataInfo, uses_external_data

    graph = onnx.load(str(source), load_external_data=False)
    tensors = [t for t in _all_tensors(graph) if uses_external_data(t)]
    if not tensors:
        shutil.move(str(source), str(target))
        return
    data_name = f"{target.name}.data"
    with open(target.parent / data_name, "wb") as data:
        for tensor in tensors:
            info = ExternalDataInfo(tensor)
            with open(source.parent / info.location, "rb") as part:
                part.seek(info.offset or 0)
                payload = part.read(info.length) if info.length else part.read()
            padding = -data.tell() % 4096  # page-aligned, as onnx itself writes them
            data.write(b"\0" * padding)
            offset = data.tell()
            data.write(payload)
            del tensor.external_data[:]
            for key, value in (("location", data_name), ("offset", str(offset)), ("length", str(len(payload)))):
                entry = tensor.external_data.add()
                entry.key, entry.value = key, value
            del payload
        data.flush()
        os.fsync(data.fileno())
    onnx.save_model(graph, str(target))


def _all_tensors(graph):
    from onnx.external_data_helper import _get_all_tensors

    return list(_get_all_tensors(graph))
