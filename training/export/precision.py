"""Run parts of a model held in its checkpoint's dtype (fp16/bf16) in fp32, a part at a time.

The export loads a checkpoint in its own dtype so the weights are held once at their saved size; the
graphs and the parity reference are fp32. Casting fp16/bf16 to fp32 and back is exact, so a part cast up
for one step and back down afterwards is left as it was, and only that part is ever held twice.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import torch
from torch import nn


@contextmanager
def in_float32(*modules: nn.Module) -> Iterator[None]:
    """`modules` in fp32 inside the block, back in their own dtype after it."""
    dtypes = [_dtype(module) for module in modules]
    for module in modules:
        module.float()
    try:
        yield
    finally:
        for module, dtype in zip(modules, dtypes):
            module.to(dtype)


@contextmanager
def units_in_float32(units: Iterable[nn.Module]) -> Iterator[None]:
    """Each of `units` is cast to fp32 just before its forward and back just after (hooks)."""
    handles = []
    for unit in units:
        dtype = _dtype(unit)
        if dtype == torch.float32:
            continue
        handles.append(unit.register_forward_pre_hook(lambda module, args: module.float() and None))
        handles.append(unit.register_forward_hook(
            lambda module, args, output, dtype=dtype: module.to(dtype) and None))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def decoder_units(model) -> list[nn.Module]:
    """The parts of a LLaVA's decoder to cast one at a time: embeddings, each layer, the norm, the head."""
    language = model.model.language_model
    return [language.embed_tokens, *language.layers, language.norm, model.lm_head]


@contextmanager
def llava_in_float32(model) -> Iterator[None]:
    """A LLaVA computing in fp32: the vision side cast whole (it is small), the decoder a unit at a time."""
    with in_float32(model.model.vision_tower, model.model.multi_modal_projector), \
            units_in_float32(decoder_units(model)):
        yield


def _dtype(module: nn.Module) -> torch.dtype:
    for parameter in module.parameters():
        return parameter.dtype
    return torch.float32
