"""Smaller variants of the fp32 graphs: int8 (dynamic quantization of weights) and fp16.

int8: `onnxruntime.quantization.quantize_dynamic`, QInt8 weights of MatMul/Gemm (per channel by default:
it keeps more of the fp32 agreement); activations are quantized at run time. The embedding graph stays
fp32 unless asked (a table lookup gains no speed from int8, only size).
fp16: onnxconverter-common when installed, else onnxruntime's own `convert_float_to_float16`, with
float32 inputs and outputs kept so the engine feeds both variants the same way.
"""

from __future__ import annotations

import logging
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from engine.bundle import GraphFiles
from training.export.errors import ExportError
from training.export.graphs import SINGLE_FILE_LIMIT, save_onnx

VARIANTS = ("int8", "fp16")


@dataclass(frozen=True)
class QuantizeOptions:
    per_channel: bool = True
    quantize_embed: bool = False  # int8 only
    op_types: tuple[str, ...] = ("MatMul", "Gemm")


def variant_files(fp32: GraphFiles, variant: str, options: QuantizeOptions = QuantizeOptions()) -> GraphFiles:
    def renamed(name: str) -> str:
        return name.removesuffix(".onnx") + f".{variant}.onnx"

    embed = renamed(fp32.embed) if (variant == "fp16" or options.quantize_embed) else fp32.embed
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
        else:
            convert_fp16(bundle_dir / source, bundle_dir / target)
    return files


def quantize_int8(source: Path, target: Path, options: QuantizeOptions = QuantizeOptions()) -> Path:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    op_types = list(options.op_types)
    if options.quantize_embed and "Gather" not in op_types:
        op_types.append("Gather")
    large = _size_with_data(source) > SINGLE_FILE_LIMIT
    with warnings.catch_warnings(), _quiet_root_logger():
        warnings.simplefilter("ignore")
        quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8, per_channel=options.per_channel,
                         op_types_to_quantize=op_types, use_external_data_format=large,
                         extra_options={"MatMulConstBOnly": True})
    return target


def convert_fp16(source: Path, target: Path) -> Path:
    import onnx

    model = onnx.load(str(source), load_external_data=True)
    try:
        from onnxconverter_common.float16 import convert_float_to_float16
    except ImportError:
        from onnxruntime.transformers.float16 import convert_float_to_float16
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        converted = convert_float_to_float16(model, keep_io_types=True, disable_shape_infer=False)
    save_onnx(converted, target)
    return target


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
