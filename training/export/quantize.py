"""Smaller variants of the fp32 graphs: int8 (dynamic quantization of weights), int4 (weight-only) and fp16.

int4: ONNX Runtime's `MatMulNBitsQuantizer` (round to nearest, symmetric blocks of `int4_block_size`
weights along the input axis, one fp32 scale each) turns every MatMul with a constant weight into
`MatMulNBits`; `accuracy_level` 4 lets the CPU kernel compute in int8 (the fast path on CPUs). The
embedding table, the largest tensor after the head (0.53 GB of a 7 B's 4.9 GB in fp32), goes the same way:
its Gather becomes `GatherBlockQuantized`, blocks of `int4_block_size` along the hidden axis. Inputs and
outputs stay fp32.

int8: what `onnxruntime.quantization.quantize_dynamic` writes, QInt8 weights of MatMuls with a constant B
(per channel by default: it keeps more of the fp32 agreement), activations quantized at run time; written a
weight at a time (`int8_streamed.py`: quantize_dynamic holds the whole graph, several times over). The
embedding graph stays fp32 unless asked (a table lookup gains no speed from int8, only size); asked, its
Gather goes through quantize_dynamic itself.
fp16: onnxconverter-common when installed, else onnxruntime's own `convert_float_to_float16`, with
float16 inputs, outputs and KV cache (for the CUDA / DirectML providers; the engine reads the graph's
types and feeds it float16). Shape inference is skipped for graphs over 2 GB (protobuf cannot hold them).
"""

from __future__ import annotations

import logging
import os
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from engine.bundle import GraphFiles
from training.export.errors import ExportError
from training.export.graphs import SINGLE_FILE_LIMIT, save_onnx
from training.export.int8_streamed import quantize_int8_streamed

VARIANTS = ("int8", "fp16", "int4")


@dataclass(frozen=True)
class QuantizeOptions:
    per_channel: bool = True
    quantize_embed: bool = False  # int8 only
    op_types: tuple[str, ...] = ("MatMul", "Gemm")
    int4_block_size: int = 32
    int4_accuracy_level: int = 4
    int4_symmetric: bool = True
    int4_embed: bool = True  # the int4 variant's token embedding table in int4 too

    def record(self, variant: str) -> dict:
        """How `variant` was made, for model.json's provenance."""
        if variant == "int8":
            return {"weights": "QInt8", "per_channel": self.per_channel, "embed": self.quantize_embed}
        if variant == "int4":
            return {"weights": "MatMulNBits", "bits": 4, "block_size": self.int4_block_size,
                    "symmetric": self.int4_symmetric, "accuracy_level": self.int4_accuracy_level,
                    "algorithm": "RTN", "embed": "GatherBlockQuantized" if self.int4_embed else "fp32"}
        return {"weights": "float16", "io": "float16"}


def variant_files(fp32: GraphFiles, variant: str, options: QuantizeOptions = QuantizeOptions()) -> GraphFiles:
    def renamed(name: str) -> str:
        return name.removesuffix(".onnx") + f".{variant}.onnx"

    embed = renamed(fp32.embed) if (variant == "fp16" or (variant == "int8" and options.quantize_embed)
                                    or (variant == "int4" and options.int4_embed)) else fp32.embed
    return GraphFiles(vision=renamed(fp32.vision), embed=embed, decoder=renamed(fp32.decoder))


def make_variant(bundle_dir: Path, fp32: GraphFiles, variant: str,
                 options: QuantizeOptions = QuantizeOptions()) -> GraphFiles:
    """Write the `variant` graphs beside the fp32 ones and return their names."""
    if variant not in VARIANTS:
        raise ExportError(f"unknown variant {variant!r}; expected one of {', '.join(VARIANTS)}")
    bundle_dir = Path(bundle_dir)
    files = variant_files(fp32, variant, options)
    for source, target in zip(fp32.all(), files.all()):
        if source == target:
            continue
        if variant == "int8":
            quantize_int8(bundle_dir / source, bundle_dir / target, options)
        elif variant == "int4":
            # the embedding graph is one Gather of the table; elsewhere a Gather's constant (a vision
            # tower's position table) is small and stays as it is
            quantize_int4(bundle_dir / source, bundle_dir / target, options,
                          op_types=("Gather",) if source == fp32.embed else ("MatMul",))
        else:
            convert_fp16(bundle_dir / source, bundle_dir / target)
    return files


