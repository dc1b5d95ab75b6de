"""`raddraft model list|use|install|show`: the versioned models of the registry and which one drafts.

A running `raddraft service` or `raddraft app` on the same store follows `use` within a few seconds
(`[engine] follow_interval_s`): the study being drafted finishes on the old model, the next one uses the new.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from raddraft.commands.common_options import add_registry_arguments, registry_overrides

HELP = "list the installed model versions, choose the current one, install a bundle, show a model's card"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--store", type=Path, help="store folder (default: the user data dir)")
    add_registry_arguments(parser)
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    actions.add_parser("list", help="the models, newest first, with their metrics and how they got here")
    use = actions.add_parser("use", help="make VERSION the current model (\"embedded\" for the embedded one)")
    use.add_argument("version", metavar="VERSION")
    install = actions.add_parser("install", help="install a model bundle as a new version (never overwrites)")
    install.add_argument("bundle", type=Path, metavar="BUNDLE", help="the bundle folder")
    install.add_argument("--use", action="store_true", help="make it the current model too")
    show = actions.add_parser("show", help="the model card and the promotion record of VERSION (default: current)")
    show.add_argument("version", metavar="VERSION", nargs="?")


def config_overrides(args: argparse.Namespace) -> dict[str, object]:
    return {"store.root": str(args.store) if args.store else None, **registry_overrides(args)}


def run(args: argparse.Namespace, config) -> int:
    from engine.errors import EngineError
    from raddraft.resources import model_registry

    registry = model_registry(config)
    try:
        if args.action == "list":
            print(format_table(registry.models()))
        elif args.action == "use":
            model = registry.use(args.version)
            print(f"current model: {model.model_id} ({model.how}); a running service or app switches to it "
                  f"within {config.engine.follow_interval_s:g} s")
        elif args.action == "install":
            model = registry.install(args.bundle, {"how": "installed", "forced": False, "decision": None,
                                                   "by": "raddraft model install"})
            if args.use:
                model = registry.use(model.version)
            print(f"installed {model.model_id} in {model.path}" + (" (now current)" if args.use else ""))
        else:
            model = registry.get(args.version) if args.version else registry.current()
            print(format_card(model))
    except EngineError as error:  # an unknown version's message lists the known ones
        print(f"raddraft model: {error}", file=sys.stderr)
        return 1
    return 0


COLUMNS = ("", "version", "name", "installed", "findings F1", "impression F1", "how")


def format_table(models) -> str:
    """One row per model; `*` marks the current one."""
    rows = [COLUMNS]
    for m in models:
        installed = m.installed_at.astimezone().strftime("%Y-%m-%d %H:%M") if m.installed_at else "-"
        how = f"broken: {m.broken}" if m.broken else m.how
        rows.append(("*" if m.current else "", m.version, m.name, installed, _f1(m.section_f1("findings")),
                     _f1(m.section_f1("impression")), how))
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
                     for row in rows)


def format_card(model) -> str:
    lines = [f"{model.model_id}{' (current)' if model.current else ''}", f"  path: {model.path}",
             f"  how: {model.how}"]
    if model.installed_at:
        lines.append(f"  installed: {model.installed_at.astimezone().isoformat(timespec='seconds')}")
    if model.broken:
        lines.append(f"  broken: {model.broken}")
    if model.record:
        lines += ["", "Promotion record:", json.dumps(model.record, indent=2)]
    card = model.card()
    if card:
        lines += ["", card.rstrip()]
    return "\n".join(lines)


def _f1(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"
