"""Vision (tower + feature selection + projector) graph via `torch.onnx.export`; the token-embedding graph.

The vision graph uses the dynamo exporter (torch's default). Tracing uses 2 images so the leading
dimension stays symbolic (a batch-1 trace can fix it at 1, see ML-NOTES).
"""

from __future__ import annotations

import copy
import os
import warnings
from pathlib import Path

import torch
from torch import nn
from transformers import LlavaForConditionalGeneration

from training.export.errors import ExportError

GRAPH_OPSET = 18
# protobuf cannot serialise a single message over 2 GiB: larger graphs keep their weights beside them.
SINGLE_FILE_LIMIT = 2_000_000_000
EMBED_ROWS_PER_WRITE = 4096
EMBED_IR_VERSION = 10  # read by every ONNX Runtime the engine supports


class VisionGraph(nn.Module):
    """pixel_values [images, 3, H, W] -> image_features [images, image_tokens, hidden]."""

    def __init__(self, model: LlavaForConditionalGeneration, fp32_copy: bool = False) -> None:
        super().__init__()
        # the vision side only: the exporter keeps the module it traced alive, and with it every tensor
        # it reaches (holding the LLaVA would keep the whole checkpoint's memory map resident)
        tower, projector = model.model.vision_tower, model.model.multi_modal_projector
        if fp32_copy:  # the checkpoint's own tensors never reach the exporter
            tower, projector = copy.deepcopy(tower).float(), copy.deepcopy(projector).float()
        self.vision_tower, self.multi_modal_projector = tower, projector
        self.layer = model.config.vision_feature_layer
        self.strategy = model.config.vision_feature_select_strategy
        if self.strategy not in ("default", "full"):
            raise ExportError(f"vision_feature_select_strategy {self.strategy!r} is not supported "
                              "(expected 'default' or 'full')")

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        # Same steps as `LlavaModel.get_image_features`, which ends by splitting the batch into a list
        # (that would fix the number of images in the graph).
        outputs = self.vision_tower(pixel_values, output_hidden_states=True)
        layers = [self.layer] if isinstance(self.layer, int) else list(self.layer)
        selected = [outputs.hidden_states[index] for index in layers]
        if self.strategy == "default":
            selected = [hidden[:, 1:] for hidden in selected]
        features = selected[0] if len(selected) == 1 else torch.cat(selected, dim=-1)
        return self.multi_modal_projector(features)


def export_vision(model: LlavaForConditionalGeneration, target: Path, image_size: int | None = None) -> Path:
    size = image_size or model.config.vision_config.image_size
    channels = getattr(model.config.vision_config, "num_channels", 3)
    example = torch.zeros(2, channels, size, size, dtype=torch.float32)
    images = torch.export.Dim("images", min=1, max=64)
    return _export(VisionGraph(model, fp32_copy=True), (example,), target, input_names=["pixel_values"],
                   output_names=["image_features"], dynamic_shapes={"pixel_values": {0: images}})


def export_embed(model: LlavaForConditionalGeneration, target: Path) -> Path:
    """input_ids -> inputs_embeds as one Gather, written directly: the table (the model's largest tensor
    with the head) goes to `<target>.data` as fp32 in row blocks, never held whole in fp32 nor in a proto."""
    import onnx
    from onnx import TensorProto, helper

    table = model.get_input_embeddings().weight.detach()
    target = Path(target)
    data_name = f"{target.name}.data"
    with open(target.parent / data_name, "wb") as data:
        for start in range(0, table.shape[0], EMBED_ROWS_PER_WRITE):
            block = table[start:start + EMBED_ROWS_PER_WRITE].to(torch.float32).contiguous().numpy()
            data.write(memoryview(block).cast("B"))
        length = data.tell()
        data.flush()
        os.fsync(data.fileno())
    weight = TensorProto(name="embed_tokens.weight", data_type=TensorProto.FLOAT, dims=list(table.shape))
    weight.data_location = TensorProto.EXTERNAL
    for key, value in (("location", data_name), ("offset", "0"), ("length", str(length))):
        entry = weight.external_data.add()
        entry.key, entry.value = key, value
    graph = helper.make_graph(
        [helper.make_node("Gather", ["embed_tokens.weight", "input_ids"], ["inputs_embeds"], axis=0)], "embed",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "sequence"])],
        [helper.make_tensor_value_info("inputs_embeds", TensorProto.FLOAT,
                                       ["batch", "sequence", int(table.shape[1])])], [weight])
    embed = helper.make_model(graph, opset_imports=[helper.make_opsetid("", GRAPH_OPSET)])
    embed.ir_version = EMBED_IR_VERSION
    onnx.save_model(embed, str(target))
    return target