def quantize_int8(source: Path, target: Path, options: QuantizeOptions = QuantizeOptions()) -> Path:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    op_types = list(options.op_types)
    if options.quantize_embed and "Gather" not in op_types:
        op_types.append("Gather")
    if "MatMul" in op_types and not _has_ops(source, set(op_types) - {"MatMul", "Gemm"}):
        # Gemm is no op of quantize_dynamic's (IntegerOps) either: MatMul is all it would quantize
        return quantize_int8_streamed(source, target, per_channel=options.per_channel)
    large = _size_with_data(source) > SINGLE_FILE_LIMIT
    with warnings.catch_warnings(), _quiet_root_logger():
        warnings.simplefilter("ignore")
        quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8, per_channel=options.per_channel,
                         op_types_to_quantize=op_types, use_external_data_format=large,
                         extra_options={"MatMulConstBOnly": True})
    return target


def quantize_int4(source: Path, target: Path, options: QuantizeOptions = QuantizeOptions(),
                  op_types: tuple[str, ...] = ("MatMul",)) -> Path:
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    large = _size_with_data(source) > SINGLE_FILE_LIMIT
    quiet = logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer")
    level = quiet.level
    quiet.setLevel(logging.WARNING)  # it logs every node it skips at INFO
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            streamed = source.with_name(source.name + ".data").exists()
            graph = _graph_without_weights(source) if streamed else str(source)
            quantizer = MatMulNBitsQuantizer(graph, bits=4, block_size=options.int4_block_size,
                                             is_symmetric=options.int4_symmetric,
                                             accuracy_level=options.int4_accuracy_level,
                                             op_types_to_quantize=op_types)
            if streamed:
                # the quantizer reads each MatMul weight as it reaches it (onnx resolves external data
                # against the working directory): one fp32 weight in memory at a time
                with _working_directory(source.parent):
                    quantizer.process()
                    _load_remaining_weights(quantizer.model.model)
            else:
                quantizer.process()
            data = target.with_name(target.name + ".data")
            data.unlink(missing_ok=True)
            quantizer.model.save_model_to_file(str(target), use_external_data_format=large)
    finally:
        quiet.setLevel(level)
    _rename_external_data(target)
    return target


def _graph_without_weights(source: Path):
    import onnx

    return onnx.load(str(source), load_external_data=False)


def _load_remaining_weights(model) -> None:
    """The weights the quantizer left as they were (norms, biases; small) are read into the graph, so the
    variant does not point into the fp32 graph's data file."""
    from onnx.external_data_helper import _get_all_tensors, load_external_data_for_tensor, uses_external_data

    for tensor in _get_all_tensors(model):
        if uses_external_data(tensor):
            load_external_data_for_tensor(tensor, "")
            tensor.data_location = tensor.DEFAULT
            del tensor.external_data[:]


@contextmanager
def _working_directory(folder: Path):
    previous = os.getcwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(previous)


def _rename_external_data(target: Path) -> None:
    """onnxruntime's ModelProto wrapper names the data file `<name>.onnx.data` already; check and keep that."""
    data = target.with_name(target.name + ".data")
    if not data.exists():
        return
    import onnx

    graph = onnx.load(str(target), load_external_data=False)
    locations = {entry.value for tensor in graph.graph.initializer for entry in tensor.external_data
                 if entry.key == "location"}
    if locations - {data.name}:
        raise ExportError(f"{target.name} keeps its weights in {', '.join(sorted(locations))}, "
                          f"expected {data.name}")


