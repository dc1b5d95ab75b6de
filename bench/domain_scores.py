"""Domain scores of a bundle: a phantom test split vs any folder of studies (and corrupted phantoms), as a
side-by-side table and a histogram PNG.

    .venv/bin/python -m bench.domain_scores --phantom-seed 90001 --phantom-studies 300 \
        --folder .venv/lib/python3.11/site-packages/pydicom/data/test_files --corrupted --png docs/domain_scores.png

`--folder`: every DICOM file with pixels in it (recursively) is one study; without `--folder`, pydicom's and
pynetdicom's own test images (real CT, MR, US, NM, secondary captures; nobody here made them).
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import warnings
from pathlib import Path

import numpy as np


def _real_files(folder: Path | None) -> list[Path]:
    if folder is not None:
        return sorted(p for p in folder.rglob("*") if p.is_file())
    import pydicom
    import pynetdicom

    base = Path(pydicom.__file__).parent / "data" / "test_files"
    return sorted(p for p in base.rglob("*") if p.is_file()) + \
        sorted((Path(pynetdicom.__file__).parent / "tests" / "dicom_files").glob("*"))


def _score_files(model, files: list[Path]) -> list[float]:
    import pydicom

    scores = []
    for file in files:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ds = pydicom.dcmread(file, force=True)
                if "PixelData" not in ds:
                    continue
                study = model.prepare([ds])
        except Exception:  # not an image the engine would draft: it is refused before any score
            continue
        scores.append(model.domain_state(model.image_features(study)).score)
    return scores


def _phantoms(seed: int, studies: int, size: int, out: Path) -> list[list[Path]]:
    from training.data.phantoms import PhantomConfig, generate_dataset

    generate_dataset(out, studies, seed=seed, config=PhantomConfig(image_size=size, lateral_fraction=0.35, workers=1))
    records = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    return [[out / image for image in record["images"]] for record in records]


def _corrupted(model, studies: list[list[Path]], seed: int) -> dict[str, list[float]]:
    rng = np.random.default_rng(seed)
    prep = model.manifest.preprocessing
    mean, std = np.float32(prep.mean[0]), np.float32(prep.std[0])
    out: dict[str, list[float]] = {"noise (sd 0.5)": [], "inverted": [], "corner (1/4, enlarged)": []}
    for paths in studies:
        pixels = model.prepare(paths).pixel_values[:1]
        unit = pixels * std + mean
        size = pixels.shape[-1]
        images = {"noise (sd 0.5)": np.clip(unit + rng.normal(0, 0.5, unit.shape), 0, 1), "inverted": 1 - unit,
                  "corner (1/4, enlarged)": np.kron(unit[..., : size // 4, : size // 4], np.ones((1, 1, 4, 4)))}
        for name, image in images.items():
            features = model.graphs.image_features(((image - mean) / std).astype(np.float32))
            out[name].append(model.domain_state(features).score)
    return out


def _row(name: str, scores: list[float], threshold: float, expect_in: bool) -> str:
    values = np.asarray(scores, dtype=float)
    share = np.mean(values <= threshold) if expect_in else np.mean(values > threshold)
    verdict = f"{share:6.1%} in" if expect_in else f"{share:6.1%} out"
    return (f"| {name:<34} | {len(values):5d} | {np.min(values):7.1f} | {np.percentile(values, 5):7.1f} | "
            f"{np.median(values):7.1f} | {np.percentile(values, 95):7.1f} | {np.max(values):7.1f} | {verdict:>10} |")


def _histogram(groups: dict[str, list[float]], threshold: float, png: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(9, 4.5))
    top = max(max(v) for v in groups.values() if v)
    bins = np.geomspace(max(min(min(v) for v in groups.values() if v), 1.0), top * 1.05, 60)
    for name, scores in groups.items():
        if scores:
            axes.hist(scores, bins=bins, alpha=0.55, label=f"{name} ({len(scores)})")
    axes.axvline(threshold, color="#d0021b", linestyle="--", label=f"threshold {threshold:.1f}")
    axes.set_xscale("log")
    axes.set_xlabel("domain score (Mahalanobis distance, log scale)")
    axes.set_ylabel("images")
    axes.set_title(title)
    axes.legend(fontsize=8)
    figure.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(png, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="bundle (default: the embedded model)")
    parser.add_argument("--variant", default="fp32")
    parser.add_argument("--phantom-seed", type=int, default=90001)
    parser.add_argument("--phantom-studies", type=int, default=300)
    parser.add_argument("--folder", type=Path, help="studies to compare (default: pydicom's and pynetdicom's images)")
    parser.add_argument("--corrupted", action="store_true", help="also score 60 corrupted phantoms of each kind")
    parser.add_argument("--png", type=Path, default=Path("docs/domain_scores.png"))
    args = parser.parse_args()
    logging.disable(logging.WARNING)

    from engine.runtime import load_model
    from engine.settings import EngineSettings
    from raddraft.resources import embedded_model_dir

    model = load_model(args.model or embedded_model_dir(), EngineSettings(providers=("cpu",), variant=args.variant))
    if model.domain_signature is None:
        raise SystemExit(f"{model.model_id} has no domain signature")
    threshold = model.domain_signature.threshold(model.variant)
    with tempfile.TemporaryDirectory() as tmp:
        studies = _phantoms(args.phantom_seed, args.phantom_studies, model.manifest.preprocessing.image_size,
                            Path(tmp))
        phantom_scores = [model.domain_state(model.image_features(model.prepare(p))).score for p in studies]
        corrupted = _corrupted(model, studies[:60], args.phantom_seed) if args.corrupted else {}
    real = _score_files(model, _real_files(args.folder))
    where = str(args.folder) if args.folder else "pydicom + pynetdicom test images"
    print(f"{model.model_id} ({model.variant}), threshold {threshold:.2f} "
          f"({model.manifest.domain.get('percentile')}th percentile of validation)")
    print("| set                                | count |     min |      p5 |  median |     p95 |     max |    verdict |")
    print("|---|---|---|---|---|---|---|---|")
    print(_row(f"phantoms seed {args.phantom_seed}", phantom_scores, threshold, True))
    print(_row(where[:34], real, threshold, False))
    for name, scores in corrupted.items():
        print(_row(f"corrupted: {name}", scores, threshold, False))
    groups = {f"phantoms seed {args.phantom_seed}": phantom_scores, where: real, **corrupted}
    _histogram(groups, threshold, args.png, f"{model.model_id}: domain scores")
    print(f"histogram: {args.png}")


if __name__ == "__main__":
    main()
