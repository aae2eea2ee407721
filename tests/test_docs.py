"""Every command is documented: help text with an example, and a section of the README."""
from __future__ import annotations

from pathlib import Path

import typer

from yoco_cli.cli.app import app

README = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")


def _commands():
    group = typer.main.get_command(app)
    for name, cmd in sorted(group.commands.items()):
        subs = getattr(cmd, "commands", None)
        if subs:
            for sub, subcmd in sorted(subs.items()):
                yield f"{name} {sub}", subcmd
        else:
            yield name, cmd


def test_every_command_is_in_the_readme():
    missing = [path for path, _ in _commands() if f"yoco {path}" not in README]
    assert not missing, f"document these in README.md: {missing}"


def test_every_command_has_help_with_an_example():
    lacking = [path for path, cmd in _commands()
               if not cmd.help or ("Example" not in cmd.help and "`yoco " not in cmd.help)]
    assert not lacking, f"give these commands help text with an example: {lacking}"


def test_readme_opens_with_the_two_commands():
    head = README.split("## ", 1)[0]
    assert "make demo" in head and "make test" in head
