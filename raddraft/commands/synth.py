"""`raddraft synth`: write synthetic phantom chest radiograph studies with a manifest."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HELP = "generate synthetic phantom chest radiograph studies (DICOM + manifest.jsonl with reports and labels)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, required=True, help="output folder (new, empty, or a previous data set)")
    parser.add_argument("--studies", type=int, required=True, help="number of studies")
    parser.add_argument("--seed", type=int, default=0, help="random seed (same seed, same data set)")
    parser.add_argument("--image-size", type=int, default=256, help="pixels per side (default 256)")
    parser.add_argument("--lateral-fraction", type=float, default=0.35, help="share of studies with a lateral view")
    parser.add_argument("--normal-fraction", type=float, default=0.3, help="share of studies without pathology")
    parser.add_argument("--workers", type=int, default=0, help="worker processes (0: one per CPU)")
    parser.add_argument("--priors", action="store_true",
                        help="longitudinal phantoms: a prior study of the same patient for most studies, "
                             "reports that compare with it, and per study prior_* fields and `change` in the manifest")
    parser.add_argument("--no-prior-fraction", type=float, default=0.28,
                        help="with --priors: share of studies without a prior (default 0.28)")
    # the choices of training.data.longitudinal.WORDINGS, which the parser does not import (test_phantoms_priors)
    parser.add_argument("--wording", choices=("varied", "house"), default="varied",
                        help="with --priors: how the reports compare, 'varied' (radiologists' phrasing; "
                             "references) or 'house' (each finding, then its change, one wording per change; "
                             "training targets)")


def run(args: argparse.Namespace, config) -> int:
    import logging

    from tqdm import tqdm

    logging.getLogger("openjpeg").setLevel(logging.WARNING)  # it logs every encoded tile at INFO

    from training.data.findings import FindingError, FindingSampling
    from training.data.longitudinal import PriorError, PriorSampling
    from training.data.phantoms import PhantomConfig, PhantomError, generate_dataset

    if args.wording != "varied" and not args.priors:
        print("raddraft synth: --wording is for reports that compare with a prior; add --priors", file=sys.stderr)
        return 2
    try:
        options = PhantomConfig(image_size=args.image_size, lateral_fraction=args.lateral_fraction,
                                sampling=FindingSampling(normal_fraction=args.normal_fraction),
                                workers=args.workers)
        priors = PriorSampling(no_prior_fraction=args.no_prior_fraction, wording=args.wording) if args.priors else False
        with tqdm(total=args.studies, desc="phantoms", unit="study", file=sys.stderr, disable=None) as bar:
            summary = generate_dataset(args.out, args.studies, args.seed, config=options, progress=bar.update,
                                       priors=priors)
    except (PhantomError, FindingError, PriorError) as exc:
        print(f"raddraft synth: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"raddraft synth: cannot write {args.out}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    splits = ", ".join(f"{name} {count}" for name, count in summary.splits.items())
    priors_said = (f"; {summary.prior_studies} with a prior study ({summary.prior_images} images)"
                   if args.priors else "")
    print(f"{summary.studies} studies, {summary.images} images ({splits}){priors_said} -> {summary.manifest}")
    return 0
