"""Where a bundle's resident memory goes, and what the ONNX Runtime session settings cost in memory and speed.

    python -m bench.engine_memory --graph /tmp/rs/cpu-tier-bundle/decoder.int4.onnx
    python -m bench.engine_memory --graph BUNDLE/decoder.int4.onnx --config engine --config no-prepack
    python -m bench.engine_memory --bandwidth          # this machine's memory bandwidth and GEMM throughput

Each (graph, configuration) is opened in a fresh interpreter with the session options engine/graphs.py uses,
changed by the configuration; the child reads its own /proc/self/status (VmRSS, VmHWM and the anonymous /
file-backed split: memory-mapped weights show as file pages) after loading and after a prefill of
`--prompt` tokens + `--steps` decode steps through I/O binding (as the engine decodes), and times those.
One table, one row per graph and configuration.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

# name -> (session config entries, SessionOptions attributes); "engine" is engine/graphs.py's own
CONFIGS: dict[str, tuple[dict[str, str], dict[str, object]]] = {
    "engine": ({}, {}),
    "no-prepack": ({"session.disable_prepacking": "1"}, {}),
    "no-arena": ({}, {"enable_cpu_mem_arena": False}),
    "no-arena+no-prepack": ({"session.disable_prepacking": "1"}, {"enable_cpu_mem_arena": False}),
    "initializers-no-arena": ({"session.use_device_allocator_for_initializers": "1"}, {}),
    "opt-basic": ({}, {"graph_optimization_level": "ORT_ENABLE_BASIC"}),
    "opt-extended": ({}, {"graph_optimization_level": "ORT_ENABLE_EXTENDED"}),
    "opt-disabled": ({}, {"graph_optimization_level": "ORT_DISABLE_ALL"}),
    "env-allocators": ({"session.use_env_allocators": "1"}, {}),
    "threads-1": ({}, {"intra_op_num_threads": 1}),
    "threads-2": ({}, {"intra_op_num_threads": 2}),
    "no-spin": ({"session.intra_op.allow_spinning": "0"}, {}),
    "spin": ({"session.intra_op.allow_spinning": "1"}, {}),  # the engine's before it stopped spinning
    "no-mem-pattern": ({}, {"enable_mem_pattern": False}),
}

STATUS_FIELDS = ("VmRSS", "VmHWM", "RssAnon", "RssFile")


def status() -> dict[str, int]:
    """This process's memory (bytes) from /proc/self/status."""
    values = {}
    with open("/proc/self/status", encoding="ascii") as lines:
        for line in lines:
            name, _, rest = line.partition(":")
            if name in STATUS_FIELDS:
                values[name] = int(rest.split()[0]) * 1024
    return values


def session_options(config: str, options=None):
    """`options` (default: the engine's own) changed by `config`."""
    import onnxruntime as ort

    from engine.graphs import SessionOptions
    from engine.graphs import session_options as engine_options

    entries, attributes = CONFIGS[config]
    options = options or engine_options(SessionOptions())
    for key, value in entries.items():
        options.add_session_config_entry(key, value)
    for name, value in attributes.items():
        if name == "graph_optimization_level":
            value = getattr(ort.GraphOptimizationLevel, str(value))
        setattr(options, name, value)
    return options


def open_session(graph: Path, config: str):
    import onnxruntime as ort

    if CONFIGS[config][0].get("session.use_env_allocators") == "1":
        ort.create_and_register_allocator(ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0,
                                                            ort.OrtMemType.DEFAULT), None)
    return ort.InferenceSession(str(graph), sess_options=session_options(config), providers=["CPUExecutionProvider"])