def convert_fp16(source: Path, target: Path) -> Path:
    import onnx

    if source.with_name(source.name + ".data").exists():
        return convert_fp16_streaming(source, target)
    large = _size_with_data(source) > SINGLE_FILE_LIMIT
    model = onnx.load(str(source), load_external_data=True)
    try:
        from onnxconverter_common.float16 import convert_float_to_float16
    except ImportError:
        from onnxruntime.transformers.float16 import convert_float_to_float16
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # in place: the fp32 weights are replaced one by one, so the graph is never held twice
        converted = convert_float_to_float16(model, keep_io_types=False, disable_shape_infer=large)
    del model
    save_onnx(converted, target)
    return target


def convert_fp16_streaming(source: Path, target: Path) -> Path:
    """fp16 graph of a graph whose weights are external data, one weight in memory at a time.

    The graph is converted without its external weights (a small proto); each weight is then read from
    the fp32 data file, cast (clamped to fp16's range, as the converter does) and written to
    `<target>.data`."""
    import numpy as np
    import onnx
    from onnx import TensorProto
    from onnx.external_data_helper import ExternalDataInfo, uses_external_data

    try:
        from onnxconverter_common.float16 import convert_float_to_float16
    except ImportError:
        from onnxruntime.transformers.float16 import convert_float_to_float16
    model = onnx.load(str(source), load_external_data=False)
    external = [tensor for tensor in model.graph.initializer if uses_external_data(tensor)]
    kept = [tensor for tensor in model.graph.initializer if not uses_external_data(tensor)]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        converted = convert_float_to_float16(model, keep_io_types=False, disable_shape_infer=True)
    data_name = f"{target.name}.data"
    with open(target.parent / data_name, "wb") as data:
        for tensor in external:
            info = ExternalDataInfo(tensor)
            with open(source.parent / info.location, "rb") as part:
                part.seek(info.offset or 0)
                payload = part.read(info.length) if info.length else part.read()
            if tensor.data_type == TensorProto.FLOAT:
                payload = np.clip(np.frombuffer(payload, dtype=np.float32), -65504, 65504).astype(np.float16)
                tensor.data_type = TensorProto.FLOAT16
            data.write(b"\0" * (-data.tell() % 4096))
            offset = data.tell()
            data.write(memoryview(payload).cast("B") if isinstance(payload, np.ndarray) else payload)
            del tensor.external_data[:]
            for key, value in (("location", data_name), ("offset", str(offset)),
                               ("length", str(len(memoryview(payload).cast("B"))))):
                entry = tensor.external_data.add()
                entry.key, entry.value = key, value
            converted.graph.initializer.append(tensor)
            del payload
        data.flush()
        os.fsync(data.fileno())
    onnx.save_model(converted, str(target))
    return target


def _has_ops(source: Path, op_types: set[str]) -> bool:
    import onnx

    return bool(op_types) and any(node.op_type in op_types
                                  for node in onnx.load(str(source), load_external_data=False).graph.node)


def _size_with_data(path: Path) -> int:
    data = path.with_name(path.name + ".data")
    return path.stat().st_size + (data.stat().st_size if data.exists() else 0)


class _DropAdvice(logging.Filter):
    """The quantizer logs per-tensor notes at INFO and advice at WARNING, all on the root logger."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR or (
            record.levelno >= logging.WARNING and "pre-processing before quantization" not in record.getMessage())


@contextmanager
def _quiet_root_logger():
    """quantize_dynamic logs advice through the root logger (configuring it if nobody has): drop it."""
    root = logging.getLogger()
    advice = _DropAdvice()
    placeholder = logging.NullHandler()  # `logging.warning` calls basicConfig when root has no handler
    root.addFilter(advice)
    root.addHandler(placeholder)
    try:
        yield
    finally:
        root.removeHandler(placeholder)
        root.removeFilter(advice)
