"""Resident memory of the engine: an int4 graph costs its bytes in the layout ONNX Runtime packs it into (no
second copy of the weights), and a draft lets go of the findings' KV cache once nothing reuses it.

RSS is read from /proc/self/status of a fresh interpreter (Linux), with generous margins; nothing is timed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from bench.engine_memory import write_int4_stack
from engine.graphs import cache_prefix

ROOT = Path(__file__).resolve().parents[2]
# What the exporter writes (training/export/quantize.py QuantizeOptions): 4-bit blocks of 32, int8 compute.
BLOCK_SIZE, ACCURACY_LEVEL = 32, 4

LOAD_AND_RUN = """
import json, sys
import numpy as np
import onnxruntime as ort
from engine.graphs import SessionOptions, session_options

def resident():
    values = {}
    for line in open("/proc/self/status"):
        name, _, rest = line.partition(":")
        if name in ("RssAnon", "RssFile"):
            values[name] = int(rest.split()[0]) * 1024
    return values

before = resident()
session = ort.InferenceSession(sys.argv[1], sess_options=session_options(SessionOptions()),
                               providers=["CPUExecutionProvider"])
loaded = resident()
hidden = session.get_inputs()[0].shape[-1]
for seq in (16, 1, 1):
    session.run(None, {"inputs_embeds": np.ones((1, seq, hidden), dtype=np.float32)})
ran = resident()
print(json.dumps({"before": before, "loaded": loaded, "ran": ran}))
"""


def resident_growth(graph: Path) -> dict:
    if not Path("/proc/self/status").exists():
        pytest.skip("resident memory is read from Linux's /proc/self/status")
    done = subprocess.run([sys.executable, "-c", LOAD_AND_RUN, str(graph)], cwd=ROOT, capture_output=True, text=True,
                          check=True)
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    return {stage: {kind: figures[stage][kind] - figures["before"][kind] for kind in ("RssAnon", "RssFile")}
            for stage in ("loaded", "ran")}


def test_an_int4_graph_is_resident_once_in_its_packed_layout(tmp_path: Path) -> None:
    pytest.importorskip("onnx", reason="writing the test graph needs onnx (the training extra)")
    hidden, layers = 4096, 12
    graph = write_int4_stack(tmp_path / "stack.onnx", hidden, layers, BLOCK_SIZE, ACCURACY_LEVEL)
    weights = hidden * hidden // 2 * layers  # 4-bit
    scales = hidden * (hidden // BLOCK_SIZE) * 4 * layers
    on_disk = graph.stat().st_size + graph.with_name("stack.onnx.data").stat().st_size
    assert on_disk >= weights + scales
    growth = resident_growth(graph)
    # The int8-compute layout (accuracy_level 4) is the weights, their scales and a sum per block (as large as
    # the scales): 1.2x the file in anonymous memory; the scales stay mapped from the file besides. A second
    # copy of the weights would be 2x or more.
    for stage in ("loaded", "ran"):
        anonymous, mapped = growth[stage]["RssAnon"], growth[stage]["RssFile"]
        assert anonymous <= on_disk + scales + 64 * 2 ** 20, (stage, anonymous, on_disk)
        assert anonymous + mapped <= on_disk + 2 * scales + 96 * 2 ** 20, (stage, anonymous, mapped, on_disk)
    assert growth["loaded"]["RssAnon"] >= weights  # the weights are in memory, not left behind on disk


def test_a_cache_prefix_of_the_whole_cache_is_the_cache_itself() -> None:
    arrays = [np.arange(2 * 3 * 5 * 4, dtype=np.float32).reshape(2, 3, 5, 4) for _ in range(4)]
    values = [ort.OrtValue.ortvalue_from_numpy(array) for array in arrays]
    whole = cache_prefix(values, 5)
    assert all(a is b for a, b in zip(whole, values))
    part = cache_prefix(values, 3)
    assert [p.shape for p in part] == [(2, 3, 3, 4)] * 4
    np.testing.assert_array_equal(part[0], arrays[0][:, :, :3])


@pytest.mark.parametrize("from_findings", [False, True], ids=["impression", "impression-from-findings"])
def test_the_impression_reuses_the_findings_cache_only_when_it_continues_the_findings(
        tiny_bundle: Path, phantom_studies, from_findings: bool) -> None:
    from engine.runtime import load_model
    from engine.settings import EngineSettings

    model = load_model(tiny_bundle, EngineSettings(providers=("cpu",), variant="fp32"))
    reused: dict[str, int] = {}
    generate = model.generate

    def recording(kind, *args, reuse=(), **kwargs):
        reused[kind] = len(reuse)
        return generate(kind, *args, reuse=reuse, **kwargs)

    model.generate = recording
    options = model.default_options(max_new_tokens=6, min_new_tokens=6)
    draft = model.draft(phantom_studies[0]["paths"], options=options, impression_from_findings=from_findings)
    impression_kind = "impression_from_findings" if from_findings and draft.findings else "impression"
    assert reused["findings"] == 1  # the shared prefill
    assert reused[impression_kind] == (2 if impression_kind == "impression_from_findings" else 1)