def decoder_feed(session, prompt: int):
    """Random inputs_embeds of `prompt` positions and an empty cache, in the decoder's dims."""
    import numpy as np

    inputs = {i.name: i for i in session.get_inputs()}
    hidden = inputs["inputs_embeds"].shape[-1]
    rng = np.random.default_rng(0)
    embeds = (rng.standard_normal((1, prompt, hidden)) * 0.02).astype(np.float32)
    if "past_key_values.0.key" not in inputs:  # a stack of layers without attention (write_int4_stack)
        return embeds, None, False
    key = inputs["past_key_values.0.key"].shape
    layers = sum(1 for name in inputs if name.startswith("past_key_values.") and name.endswith(".key"))
    past = [np.zeros((1, key[1], 0, key[3]), dtype=np.float32) for _ in range(2 * layers)]
    return embeds, past, "position_ids" in inputs


def decoder_run(session, embeds, past, start: int, positions: bool):
    """One decoder run through I/O binding, the cache left in ONNX Runtime's buffers (engine.graphs._run)."""
    import numpy as np

    if past is None:
        return session.run(None, {"inputs_embeds": embeds})[0], None
    seq = embeds.shape[1]
    layers = len(past) // 2
    binding = session.io_binding()
    binding.bind_cpu_input("inputs_embeds", np.ascontiguousarray(embeds))
    binding.bind_cpu_input("attention_mask", np.ones((1, start + seq), dtype=np.int64))
    if positions:
        binding.bind_cpu_input("position_ids", np.arange(start, start + seq, dtype=np.int64)[None, :])
    from engine.bundle import LOGITS_TO_KEEP

    if LOGITS_TO_KEEP in {i.name for i in session.get_inputs()}:
        binding.bind_cpu_input(LOGITS_TO_KEEP, np.ones(1, dtype=np.int64))  # as the engine runs it
    names = [f"past_key_values.{i}.{kind}" for i in range(layers) for kind in ("key", "value")]
    for name, value in zip(names, past):
        if isinstance(value, np.ndarray):
            binding.bind_cpu_input(name, value)
        else:
            binding.bind_ortvalue_input(name, value)
    binding.bind_output("logits", "cpu")
    for i in range(layers):
        for kind in ("key", "value"):
            binding.bind_output(f"present.{i}.{kind}", "cpu")
    session.run_with_iobinding(binding)
    outputs = binding.get_outputs()
    return outputs[0], list(outputs[1:])


def measure(graph: Path, config: str, prompt: int, steps: int) -> dict:
    """Memory after loading `graph` and after running it (skipped when `prompt` is 0), and its times."""
    import numpy as np

    started = time.perf_counter()
    session = open_session(graph, config)
    result = {"load_s": time.perf_counter() - started, "after_load": status()}
    if prompt == 0:
        return {**result, "after_run": result["after_load"]}
    names = {i.name for i in session.get_inputs()}
    if "inputs_embeds" in names:
        embeds, past, positions = decoder_feed(session, prompt)
        started = time.perf_counter()
        _, past = decoder_run(session, embeds, past, 0, positions)
        result["prefill_s"] = time.perf_counter() - started
        times = []
        for step in range(steps):
            started = time.perf_counter()
            _, past = decoder_run(session, embeds[:, -1:], past, prompt + step, positions)
            times.append(time.perf_counter() - started)
        result["ms_per_token"] = 1000 * statistics.median(times)
    else:
        first = session.get_inputs()[0]
        dims = [d if isinstance(d, int) else 1 for d in first.shape]
        feed = np.zeros(dims, dtype=np.int64 if "int64" in first.type else np.float32)
        started = time.perf_counter()
        session.run(None, {first.name: feed})
        result["run_s"] = time.perf_counter() - started
    result["after_run"] = status()
    return result


def interleaved(sides: list[tuple[Path, str]], prompt: int, steps: int, rounds: int) -> list[dict]:
    """Prefill and decode times of several (graph, configuration) sessions opened in one process and run in
    turn, round after round, so that a machine shared with other work slows each alike; medians."""
    loaded, results = [], []
    for graph, config in sides:
        before = status()["RssAnon"] + status()["RssFile"]
        session = open_session(graph, config)
        loaded.append(session)
        results.append({"resident_added": status()["RssAnon"] + status()["RssFile"] - before,
                        "prefill": [], "token": []})
    for _ in range(rounds):
        for session, result in zip(loaded, results):
            embeds, past, positions = decoder_feed(session, prompt)
            started = time.perf_counter()
            _, past = decoder_run(session, embeds, past, 0, positions)
            result["prefill"].append(time.perf_counter() - started)
            for step in range(steps):
                started = time.perf_counter()
                _, past = decoder_run(session, embeds[:, -1:], past, prompt + step, positions)
                result["token"].append(time.perf_counter() - started)
    return [{"resident_added": r["resident_added"], "prefill_s": statistics.median(r["prefill"]),
             "ms_per_token": 1000 * statistics.median(r["token"])} for r in results]


