"""The `raddraft` command: one entry point, one subcommand per module in `raddraft.commands`.

Subcommand modules import only the standard library at module level; each one imports its package
inside `run`, so `raddraft service` never loads Qt and nothing at run time loads torch.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from raddraft import __version__

COMMAND_MODULES = ("app", "service", "send", "draft", "synth", "label", "evaluate", "export", "train", "dataset",
                   "finetune", "model", "self_test", "import_checkpoint", "worker", "server", "user")


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, object]]:
    # The global options are accepted before and after the subcommand.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", type=Path, default=argparse.SUPPRESS, help="configuration file (TOML)")
    common.add_argument("--log-level", default=argparse.SUPPRESS, choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    parser = argparse.ArgumentParser(prog="raddraft", description="RadDraft: AI-drafted radiology reports.",
                                     parents=[common])
    parser.add_argument("--version", action="version", version=f"raddraft {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    modules: dict[str, object] = {}
    for name in COMMAND_MODULES:
        module = importlib.import_module(f"raddraft.commands.{name}")
        command_name = getattr(module, "COMMAND", name.replace("_", "-"))  # `import` is a Python keyword
        command = sub.add_parser(command_name, help=module.HELP, description=module.HELP, parents=[common])
        module.add_arguments(command)
        modules[command_name] = module
    return parser, modules


def configure_logging(level: str) -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s", stream=sys.stderr)
    # pynetdicom logs every association at INFO; keep that for DEBUG runs only.
    if level != "DEBUG":
        logging.getLogger("pynetdicom").setLevel(logging.WARNING)


def main(argv: Sequence[str] | None = None) -> int:
    parser, modules = build_parser()
    args = parser.parse_args(argv)
    module = modules[args.command]
    from raddraft.config import ConfigError, load_config

    overrides = dict(getattr(module, "config_overrides", lambda a: {})(args))
    if getattr(args, "log_level", None):
        overrides["logging.level"] = args.log_level
    try:
        config = load_config(getattr(args, "config", None), overrides)
    except ConfigError as exc:
        print(f"raddraft: configuration error: {exc}", file=sys.stderr)
        return 2
    configure_logging(config.logging.level.upper())
    try:
        return int(module.run(args, config) or 0)
    except KeyboardInterrupt:
        return 130
