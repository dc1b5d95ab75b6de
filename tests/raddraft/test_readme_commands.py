"""Every `raddraft ...` command line the README documents parses with the real argparse parser, written as
it stands: optional parts in [brackets] included, placeholders (DIR, PORT, ...) filled in, alternatives
(`list | use VERSION`) each on their own."""

from __future__ import annotations

import argparse
import re
import shlex
from pathlib import Path

import pytest

from raddraft.cli import build_parser
from tests.embedded_model import EMBEDDED_VERSION

README = Path(__file__).resolve().parents[2] / "README.md"
# Placeholders that must be numbers; any other all-capitals word stands for a path or a name.
NUMBERS = {"P": "11112", "PORT": "11112", "S": "10", "N": "4", "PX": "64", "VERSION": EMBEDDED_VERSION}
_PLACEHOLDER = re.compile(r"^[A-Z][A-Z0-9_]*(\.[a-z0-9]+)?$")


def documented_commands(text: str) -> list[str]:
    """Lines of code blocks that start with `raddraft `: whole command lines. (Inline `raddraft ...` spans
    in the prose name a command and some of its options: `mentioned_commands`.)"""
    commands = []
    in_block = False
    for line in text.splitlines():
        if line.startswith("```"):
            in_block = not in_block
        elif in_block and line.startswith("raddraft "):
            commands.append(line)
    return commands


def mentioned_commands(text: str) -> list[str]:
    return [" ".join(span.split()) for span in re.findall(r"`(raddraft [^`]+)`", text)]


def alternatives(command: str) -> list[str]:
    """`raddraft model list | use V | show` -> one line per alternative, each with the common prefix."""
    command = re.split(r"\s+#\s", command, maxsplit=1)[0]  # a trailing comment
    command = re.split(r"\s+<\s", command, maxsplit=1)[0]  # a shell redirection
    parts = [part.strip() for part in command.split(" | ")]
    subcommand = parts[0].split()[:2]  # "raddraft model"
    return [parts[0], *(" ".join([*subcommand, part]) for part in parts[1:])]


def argv_of(command: str) -> list[str]:
    """The argument vector a user would type: brackets and ellipses dropped, placeholders filled."""
    words = shlex.split(command.replace("[", " ").replace("]", " ").replace("...", " "))
    assert words[0] == "raddraft"
    argv = []
    for word in words[1:]:
        if "|" in word and not word.startswith("-"):  # a choice written `shift|remove`
            word = word.split("|")[0]
        if _PLACEHOLDER.match(word):
            word = NUMBERS.get(word, word.lower())
        argv.append(word)
    return argv


COMMANDS = [line for command in documented_commands(README.read_text(encoding="utf-8"))
            for line in alternatives(command)]


def test_the_readme_documents_commands():
    assert len(COMMANDS) >= 12
    assert any(line.startswith("raddraft export") for line in COMMANDS)


@pytest.mark.parametrize("command", COMMANDS)
def test_each_documented_command_line_parses(command, capsys):
    parser, _ = build_parser()
    argv = argv_of(command)
    try:
        parser.parse_args(argv)
    except SystemExit as exit_:
        pytest.fail(f"README: `{command}` does not parse as {argv}: {capsys.readouterr().err.strip()} "
                    f"(exit {exit_.code})")


@pytest.mark.parametrize("mention", mentioned_commands(README.read_text(encoding="utf-8")))
def test_each_command_the_readme_names_exists_with_its_options(mention):
    """`raddraft draft --indication` in prose: the subcommand and the options it names exist."""
    parser, _ = build_parser()
    words = mention.split()[1:]
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert words[0] in subparsers.choices, f"README names `{mention}`: no command {words[0]!r}"
    command = subparsers.choices[words[0]]
    options = {option for action in command._actions for option in action.option_strings}
    for word in words[1:]:
        if word.startswith("-"):
            assert word.split("=")[0] in options, f"README names `{mention}`: `raddraft {words[0]}` has no {word}"
