"""`raddraft export`: a tiny LLaVA checkpoint becomes a bundle whose ONNX graphs compute what torch computes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("optimum.exporters.onnx")
ort = pytest.importorskip("onnxruntime")

from tiny_llava import save_tiny_llava

from engine.bundle import Prompts, read_manifest, validate_bundle
from training.export import ExportError, export_bundle
from training.export.graphs import graph_files
from training.export.parity import ParityResult, engine_graphs, onnx_greedy, onnx_logits


def graph_bytes(bundle: Path, name: str) -> int:
    """A graph's size with its external data (the exported decoder always keeps its weights beside it)."""
    return sum(path.stat().st_size for path in graph_files(bundle, name))


NOTICE = "**Not for clinical use.** Trained on synthetic phantoms."


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return save_tiny_llava(tmp_path_factory.mktemp("checkpoint") / "tiny-llava")


@pytest.fixture(scope="module")
def exported(checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("bundles") / "tiny"
    steps = []
    report = export_bundle(checkpoint, out, name="tiny", version="0.1.0", quantize=["int8", "int4", "fp16"],
                           provenance={"data": "phantoms seed 0"}, metrics={"bleu4": 0.125},
                           card_notes=NOTICE, progress=lambda done, total, step: steps.append((done, total, step)))
    report.steps = steps
    return report


@pytest.fixture(scope="module")
def torch_model(checkpoint):
    from transformers import LlavaForConditionalGeneration

    return LlavaForConditionalGeneration.from_pretrained(checkpoint, attn_implementation="eager").eval()


def test_export_writes_a_valid_bundle(exported, checkpoint):
    bundle = exported.bundle_dir
    manifest = validate_bundle(bundle)
    assert manifest.model_id == "tiny@0.1.0"
    arch = manifest.architecture
    config = json.loads((checkpoint / "config.json").read_text())
    text = config["text_config"]
    assert (arch.hidden_size, arch.num_layers, arch.num_kv_heads, arch.head_dim, arch.vocab_size) == (
        text["hidden_size"], text["num_hidden_layers"], text["num_key_value_heads"], text["head_dim"],
        text["vocab_size"])
    assert (arch.image_token_id, arch.image_tokens) == (3, 16)
    assert (arch.bos_token_id, arch.eos_token_id, arch.pad_token_id) == (0, 1, 2)
    assert manifest.preprocessing.image_size == config["vision_config"]["image_size"]
    assert manifest.metrics == {"bleu4": 0.125}
    assert manifest.provenance["data"] == "phantoms seed 0"
    assert (bundle / "tokenizer.json").read_bytes() == (checkpoint / "tokenizer.json").read_bytes()
    record = json.loads((bundle / "export.json").read_text())
    assert set(record["peak_rss_bytes_after"]) == set(record["timings_s"])
    assert all(peak > 0 for peak in record["peak_rss_bytes_after"].values())
    assert record["parity"]["fp32"]["passed"] is True
    assert not [p for p in bundle.parent.iterdir() if p.name.endswith((".partial", ".old"))]
    assert exported.steps[-1][0] == exported.steps[-1][1]  # progress reached the end


def test_graph_names_are_the_bundle_format(exported):
    manifest = read_manifest(exported.bundle_dir)
    files = manifest.variants["fp32"]
    sessions = {kind: ort.InferenceSession(str(exported.bundle_dir / getattr(files, kind)))
                for kind in ("vision", "embed", "decoder")}
    names = {kind: ([i.name for i in s.get_inputs()], [o.name for o in s.get_outputs()])
             for kind, s in sessions.items()}
    assert names["vision"] == (["pixel_values"], ["image_features"])
    assert names["embed"] == (["input_ids"], ["inputs_embeds"])
    layers = manifest.architecture.num_layers
    past = {f"past_key_values.{i}.{kv}" for i in range(layers) for kv in ("key", "value")}
    # written from the weights (a Llama decoder), so the head can be asked for the last positions only
    assert set(names["decoder"][0]) == {"inputs_embeds", "attention_mask", "position_ids", "logits_to_keep"} | past
    assert set(names["decoder"][1]) == {"logits"} | {p.replace("past_key_values", "present") for p in past}


def test_fp32_parity_at_export(exported):
    result: ParityResult = exported.parity["fp32"]
    assert result.passed and result.tokens_identical
    assert result.max_logit_diff < 1e-3
    assert len(result.onnx_tokens) == 16


def test_onnx_greedy_equals_torch_greedy_on_another_prompt(exported, torch_model):
    """Independent of the export's own check: impression prompt, another image, 20 tokens."""
    from tokenizers import Tokenizer

    from engine.prompts import prompt_ids, prompt_text

    manifest = read_manifest(exported.bundle_dir)
    arch = manifest.architecture
    tokenizer = Tokenizer.from_file(str(exported.bundle_dir / "tokenizer.json"))
    ids = prompt_ids(tokenizer, prompt_text(Prompts(), "impression"), arch.image_token_id, arch.image_tokens)
    pixels = np.random.default_rng(7).uniform(-1, 1, (1, 3, 64, 64)).astype(np.float32)
    with torch.no_grad():
        generated = torch_model.generate(input_ids=torch.tensor([ids]), pixel_values=torch.from_numpy(pixels),
                                         attention_mask=torch.ones(1, len(ids), dtype=torch.int64),
                                         max_new_tokens=20, min_new_tokens=20, do_sample=False)
        expected = generated[0, len(ids):].tolist()
        logits = torch_model(input_ids=torch.tensor([ids]), pixel_values=torch.from_numpy(pixels)).logits[0].numpy()
    graphs = engine_graphs(exported.bundle_dir, manifest.variants["fp32"], arch)
    assert onnx_greedy(graphs, exported.bundle_dir / "tokenizer.json", ids, pixels, 20) == expected
    np.testing.assert_allclose(onnx_logits(graphs, ids, pixels), logits, atol=1e-4)


def test_decoder_with_past_equals_one_call(exported):
    """Prefill with an empty past, then tokens one at a time: the same logits as one call over everything."""
    manifest = read_manifest(exported.bundle_dir)
    graphs = engine_graphs(exported.bundle_dir, manifest.variants["fp32"], manifest.architecture)
    embeds = np.random.default_rng(3).standard_normal((1, 9, manifest.architecture.hidden_size)).astype(np.float32)
    whole, _ = graphs.logits(embeds, graphs.empty_past(), 0)
    logits, past = graphs.logits(embeds[:, :5], graphs.empty_past(), 0)
    pieces = [logits]
    for position in range(5, 9):
        logits, past = graphs.logits(embeds[:, position:position + 1], past, position)
        pieces.append(logits)
    assert past[0].shape[2] == 9
    np.testing.assert_allclose(np.concatenate(pieces), whole, atol=1e-5)


def test_a_prefill_computes_the_head_over_its_last_position_only(exported):
    """The engine asks the written decoder for one position's logits (`logits_to_keep`): a 1.5 B Qwen2's
    733-token prefill would otherwise compute, and hold, 445 MB of logits it never reads."""
    manifest = read_manifest(exported.bundle_dir)
    arch = manifest.architecture
    graphs = engine_graphs(exported.bundle_dir, manifest.variants["fp32"], arch)
    embeds = np.random.default_rng(4).standard_normal((1, 9, arch.hidden_size)).astype(np.float32)
    every, _ = graphs.logits(embeds, graphs.empty_past(), 0)
    returned, _ = graphs._run(embeds, graphs.empty_past(), 0, logits_device="cpu")  # what the graph hands back
    assert every.shape == (9, arch.vocab_size)
    assert returned.shape() == [1, 1, arch.vocab_size]
    last, past = graphs.decode(embeds, graphs.empty_past(), 0)
    np.testing.assert_allclose(last, every[-1], atol=1e-5)
    assert past[0].shape()[2] == 9  # the cache still holds every position


def test_vision_graph_takes_any_number_of_images(exported, torch_model):
    manifest = read_manifest(exported.bundle_dir)
    session = ort.InferenceSession(str(exported.bundle_dir / manifest.variants["fp32"].vision))
    pixels = np.random.default_rng(5).standard_normal((3, 3, 64, 64)).astype(np.float32)
    features = session.run(["image_features"], {"pixel_values": pixels})[0]
    assert features.shape == (3, manifest.architecture.image_tokens, manifest.architecture.hidden_size)
    with torch.no_grad():
        expected = torch_model.model.get_image_features(pixel_values=torch.from_numpy(pixels))
    expected = torch.stack(list(expected)) if isinstance(expected, (list, tuple)) else expected
    np.testing.assert_allclose(features, expected.numpy(), atol=1e-5)


def test_int8_variant_is_written_listed_and_measured(exported):
    bundle = exported.bundle_dir
    manifest = validate_bundle(bundle, "int8")
    files = manifest.variants["int8"]
    assert files.vision == "vision.int8.onnx" and files.decoder == "decoder.int8.onnx"
    assert graph_bytes(bundle, files.decoder) < graph_bytes(bundle, "decoder.onnx")
    agreement = manifest.provenance["export"]["parity"]["int8"]
    assert 0.0 <= agreement["greedy_agreement"] <= 1.0 and 0.0 <= agreement["top1_agreement"] <= 1.0
    assert agreement["max_logit_diff"] is not None
    card = (bundle / "MODEL_CARD.md").read_text()
    assert "| int8 |" in card and "vision.int8.onnx" in card


def test_int4_variant_is_weight_only_matmul_nbits_with_its_block_size_recorded(exported):
    import onnx

    bundle = exported.bundle_dir
    manifest = validate_bundle(bundle, "int4")
    files = manifest.variants["int4"]
    assert files.decoder == "decoder.int4.onnx" and files.embed == "embed.int4.onnx"
    ops = {node.op_type for node in onnx.load(str(bundle / files.decoder), load_external_data=False).graph.node}
    assert "MatMulNBits" in ops
    embed_ops = [node.op_type for node in onnx.load(str(bundle / files.embed)).graph.node]
    assert embed_ops == ["GatherBlockQuantized"]
    assert graph_bytes(bundle, files.embed) < 0.2 * graph_bytes(bundle, "embed.onnx")
    recorded = manifest.provenance["export"]["quantization"]["int4"]
    assert recorded["block_size"] == 32 and recorded["embed"] == "GatherBlockQuantized"
    # (at this tiny width the graph's structure outweighs its weights: the 0.35x-of-fp16 bound is checked
    # at real width in test_export_real_width.py)
    assert graph_bytes(bundle, files.decoder) < 0.5 * graph_bytes(bundle, "decoder.onnx")
    assert manifest.provenance["export"]["parity"]["int4"]["tolerance"] > 0
    assert "| int4 |" in (bundle / "MODEL_CARD.md").read_text()


def test_fp16_variant_takes_and_returns_float16_and_drafts(exported, tmp_path):
    from engine.runtime import load_model
    from engine.settings import EngineSettings
    from training.data.phantoms import PhantomConfig, generate_dataset

    bundle = exported.bundle_dir
    graphs = engine_graphs(bundle, validate_bundle(bundle, "fp16").variants["fp16"], exported.manifest.architecture)
    assert graphs.float_type is np.float16
    assert graphs.empty_past()[0].dtype == np.float16
    generate_dataset(tmp_path / "study", 1, seed=5, config=PhantomConfig(image_size=64, workers=1))
    for variant in ("fp16", "int4", "int8"):
        model = load_model(bundle, EngineSettings(providers=("cpu",), variant=variant))
        draft = model.draft(sorted((tmp_path / "study").rglob("*.dcm")),
                            options=model.default_options(max_new_tokens=6, min_new_tokens=6))
        assert draft.variant == variant and draft.findings and draft.impression
        assert model.load_seconds > 0 and model.resident_bytes > 0


def test_model_card(exported):
    card = (exported.bundle_dir / "MODEL_CARD.md").read_text()
    assert card.startswith("# tiny 0.1.0")
    assert NOTICE in card
    assert "| bleu4 | 0.125 |" in card
    assert "phantoms seed 0" in card
    assert "| fp32 (default) |" in card and "100%" in card
    assert f"{exported.parameters['total']:,}" in card


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(ExportError, match="no such folder"):
        export_bundle(tmp_path / "absent", tmp_path / "out", name="x", version="1")
    assert not (tmp_path / "out").exists()


def test_non_llava_config_is_a_clear_error(tmp_path):
    folder = tmp_path / "gpt"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(ExportError, match="model_type is 'gpt2', not 'llava'"):
        export_bundle(folder, tmp_path / "out", name="x", version="1")
    assert not (tmp_path / "out").exists()


def test_non_empty_folder_is_not_overwritten(checkpoint, tmp_path):
    out = tmp_path / "precious"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(ExportError, match="not empty"):
        export_bundle(checkpoint, out, name="x", version="1")
    assert (out / "notes.txt").read_text() == "keep me"


def test_failed_parity_leaves_no_bundle(checkpoint, tmp_path, monkeypatch):
    from training.export import parity

    real = parity.check_variant

    def disagreeing(*args, **kwargs):
        result = real(*args, **kwargs)
        result.onnx_tokens = [t + 1 for t in result.onnx_tokens]
        result.tokens_identical = False
        return result

    monkeypatch.setattr(parity, "check_variant", disagreeing)
    out = tmp_path / "bundle"
    with pytest.raises(ExportError, match="disagree with the torch model"):
        export_bundle(checkpoint, out, name="x", version="1")
    assert list(tmp_path.iterdir()) == []


def test_cli_exports_end_to_end(checkpoint, tmp_path, capsys):
    from raddraft.cli import main

    out = tmp_path / "cli-bundle"
    out.mkdir()  # a previous bundle (model.json present) is replaced without --overwrite
    (out / "model.json").write_text("{}")
    (out / "stale.onnx").write_text("old")
    assert main(["export", "--checkpoint", str(checkpoint), "--out", str(out), "--name", "cli", "--version", "2",
                 "--no-parity", "--quantize", "fp16", "int4", "--quantize", "int8"]) == 0
    manifest = validate_bundle(out, "fp16")
    assert list(manifest.variants) == ["fp32", "fp16", "int4", "int8"]
    assert manifest.model_id == "cli@2"
    printed = capsys.readouterr().out
    assert "cli@2" in printed and "decoder.onnx" in printed and "parity not checked" in printed
    assert not (out / "stale.onnx").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cli-bundle"]


@pytest.mark.parametrize("make_input, message", [
    (lambda tmp: tmp / "absent", "no such folder"),
    (lambda tmp: (tmp / "config.json").write_text('{"model_type": "bert"}') and tmp, "not 'llava'"),
])
def test_cli_bad_input_is_one_line_and_exit_2(tmp_path, capsys, make_input, message):
    from raddraft.cli import main

    checkpoint = make_input(tmp_path)
    assert main(["export", "--checkpoint", str(checkpoint), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "Traceback" not in err and len(err.splitlines()) == 1


def test_bundle_can_carry_its_checkpoint_for_fine_tuning(checkpoint, tmp_path):
    report = export_bundle(checkpoint, tmp_path / "with-checkpoint", name="tiny", version="0.1.0",
                           parity=False, include_checkpoint=True)
    bundle = report.bundle_dir
    manifest = validate_bundle(bundle)
    assert manifest.checkpoint == "checkpoint"
    copied = bundle / manifest.checkpoint
    assert {p.name for p in copied.iterdir()} >= {"config.json", "model.safetensors", "tokenizer.json"}
    assert (copied / "model.safetensors").read_bytes() == (checkpoint / "model.safetensors").read_bytes()
    assert "checkpoint/model.safetensors" in report.files
    assert read_manifest(export_bundle(checkpoint, tmp_path / "without", name="tiny", version="0.1.0",
                                       parity=False).bundle_dir).checkpoint is None


def test_a_checkpoint_path_leaving_the_bundle_is_refused(exported, tmp_path):
    import shutil

    from engine.errors import BundleError

    bundle = tmp_path / "bundle"
    shutil.copytree(exported.bundle_dir, bundle)
    data = json.loads((bundle / "model.json").read_text())
    data["checkpoint"] = "../elsewhere"
    (bundle / "model.json").write_text(json.dumps(data))
    with pytest.raises(BundleError, match="checkpoint must name a folder inside the bundle"):
        read_manifest(bundle)


def test_embedded_bundle_checkpoint_is_the_model_its_graphs_run():
    """The shipped checkpoint (what site fine-tuning starts from) gives the fp32 graphs' logits."""
    from training.export.bundle import architecture, load_checkpoint
    from training.export.parity import check_variant, make_inputs, torch_reference

    bundle = Path(__file__).resolve().parents[2] / "resources" / "models" / "raddraft-phantom-cxr"
    manifest = validate_bundle(bundle)
    model = load_checkpoint(bundle / manifest.checkpoint)
    arch = architecture(model, bundle / manifest.tokenizer)
    assert arch == manifest.architecture
    inputs = make_inputs(bundle / manifest.tokenizer, arch, manifest.prompts, manifest.preprocessing.image_size)
    result = check_variant("fp32", bundle, manifest.variants["fp32"], arch, inputs,
                           torch_reference(model, inputs, arch.eos_token_id))
    assert result.passed, result.to_dict()
