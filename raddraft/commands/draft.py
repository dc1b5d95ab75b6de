"""`raddraft draft`: draft the Findings and Impression of one study, printed as one JSON object."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from raddraft.commands.common_options import add_model_arguments, model_overrides

HELP = "draft Findings and Impression for the DICOM files or folder of one study (JSON on stdout)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", type=Path, nargs="+", metavar="PATH", help="DICOM files or a study folder")
    add_model_arguments(parser)
    parser.add_argument("--max-new-tokens", type=int)
    parser.add_argument("--temperature", type=float, default=None, help="0 for greedy (the bundle's default)")
    parser.add_argument("--top-p", type=float, default=None)
    parser.add_argument("--repetition-penalty", type=float, default=None)
    parser.add_argument("--seed", type=int, default=None, help="seed for sampling")
    parser.add_argument("--impression-from-findings", action=argparse.BooleanOptionalAction, default=None,
                        help="condition the impression on the drafted findings (--no-...: on the image); "
                             "default: as the model's bundle says (model.json impression_from)")
    parser.add_argument("--indication", metavar="TEXT",
                        help="the reason for the exam, for models whose prompt takes one (default: the study's "
                             "DICOM request attributes)")
    parser.add_argument("--stream", action="store_true", help="stream the text to stderr as it is generated")
    parser.add_argument("--findings-text", type=Path, metavar="FILE",
                        help="draft only the impression, from the findings in FILE (UTF-8); `findings` in the "
                             "JSON echoes them")
    parser.add_argument("--prior", type=Path, nargs="+", metavar="PATH",
                        help="DICOM files or a folder of the patient's previous study (its date from its "
                             "StudyDate), for models that take priors; the JSON's `prior` names it")
    parser.add_argument("--prior-report", type=Path, metavar="FILE",
                        help="the previous study's report (UTF-8; \"Findings:\" / \"Impression:\" headings are "
                             "read when present), with --prior")


def config_overrides(args: argparse.Namespace) -> dict[str, object]:
    return {
        **model_overrides(args),
        "engine.max_new_tokens": args.max_new_tokens,
        # stdout is the JSON and stderr one line on failure: only warnings unless asked (--log-level).
        "logging.level": "WARNING",
    }


def run(args: argparse.Namespace, config) -> int:
    from engine.errors import EngineError
    from raddraft.resources import resolve_model

    for path in args.paths:
        if not path.exists():
            print(f"raddraft draft: no such file or folder: {path}", file=sys.stderr)
            return 2
    try:
        prior = read_prior(args.prior, args.prior_report)
    except PriorArgumentError as error:
        print(f"raddraft draft: {error}", file=sys.stderr)
        return 2
    given = None
    if args.findings_text is not None:
        try:
            given = args.findings_text.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as error:
            print(f"raddraft draft: cannot read the findings: {error}", file=sys.stderr)
            return 2
        if not given:
            print(f"raddraft draft: {args.findings_text} holds no findings", file=sys.stderr)
            return 2
    try:
        from engine.runtime import load_model

        model = load_model(resolve_model(config).path, config.engine)
        changes = {key: value for key, value in (
            ("temperature", args.temperature), ("top_p", args.top_p),
            ("repetition_penalty", args.repetition_penalty), ("seed", args.seed)) if value is not None}
        options = model.default_options(**changes)
        on_piece = _stream_to_stderr if args.stream else None
        if given is not None:
            draft = impression_from_given_findings(model, args.paths, given, options, args.indication, on_piece,
                                                   prior=prior)
        else:
            draft = model.draft(args.paths, options=options, impression_from_findings=args.impression_from_findings,
                                indication=args.indication, on_piece=on_piece, prior=prior)
    except EngineError as error:
        print(f"raddraft draft: {error}", file=sys.stderr)
        return 1
    json.dump(draft.to_dict(), sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


class PriorArgumentError(ValueError):
    """--prior / --prior-report cannot be used as given."""


def read_prior(paths: list[Path] | None, report_file: Path | None):
    """The engine's `PriorInput` from --prior PATH... and --prior-report FILE (None without --prior)."""
    if paths is None:
        if report_file is not None:
            raise PriorArgumentError("--prior-report needs --prior (the previous study's images and date)")
        return None
    from engine import preprocess
    from engine.errors import EngineError
    from engine.prompts import PriorInput, iso_date

    for path in paths:
        if not path.exists():
            raise PriorArgumentError(f"no such file or folder: {path}")
    try:
        datasets = preprocess.load_study(paths)
    except EngineError as error:
        raise PriorArgumentError(f"cannot read the prior study: {error}") from None
    first = datasets[0] if datasets else None
    findings, impression = "", ""
    if report_file is not None:
        try:
            findings, impression = split_report(report_file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as error:
            raise PriorArgumentError(f"cannot read the prior report: {error}") from None
    return PriorInput(date=iso_date(str(first.get("StudyDate", "")) if first is not None else ""),
                      findings=findings, impression=impression, image_paths=tuple(paths),
                      study_uid=str(first.get("StudyInstanceUID", "")) if first is not None else "")


def split_report(text: str) -> tuple[str, str]:
    """(findings, impression) of a report with "Findings:" / "Impression:" headings; all of it as findings
    when it has none."""
    import re

    found = {m.group(1).lower(): m for m in re.finditer(r"(?im)^\s*(findings|impression)\s*:", text)}
    if not found:
        return " ".join(text.split()), ""
    parts = {}
    marks = sorted(found.values(), key=lambda m: m.start())
    for mark, following in zip(marks, [*marks[1:], None]):
        parts[mark.group(1).lower()] = " ".join(text[mark.end():following.start() if following else None].split())
    return parts.get("findings", ""), parts.get("impression", "")


def impression_from_given_findings(model, paths, findings: str, options, indication, on_piece, prior=None):
    """The impression of the study drafted from `findings` as given (not from findings the model drafts):
    an engine.runtime.Draft whose `findings` echo them. prior: an engine.prompts.PriorInput or None."""
    import time

    from engine.prompts import IMPRESSION_FROM_FINDINGS
    from engine.runtime import Draft

    started = time.perf_counter()
    study = model.prepare(paths)
    ready = model.prepare_prior(prior)
    features = model.image_features(study, ready)
    layout = model.prompt_layout(study, indication, ready)
    used = layout["indication"]
    impression = model.generate(IMPRESSION_FROM_FINDINGS, features, options, findings=findings,
                                on_text=(lambda piece: on_piece("impression", piece)) if on_piece else None,
                                **layout)
    return Draft(findings=findings, impression=impression.text, model=model.model_id, provider=model.provider,
                 variant=model.variant, images=study.sop_instance_uids,
                 prompts={"findings": "given", "impression": IMPRESSION_FROM_FINDINGS,
                          **({"indication": used} if used else {}),
                          **({"prior": ready.note} if prior is not None else {})},
                 timings={"impression": impression.timings(), "total_s": round(time.perf_counter() - started, 4)},
                 domain=model.domain_state(features[:features.shape[0] - ready.images]).to_dict(),
                 prior=ready.used)


def _stream_to_stderr(section: str, piece: str) -> None:
    sys.stderr.write(piece)
    sys.stderr.flush()
