"""The three ONNX Runtime sessions of a bundle (vision + projector, token embedding, decoder with KV cache)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from engine.bundle import LOGITS_TO_KEEP, Architecture, GraphFiles
from engine.errors import BundleError
from engine.providers import ProviderChoice, used_provider

log = logging.getLogger(__name__)

VISION_INPUT, VISION_OUTPUT = "pixel_values", "image_features"
EMBED_INPUT, EMBED_OUTPUT = "input_ids", "inputs_embeds"
DECODER_INPUTS = ("inputs_embeds", "attention_mask")  # + position_ids in the optimum layout


@dataclass(frozen=True)
class SessionOptions:
    intra_op_threads: int = 0
    inter_op_threads: int = 0


class ModelGraphs:
    """Runs the bundle's graphs; every method takes and returns numpy arrays (batch 1 for text, except
    `decode_rows`)."""

    def __init__(self, bundle_dir: Path, files: GraphFiles, arch: Architecture, choice: ProviderChoice,
                 options: SessionOptions) -> None:
        self.arch = arch
        self.vision = _open(bundle_dir / files.vision, choice, options)
        self.embedder = _open(bundle_dir / files.embed, choice, options)
        self.decoder = _open(bundle_dir / files.decoder, choice, options)
        self.provider = used_provider(self.decoder)
        self._device = "cuda" if self.provider in ("cuda", "tensorrt") else "cpu"
        self._past_inputs = [name for i in range(arch.num_layers)
                             for name in (f"past_key_values.{i}.key", f"past_key_values.{i}.value")]
        self._present_names = [name for i in range(arch.num_layers)
                               for name in (f"present.{i}.key", f"present.{i}.value")]
        _check_io(bundle_dir / files.vision, self.vision, [VISION_INPUT], [VISION_OUTPUT])
        _check_io(bundle_dir / files.embed, self.embedder, [EMBED_INPUT], [EMBED_OUTPUT])
        _check_io(bundle_dir / files.decoder, self.decoder, [*DECODER_INPUTS, *self._past_inputs],
                  ["logits", *self._present_names])
        decoder_inputs = {i.name: i for i in self.decoder.get_inputs()}
        # Two I/O layouts: optimum's (position_ids given) and onnxruntime-genai's GroupQueryAttention
        # graphs (positions derived from the attention mask).
        self._takes_positions = "position_ids" in decoder_inputs
        self._keeps_logits = LOGITS_TO_KEEP in decoder_inputs
        self._float = _numpy_float(decoder_inputs["inputs_embeds"].type)
        self._vision_float = _numpy_float(self.vision.get_inputs()[0].type)

    def image_features(self, pixel_values: np.ndarray) -> np.ndarray:
        return self.vision.run([VISION_OUTPUT], {VISION_INPUT: pixel_values.astype(self._vision_float, copy=False)})[0]

    def embed(self, ids: np.ndarray) -> np.ndarray:
        return self.embedder.run([EMBED_OUTPUT], {EMBED_INPUT: ids.astype(np.int64, copy=False)})[0]

    @property
    def float_type(self) -> type:
        """The decoder's float type for embeddings and cache (float16 for an fp16-I/O variant)."""
        return self._float

    def empty_past(self) -> list[np.ndarray]:
        shape = (1, self.arch.num_kv_heads, 0, self.arch.head_dim)
        return [np.zeros(shape, dtype=self._float) for _ in range(2 * self.arch.num_layers)]

    def decode(self, embeds: np.ndarray, past: list, start: int) -> tuple[np.ndarray, list]:
        """Run the decoder on `embeds` [1, seq, hidden] after `start` cached positions.

        Returns the logits of the last position [vocab] (float32) and the new cache. The cache stays in
        ONNX Runtime's own buffers (I/O binding, on the GPU when the decoder runs there) from one step to
        the next instead of being copied out to numpy and back in at every token. A prefill computes the
        head over its last position only where the graph can (`logits_to_keep`, on any device); on a GPU,
        a graph without that input runs all but the last position with the logits left on the device, so
        only one position's logits ever cross to the host.
        """
        seq = embeds.shape[1]
        if self._device != "cpu" and seq > 1 and not self._keeps_logits:
            _, past = self._run(embeds[:, :-1], past, start, logits_device=self._device)
            return self.decode(embeds[:, -1:], past, start + seq - 1)
        logits, present = self._run(embeds, past, start, logits_device="cpu")
        return logits.numpy()[0, -1].astype(np.float32, copy=False), present

    @property
    def takes_batches(self) -> bool:
        """Rows padded differently can be decoded together: the decoder takes position ids (the
        GroupQueryAttention layout derives positions from the mask and assumes no padding)."""
        return self._takes_positions

    def decode_rows(self, embeds: np.ndarray, attention_mask: np.ndarray, positions: np.ndarray,
                    past: list) -> tuple[np.ndarray, list]:
        """One decoder run over several rows: `embeds` [rows, seq, hidden], `attention_mask` [rows, past + seq]
        (0 where a row is padded), `positions` [rows, seq] (each row's own). Returns the logits of each
        row's last position [rows, vocab] (float32) and the new cache."""
        if not self._takes_positions:
            raise BundleError("this decoder derives positions from the attention mask: it decodes one row at a time")
        logits, present = self._run(embeds, past, 0, logits_device="cpu", mask=attention_mask, positions=positions)
        return logits.numpy()[:, -1].astype(np.float32, copy=False), present

    def _run(self, embeds: np.ndarray, past: list, start: int, logits_device: str,
             mask: np.ndarray | None = None, positions: np.ndarray | None = None) -> tuple[ort.OrtValue, list]:
        seq = embeds.shape[1]
        if mask is None:
            mask = np.ones((1, start + seq), dtype=np.int64)
        if positions is None:
            positions = np.arange(start, start + seq, dtype=np.int64)[None, :]
        binding = self.decoder.io_binding()
        binding.bind_cpu_input("inputs_embeds", np.ascontiguousarray(embeds, dtype=self._float))
        binding.bind_cpu_input("attention_mask", np.ascontiguousarray(mask, dtype=np.int64))
        if self._takes_positions:
            binding.bind_cpu_input("position_ids", np.ascontiguousarray(positions, dtype=np.int64))
        if self._keeps_logits:
            binding.bind_cpu_input(LOGITS_TO_KEEP, np.ones(1, dtype=np.int64))  # every caller wants the last
        for name, value in zip(self._past_inputs, past, strict=True):
            if isinstance(value, np.ndarray):
                binding.bind_cpu_input(name, np.ascontiguousarray(value, dtype=self._float))
            else:
                binding.bind_ortvalue_input(name, value)
        binding.bind_output("logits", logits_device)
        for name in self._present_names:
            binding.bind_output(name, self._device)
        self.decoder.run_with_iobinding(binding)
        outputs = binding.get_outputs()
        return outputs[0], list(outputs[1:])

    def logits(self, embeds: np.ndarray, past: list[np.ndarray], start: int,
               keep: int = 0) -> tuple[np.ndarray, list[np.ndarray]]:
        """Like `decode`, with the logits of every position [seq, vocab] (float32), or of the last `keep`."""
        seq = embeds.shape[1]
        feed = {
            "inputs_embeds": embeds.astype(self._float, copy=False),
            "attention_mask": np.ones((1, start + seq), dtype=np.int64),
        }
        if self._takes_positions:
            feed["position_ids"] = np.arange(start, start + seq, dtype=np.int64)[None, :]
        if self._keeps_logits:
            feed[LOGITS_TO_KEEP] = np.array([keep], dtype=np.int64)
        for name, value in zip(self._past_inputs, past, strict=True):
            feed[name] = np.asarray(value, dtype=self._float)
        outputs = self.decoder.run(["logits", *self._present_names], feed)
        logits = outputs[0][0] if not keep else outputs[0][0][-keep:]  # a layout without logits_to_keep: all
        return logits.astype(np.float32, copy=False), outputs[1:]