def write_int4_stack(path: Path, hidden: int, layers: int, block_size: int = 32, accuracy_level: int = 4) -> Path:
    """A decoder-like chain of `layers` int4 MatMulNBits [hidden x hidden] with random weights (input
    "inputs_embeds" [batch, seq, hidden], output "hidden"), its weights in `<path>.data` at 4 KiB offsets
    as the exporter writes them: the part of a real int4 decoder that holds its memory, without a model."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    blocks = hidden // block_size
    nodes, weights, current = [], [], "inputs_embeds"
    for layer in range(layers):
        packed = rng.integers(0, 256, (hidden, blocks, block_size // 2), dtype=np.uint8)
        scales = (rng.random(hidden * blocks, dtype=np.float32) * 0.02).astype(np.float32)
        weights += [numpy_helper.from_array(packed, f"w{layer}"), numpy_helper.from_array(scales, f"s{layer}")]
        output = f"h{layer}" if layer < layers - 1 else "hidden"
        nodes.append(helper.make_node("MatMulNBits", [current, f"w{layer}", f"s{layer}"], [output], domain="com.microsoft",
                                      K=hidden, N=hidden, bits=4, block_size=block_size, accuracy_level=accuracy_level))
        current = output
    graph = helper.make_graph(nodes, "int4-stack",
                              [helper.make_tensor_value_info("inputs_embeds", TensorProto.FLOAT, ["batch", "seq", hidden])],
                              [helper.make_tensor_value_info("hidden", TensorProto.FLOAT, ["batch", "seq", hidden])],
                              weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.with_name(path.name + ".data").unlink(missing_ok=True)
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=path.name + ".data", size_threshold=0)
    return path


def with_accuracy_level(graph: Path, level: int, work: Path) -> Path:
    """A copy of `graph` whose MatMulNBits nodes compute at `level` (0: fp32, 4: int8), with a copy of its
    weights (onnxruntime refuses external data reached through a link out of the graph's folder)."""
    import onnx

    model = onnx.load(str(graph), load_external_data=False)
    for node in model.graph.node:
        if node.op_type == "MatMulNBits":
            for attribute in node.attribute:
                if attribute.name == "accuracy_level":
                    attribute.i = level
    folder = work / f"{graph.parent.name}-accuracy{level}"
    folder.mkdir(parents=True, exist_ok=True)
    data = graph.with_name(graph.name + ".data")
    if data.exists() and not (folder / data.name).exists():
        shutil.copyfile(data, folder / (data.name + ".part"))
        (folder / (data.name + ".part")).rename(folder / data.name)
    target = folder / graph.name
    onnx.save_model(model, str(target))
    return target


def draft_memory(bundle: Path, variant: str, study: Path, new_tokens: int, config: str) -> dict:
    """Memory of the engine drafting one study (the steps of DraftModel.draft), read after each step; the
    sessions opened with `config` ("engine": the engine's own options)."""
    import engine.graphs
    from engine.runtime import load_model
    from engine.settings import EngineSettings

    engine_options = engine.graphs.session_options
    # the bench's configurations are changes to the engine's options: applied where the engine builds them
    engine.graphs.session_options = lambda options: session_options(config, engine_options(options))
    model = load_model(bundle, EngineSettings(providers=("cpu",), variant=variant))
    stages = {"load": status()}
    times = {"load_s": model.load_seconds}
    options = model.default_options(max_new_tokens=new_tokens, min_new_tokens=new_tokens)
    started = time.perf_counter()
    prepared = model.prepare(sorted(study.rglob("*.dcm")))
    features = model.image_features(prepared)
    stages["vision"] = status()
    layout = model.prompt_layout(prepared)
    shared, times["shared_prefill_s"] = model._shared_prefill(features, options, **layout)
    stages["shared prefill"] = status()
    findings = model.generate("findings", features, options, reuse=shared, **layout)
    stages["findings"] = status()
    reuse = (*shared, *((findings.state,) if findings.state else ()))
    impression = model.generate("impression", features, options, findings=findings.text, reuse=reuse, **layout)
    stages["impression"] = status()
    times["draft_s"] = time.perf_counter() - started
    times["ms_per_token"] = 1000 * (findings.decode_s + impression.decode_s) / max(
        len(findings.token_ids) + len(impression.token_ids), 1)
    times["prompt_tokens"] = findings.prompt_tokens
    return {"stages": stages, **times}


def timed(work, repeats: int) -> tuple[float, float]:
    """Median wall seconds and median CPU seconds (all threads) of `work()`: on a machine shared with other
    jobs, work / CPU second is what a core gives while it runs, the figure a quiet machine would show."""
    walls, cpus = [], []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        work()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return statistics.median(walls), statistics.median(cpus)


def bandwidth(size_bytes: int = 2 * 2 ** 30, repeats: int = 5) -> dict:
    """Read and copy bandwidth over `size_bytes` (one thread, median of `repeats`), and fp32 / int8 GEMM
    throughput; each per wall second and per CPU second."""
    import numpy as np

    data = np.ones(size_bytes // 8, dtype=np.float64)
    target = np.empty_like(data)
    target.fill(0)
    result = {}
    for name, work, moved in (("read GB/s (numpy sum, 1 thread)", data.sum, size_bytes),
                              ("copy GB/s (read + write, 1 thread)", lambda t=target, d=data: np.copyto(t, d),
                               2 * size_bytes)):
        wall, cpu = timed(work, repeats)
        result[name] = (moved / wall / 1e9, moved / cpu / 1e9)
    del data, target
    return {**result, **gemm_throughput(repeats)}


def gemm_throughput(repeats: int, m: int = 512, k: int = 4096, n: int = 4096) -> dict:
    """fp32 GEMM through numpy's BLAS, and fp32 / int8 MatMul through ONNX Runtime (MatMulInteger: u8 x s8),
    [m, k] x [k, n]."""
    import numpy as np
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((m, k), dtype=np.float32), rng.standard_normal((k, n), dtype=np.float32)
    flops = 2 * m * k * n
    wall, cpu = timed(lambda: a @ b, repeats)
    result = {"numpy fp32 GEMM GFLOP/s": (flops / wall / 1e9, flops / cpu / 1e9)}
    graphs = {
        "onnxruntime fp32 MatMul GFLOP/s": (helper.make_node("MatMul", ["A", "B"], ["Y"]), TensorProto.FLOAT, a, b,
                                            TensorProto.FLOAT),
        "onnxruntime int8 MatMulInteger GOP/s": (
            helper.make_node("MatMulInteger", ["A", "B"], ["Y"]), TensorProto.UINT8,
            rng.integers(0, 255, (m, k), dtype=np.uint8), rng.integers(-127, 127, (k, n), dtype=np.int8),
            TensorProto.INT32),
    }
    for name, (node, a_type, a_value, b_value, y_type) in graphs.items():
        graph = helper.make_graph([node], "gemm", [helper.make_tensor_value_info("A", a_type, [m, k])],
                                  [helper.make_tensor_value_info("Y", y_type, [m, n])],
                                  [numpy_helper.from_array(b_value, "B")])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        session.run(None, {"A": a_value})
        wall, cpu = timed(lambda session=session, a_value=a_value: session.run(None, {"A": a_value}), repeats)
        result[name] = (flops / wall / 1e9, flops / cpu / 1e9)
    return result


def run_child(*args: str, timeout_s: float = 600) -> dict:
    try:
        done = subprocess.run([sys.executable, "-m", "bench.engine_memory", "--child", *args], check=False,
                              capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {"error": f"over {timeout_s:.0f} s"}
    if done.returncode != 0:
        return {"error": (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def graph_bytes(graph: Path) -> int:
    data = graph.with_name(graph.name + ".data")
    return graph.stat().st_size + (data.stat().st_size if data.exists() else 0)


def gb(n: float) -> str:
    return f"{n / 1e9:.2f}"


def bundle_bytes(bundle: Path, variant: str) -> int:
    files = json.loads((bundle / "model.json").read_text())["variants"][variant]
    return sum(graph_bytes(bundle / name) for name in set(files.values()))


def print_table(rows: list[tuple[str, int, str, dict]]) -> None:
    print("| graph | on disk GB | config | load s | RSS after load GB (anon + file) | HWM after load GB | "
          "RSS after run GB | HWM after run GB | prefill s | ms/token |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for label, size, config, r in rows:
        if "error" in r:
            print(f"| {label} | {gb(size)} | {config} | failed: {r['error']} |||||||")
            continue
        load, run = r["after_load"], r["after_run"]
        prefill = f"{r['prefill_s']:.2f}" if "prefill_s" in r else f"{r.get('run_s', 0):.2f} (one run)"
        token = f"{r['ms_per_token']:.0f}" if "ms_per_token" in r else "-"
        print(f"| {label} | {gb(size)} | {config} | {r['load_s']:.1f} | {gb(load['VmRSS'])} "
              f"({gb(load['RssAnon'])} + {gb(load['RssFile'])}) | {gb(load['VmHWM'])} | {gb(run['VmRSS'])} | "
              f"{gb(run['VmHWM'])} | {prefill} | {token} |", flush=True)


def print_drafts(args: argparse.Namespace, drafts: list[tuple[str, dict]]) -> None:
    size = bundle_bytes(args.draft, args.variant)
    print(f"{args.draft.name} {args.variant}: {gb(size)} GB of graphs; {args.new_tokens} new tokens per section")
    print("| config | stage | VmRSS GB | RssAnon GB | RssFile GB | VmHWM GB |\n|---|---|---|---|---|---|")
    for config, result in drafts:
        if "error" in result:
            print(f"| {config} | failed: {result['error']} |||||")
            continue
        for stage, values in result["stages"].items():
            print(f"| {config} | after {stage} | {gb(values['VmRSS'])} | {gb(values['RssAnon'])} | "
                  f"{gb(values['RssFile'])} | {gb(values['VmHWM'])} |")
    print("\n| config | load s | prompt tokens | shared prefill s | ms/token | draft s |\n|---|---|---|---|---|---|")
    for config, result in drafts:
        if "error" not in result:
            print(f"| {config} | {result['load_s']:.1f} | {result['prompt_tokens']} | "
                  f"{result['shared_prefill_s']:.2f} | {result['ms_per_token']:.0f} | {result['draft_s']:.1f} |")


def print_interleaved(pairs: list[tuple[Path, str]], result: dict, args: argparse.Namespace) -> None:
    if "error" in result:
        raise SystemExit(f"interleaved run failed: {result['error']}")
    print(f"| graph | config | resident added GB | prefill {args.prompt} s | ms/token "
          f"(medians of {args.interleave} rounds x {args.steps} steps, run in turn) |")
    print("|---|---|---|---|---|")
    for (graph, config), side in zip(pairs, result["sides"]):
        print(f"| {graph.parent.name}/{graph.name} | {config} | {gb(side['resident_added'])} | "
              f"{side['prefill_s']:.2f} | {side['ms_per_token']:.0f} |")


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        kind, *rest = sys.argv[2:]
        if kind == "bandwidth":
            result = bandwidth()
        elif kind == "interleaved":
            prompt, steps, rounds, *pairs = rest
            sides = [(Path(pairs[i]), pairs[i + 1]) for i in range(0, len(pairs), 2)]
            result = {"sides": interleaved(sides, int(prompt), int(steps), int(rounds))}
        elif kind == "draft":
            result = draft_memory(Path(rest[0]), rest[1], Path(rest[2]), int(rest[3]), rest[4])
        else:
            result = measure(Path(rest[0]), rest[1], int(rest[2]), int(rest[3]))
        print(json.dumps(result))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--graph", type=Path, action="append", default=[], help="an ONNX graph (repeat)")
    parser.add_argument("--config", action="append", choices=sorted(CONFIGS),
                        help="session configurations to compare (repeat; default: all)")
    parser.add_argument("--prompt", type=int, default=32, help="prefill positions (decoders)")
    parser.add_argument("--steps", type=int, default=8, help="decode steps timed after the prefill (median)")
    parser.add_argument("--bandwidth", action="store_true", help="measure memory bandwidth and GEMM throughput")
    parser.add_argument("--timeout", type=float, default=600, help="seconds one configuration may take")
    parser.add_argument("--accuracy-level", type=int, action="append", default=[],
                        help="also measure each --graph with its MatMulNBits at this accuracy_level (repeat)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/engine-memory"),
                        help="folder for the re-levelled graph copies")
    parser.add_argument("--stack", action="append", default=[], metavar="HIDDEN,LAYERS,BLOCK,LEVEL",
                        help="also measure a synthetic chain of int4 MatMulNBits (write_int4_stack) (repeat)")
    parser.add_argument("--interleave", type=int, default=0, metavar="ROUNDS",
                        help="time every graph and configuration in one process, in turn for ROUNDS rounds")
    parser.add_argument("--draft", type=Path, help="a bundle: measure the engine's draft of --study with it")
    parser.add_argument("--variant", default="int4")
    parser.add_argument("--study", type=Path, help="a folder of one study's DICOM files (with --draft)")
    parser.add_argument("--new-tokens", type=int, default=95, help="new tokens per section (with --draft)")
    args = parser.parse_args()
    if args.bandwidth:
        figures = run_child("bandwidth")
        if "error" in figures:
            raise SystemExit(f"bandwidth run failed: {figures['error']}")
        cores = os.cpu_count() or 1
        print(f"| measure | per wall second | per CPU second | x {cores} cores (a quiet machine) |\n|---|---|---|---|")
        for name, (wall, cpu) in figures.items():
            threads = 1 if "1 thread" in name else cores
            print(f"| {name} | {wall:.1f} | {cpu:.1f} | {cpu * threads:.1f} |")
    rows = []
    if args.draft:
        print_drafts(args, [(config, run_child("draft", str(args.draft), args.variant, str(args.study),
                                               str(args.new_tokens), config, timeout_s=args.timeout))
                            for config in args.config or ["engine"]])
        return
    for spec in args.stack:
        hidden, layers, block, level = (int(part) for part in spec.split(","))
        args.graph.append(write_int4_stack(args.work / f"stack-{hidden}x{layers}-block{block}-level{level}" /
                                           "stack.onnx", hidden, layers, block, level))
    graphs = list(args.graph) + [with_accuracy_level(graph, level, args.work)
                                 for graph in args.graph for level in args.accuracy_level]
    if args.interleave:
        pairs = [(graph, config) for graph in graphs for config in args.config or list(CONFIGS)]
        result = run_child("interleaved", str(args.prompt), str(args.steps), str(args.interleave),
                           *[str(item) for pair in pairs for item in pair], timeout_s=args.timeout)
        print_interleaved(pairs, result, args)
        return
    for graph in graphs:
        for config in args.config or list(CONFIGS):
            rows.append((f"{graph.parent.name}/{graph.name}", graph_bytes(graph), config, run_child("measure", str(graph), config, str(args.prompt), str(args.steps),
                                                  timeout_s=args.timeout)))
            print(f"{graph.name} {config}: done", file=sys.stderr, flush=True)
    if rows:
        print_table(rows)


if __name__ == "__main__":
    main()
