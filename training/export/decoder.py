"""The decoder graph through optimum's exporter (ML-NOTES route 1).

optimum has no LLaVA config, so the language model and `lm_head` are put back together as the decoder's
own `*ForCausalLM` and exported with optimum's ONNX config for that decoder type (`LlamaOnnxConfig`,
`MistralOnnxConfig`, `Qwen2OnnxConfig`), subclassed so its first input is `inputs_embeds` (the engine
embeds tokens itself so it can put image features in place of image tokens). The single graph takes
`past_key_values.{i}.key/.value` of any length, including 0 for the prefill, and returns `logits` and
`present.{i}.key/.value`: the names `engine/bundle.py` fixes.
"""

from __future__ import annotations

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
    """Write the decoder graph (with KV cache inputs and outputs) to `target`."""
    from optimum.exporters.onnx import onnx_export_from_model

    causal = language_model_with_head(model)
    config_class = _onnx_config_class(causal.config.model_type)
    onnx_config = config_class(causal.config, task="text-generation", use_past=True, use_past_in_inputs=True)
    target = Path(target)
    work = Path(tempfile.mkdtemp(prefix=".decoder-", dir=target.parent))
    try:
        try:
            onnx_export_from_model(causal, work, opset=DECODER_OPSET, task="text-generation-with-past",
                                   custom_onnx_configs={"model": onnx_config}, do_validation=False,
                                   no_post_process=True)
        except Exception as error:  # optimum and torch raise many kinds; keep the cause chained
            first = str(error).strip().splitlines()[0] if str(error).strip() else ""
            raise ExportError(f"the decoder export failed: {type(error).__name__}: {first}") from error
        produced = sorted(work.glob("*.onnx"))
        if len(produced) != 1:
            raise ExportError(f"optimum wrote {len(produced)} decoder graphs ({', '.join(p.name for p in produced)}); "
                              "expected one")
        _move_graph(produced[0], target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


def _move_graph(source: Path, target: Path) -> None:
    """Move an ONNX file and, if it has one, its external data (renamed to follow the graph).

    Only the graph structure is loaded to point it at the renamed data file: the weights are moved as a
    file, never read into memory."""
    import onnx

    data_files = [p for p in source.parent.iterdir() if p != source and not p.name.endswith(".json")]
    if not data_files:
        shutil.move(str(source), str(target))
        return
    graph = onnx.load(str(source), load_external_data=False)
    locations = {entry.value for tensor in graph.graph.initializer for entry in tensor.external_data
                 if entry.key == "location"}
    if len(locations) != 1:
        raise ExportError(f"optimum wrote the decoder's weights to {len(locations)} files; expected one")
    data_name = f"{target.name}.data"
    for tensor in graph.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = data_name
    shutil.move(str(source.parent / locations.pop()), str(target.parent / data_name))
    onnx.save_model(graph, str(target))
