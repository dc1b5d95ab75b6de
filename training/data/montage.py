"""A labeled montage of phantom frontal views, one per finding, for eyeballing the generator.

    python -m training.data.montage --out docs/phantoms.png [--size 256] [--seed 7]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from training.data.findings import Finding
from training.data.phantoms import PhantomConfig, plan_study, render_study

EXAMPLES: list[tuple[str, tuple[Finding, ...]]] = [
    ("normal", ()),
    ("right pleural effusion (moderate)", (Finding("pleural_effusion", side="right", severity="moderate"),)),
    ("left pneumothorax (moderate)", (Finding("pneumothorax", side="left", severity="moderate"),)),
    ("cardiomegaly (CTR 0.64)", (Finding("cardiomegaly", severity="severe", ctr=0.64),)),
    ("right upper zone nodule 24 mm", (Finding("nodule", side="right", zone="upper", severity="moderate",
                                                size_mm=24),)),
    ("left lower zone consolidation", (Finding("consolidation", side="left", zone="lower", severity="moderate"),)),
    ("pulmonary edema (moderate)", (Finding("edema", side="bilateral", severity="moderate"),)),
    ("ET tube, CVC, NG tube", (Finding("support_device", device="endotracheal_tube"),
                               Finding("support_device", device="central_venous_catheter"),
                               Finding("support_device", device="nasogastric_tube"))),
    ("right lower lobe atelectasis", (Finding("atelectasis", side="right", zone="lower", severity="severe"),)),
    ("left mass 55 mm", (Finding("nodule", side="left", zone="middle", severity="severe", size_mm=55),)),
    ("bilateral effusions + cardiomegaly", (Finding("pleural_effusion", side="bilateral", severity="mild"),
                                            Finding("cardiomegaly", severity="moderate", ctr=0.6))),
    ("pacemaker", (Finding("support_device", device="pacemaker"),)),
]


def render_examples(size: int, seed: int) -> list[tuple[str, np.ndarray]]:
    config = PhantomConfig(image_size=size)
    images = []
    for i, (title, findings) in enumerate(EXAMPLES):
        spec = plan_study(seed, i, config, findings=findings)
        spec = type(spec)(**{**spec.__dict__, "frontal_view": "PA", "lateral": False})
        images.append((title, render_study(spec, config)[0][1]))
    spec = plan_study(seed, 0, config, findings=EXAMPLES[1][1])
    spec = type(spec)(**{**spec.__dict__, "frontal_view": "PA", "lateral": True})
    images.append(("lateral view, right effusion", render_study(spec, config)[1][1]))
    return images


def write_montage(out: Path, size: int = 256, seed: int = 7, columns: int = 5) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    images = render_examples(size, seed)
    rows = -(-len(images) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 3.45 * rows))
    for ax in axes.flat:
        ax.axis("off")
    for ax, (title, image) in zip(axes.flat, images):
        ax.imshow(image, cmap="gray", vmin=0.0, vmax=1.0)
        ax.set_title(title, fontsize=9)
    fig.suptitle(f"RadDraft synthetic phantoms ({size} px, seed {seed}); not real patients", fontsize=11)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80)
    plt.close(fig)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/phantoms.png"))
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    print(write_montage(args.out, args.size, args.seed))


if __name__ == "__main__":
    main()