def _export(module: nn.Module, args: tuple, target: Path, *, input_names: list[str], output_names: list[str],
            dynamic_shapes: dict) -> Path:
    module.eval()
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(module, args, f=None, dynamo=True, opset_version=GRAPH_OPSET,
                                        input_names=input_names, output_names=output_names,
                                        dynamic_shapes=dynamic_shapes, verbose=False)
    except Exception as error:  # the exporter raises many kinds; name the graph and keep the cause
        raise ExportError(f"torch.onnx.export failed for {Path(target).name}: {type(error).__name__}: "
                          f"{str(error).splitlines()[0] if str(error) else ''}") from error
    program.save(str(target), external_data=_needs_external_data(module))
    del program
    _forget_matched_graphs()
    return Path(target)


def _forget_matched_graphs() -> None:
    """onnxscript's rewrite rules (module-level objects the exporter's optimizer runs) keep the last graph
    their matcher saw, and that graph every initializer of the exported module: for the vision graph, the
    fp32 copy of the tower, alive for the rest of the export under the decoder's steps. A matcher's graph,
    match and node are per call (set again by the next `match`), so they are dropped here."""
    import gc

    try:
        from onnxscript.rewriter._matcher import PatternMatcher
    except ImportError:  # another onnxscript: tests/training/test_export_memory.py shows whether it still leaks
        return
    for matcher in [found for found in gc.get_objects() if isinstance(found, PatternMatcher)]:
        for state in ("_graph", "_match", "_current_node", "_tracer"):
            matcher.__dict__.pop(state, None)
    gc.collect()


def _needs_external_data(module: nn.Module) -> bool:
    size = sum(p.numel() * p.element_size() for p in module.parameters())
    return size > SINGLE_FILE_LIMIT


def save_onnx(graph, target: Path) -> Path:
    """Save an `onnx.ModelProto`; weights go to `<name>.data` beside it only when it is too large for one file."""
    import onnx

    target = Path(target)
    data_name = f"{target.name}.data"
    if (target.parent / data_name).exists():
        os.unlink(target.parent / data_name)
    large = graph.ByteSize() > SINGLE_FILE_LIMIT if _fits_bytesize(graph) else True
    if large:
        onnx.save_model(graph, str(target), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=data_name, size_threshold=1024)
    else:
        onnx.save_model(graph, str(target))
    return target


def _fits_bytesize(graph) -> bool:
    try:
        graph.ByteSize()
        return True
    except Exception:  # noqa: BLE001 - protobuf refuses to size messages over 2 GiB
        return False


def graph_files(bundle_dir: Path, name: str) -> list[Path]:
    """The files one graph occupies: the .onnx and its external data, if any."""
    path = Path(bundle_dir) / name
    data = path.with_name(path.name + ".data")
    return [p for p in (path, data) if p.exists()]


def check_graph(path: Path) -> None:
    """`onnx.checker` on a graph file (by path, so external data is fine)."""
    import onnx

    try:
        onnx.checker.check_model(str(path))
    except Exception as error:
        raise ExportError(f"{Path(path).name} is not a valid ONNX graph: {error}") from error


def require_dynamic(path: Path, axes: dict[str, tuple[int, ...]]) -> None:
    """Fail if an exporter fixed an axis that must stay free (e.g. the number of images at the traced 2)."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    inputs = {value.name: value for value in graph.input}
    for name, wanted in axes.items():
        if name not in inputs:
            raise ExportError(f"{Path(path).name} has no input {name!r} (it has {', '.join(inputs)})")
        dims = inputs[name].type.tensor_type.shape.dim
        for axis in wanted:
            if axis >= len(dims) or dims[axis].HasField("dim_value"):
                raise ExportError(f"{Path(path).name}: axis {axis} of {name!r} was fixed at export; "
                                  "the engine needs it dynamic")
