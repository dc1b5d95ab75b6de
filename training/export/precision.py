"""Run parts of a model held in its checkpoint's dtype (fp16/bf16) in fp32, a part at a time.

The export loads a checkpoint in its own dtype so the weights are held once at their saved size; the
graphs and the parity reference are fp32. A part computing in fp32 gets fp32 copies of its weights for that
step and its own tensors back afterwards (not a cast down: that would allocate them anew beside the
checkpoint's memory-mapped originals), so only that part is ever held twice (and the small parts of a vision
tower that are cast for a whole pass: `vision_in_float32`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import torch
from torch import nn


@contextmanager
def in_float32(*modules: nn.Module) -> Iterator[None]:
    """`modules` in fp32 inside the block, their own tensors back after it."""
    saved = [_to_float32(module) for module in modules]
    try:
        yield
    finally:
        for originals in saved:
            _restore(originals)


@contextmanager
def units_in_float32(units: Iterable[nn.Module]) -> Iterator[None]:
    """Each of `units` is in fp32 just for its forward (hooks); its own tensors are put back after it, so
    nothing is cast down again and only one unit's fp32 copy exists at a time."""
    handles, pending = [], []
    for unit in units:
        if _dtype(unit) == torch.float32:
            continue
        saved: list[dict] = []
        pending.append(saved)
        handles.append(unit.register_forward_pre_hook(
            lambda module, args, saved=saved: saved.append(_to_float32(module)) and None))
        handles.append(unit.register_forward_hook(
            lambda module, args, output, saved=saved: _restore(saved.pop()) and None))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
        for saved in pending:  # a unit whose forward raised never reached its forward hook
            while saved:
                _restore(saved.pop())


def decoder_units(model) -> list[nn.Module]:
    """The parts of a LLaVA's decoder to cast one at a time: every module holding weights of its own
    (each projection, norm, the embeddings, the head), so at most one weight is held in fp32 at once."""
    language = model.model.language_model
    units = [module for module in language.modules() if next(module.parameters(recurse=False), None) is not None]
    return [*units, model.lm_head]


def vision_layers(model) -> list[nn.Module]:
    """The vision tower's repeated layers (each element of its module lists): cast one at a time, whole. Not
    weight by weight, as the decoder is: a vision module may read a child's weight without calling it
    (SigLIP's embeddings take the pixels' dtype from `patch_embedding.weight`)."""
    return [layer for module in model.model.vision_tower.modules() if isinstance(module, nn.ModuleList)
            for layer in module]


@contextmanager
def vision_in_float32(model) -> Iterator[None]:
    """The vision tower and projector computing in fp32: the layers one at a time, the rest (embeddings,
    norms, projector: small) for the whole block. A SigLIP-so400m tower is 1.7 GB in fp32, beside its
    0.86 GB of fp16 weights."""
    layers = vision_layers(model)
    inside = {id(parameter) for layer in layers for parameter in layer.parameters()}
    rest = [parameter for part in (model.model.vision_tower, model.model.multi_modal_projector)
            for parameter in part.parameters() if id(parameter) not in inside]
    saved = _parameters_to_float32(rest)
    try:
        with units_in_float32(layers):
            yield
    finally:
        _restore(saved)


def _to_float32(module: nn.Module) -> dict:
    """Swap `module`'s floating-point parameters for fp32 copies; returns the originals to put back."""
    return _parameters_to_float32(module.parameters())


def _parameters_to_float32(parameters: Iterable[nn.Parameter]) -> dict:
    originals = {}
    for parameter in parameters:
        if parameter.is_floating_point() and parameter.dtype != torch.float32:
            originals[parameter] = parameter.data
            parameter.data = parameter.data.float()
    return originals


def _restore(originals: dict) -> None:
    for parameter, data in originals.items():
        parameter.data = data


@contextmanager
def llava_in_float32(model) -> Iterator[None]:
    """A LLaVA computing in fp32, a unit at a time (vision tower, projector and decoder)."""
    with vision_in_float32(model), units_in_float32(decoder_units(model)):
        yield


def _dtype(module: nn.Module) -> torch.dtype:
    for parameter in module.parameters():
        return parameter.dtype
    return torch.float32