def cache_prefix(past: list, length: int) -> list:
    """The first `length` positions of a KV cache (numpy or ORT values), as numpy arrays.

    A cached position depends only on the positions before it, so any prefix of a cache is the cache
    of that prefix of the sequence."""
    if past and _positions(past[0]) == length:
        return list(past)  # as it is: copying a 7 B model's cache out to numpy costs its size again
    arrays = [value if isinstance(value, np.ndarray) else value.numpy() for value in past]
    return [np.ascontiguousarray(value[:, :, :length]) for value in arrays]


def _positions(value) -> int:
    return int(value.shape[2] if isinstance(value, np.ndarray) else value.shape()[2])


def session_options(options: SessionOptions) -> ort.SessionOptions:
    """The ONNX Runtime options every graph of a bundle is opened with."""
    session_options = ort.SessionOptions()
    session_options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session_options.intra_op_num_threads = options.intra_op_threads
    session_options.inter_op_num_threads = options.inter_op_threads
    session_options.log_severity_level = 3
    # Denormal floats buy no accuracy in inference and can cost several times the speed on CPUs.
    session_options.add_session_config_entry("session.set_denormal_as_zero", "1")
    # Pool threads that spin while waiting hold a core the app, the node and other jobs need, and wait on
    # cores those hold: on a shared 2-core machine a cpu-tier token took 235 ms spinning, 146 ms not
    # (bench/engine_memory.py --interleave).
    session_options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return session_options


def _open(path: Path, choice: ProviderChoice, options: SessionOptions) -> ort.InferenceSession:
    try:
        return ort.InferenceSession(str(path), sess_options=session_options(options),
                                    providers=list(choice.ort_providers))
    except Exception as error:  # onnxruntime raises its own (unexported) exception types
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise BundleError(f"model bundle {path.parent}: {path.name} cannot be loaded by ONNX Runtime "
                          f"(corrupt or not an ONNX model?): {first_line}") from None


def _numpy_float(onnx_type: str) -> type:
    return np.float16 if onnx_type == "tensor(float16)" else np.float32


def _check_io(path: Path, session: ort.InferenceSession, inputs: list[str], outputs: list[str]) -> None:
    have_in = {i.name for i in session.get_inputs()}
    have_out = {o.name for o in session.get_outputs()}
    missing = [name for name in inputs if name not in have_in] + [name for name in outputs if name not in have_out]
    if missing:
        raise BundleError(f"model bundle {path.parent}: {path.name} lacks the inputs/outputs "
                          f"{', '.join(missing[:4])}{' ...' if len(missing) > 4 else ''} that model.json implies")
