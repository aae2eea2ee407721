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


def _options_of(path: str) -> set[str]:
    group = typer.main.get_command(app)
    cmd = group
    for part in path.split():
        cmd = cmd.commands[part]
    opts = {o for p in cmd.params for o in [*p.opts, *p.secondary_opts]}
    return opts | {o for p in group.params for o in [*p.opts, *p.secondary_opts]}


def test_readme_usage_lines_name_only_real_options():
    """Every `--option` on a README line that runs a yoco command exists for that command (the old
    usage line `--metrics M ...` did not parse)."""
    import re

    commands = {path for path, _ in _commands()}
    checked, wrong = 0, []
    for block in re.findall(r"```(?:console|bash)?\n(.*?)```", README, flags=re.DOTALL):
        for line in re.sub(r"\n\s{6,}", " ", block).splitlines():  # usage lines continue indented
            line = line.split("#", 1)[0].lstrip("$ ").strip()
            m = re.match(r"yoco((?: --\S+(?: (?!--)\S+)?)*?) ((?:cache )?[a-z]+)\b(.*)", line)
            if not m or m.group(2) not in commands:
                continue
            names = set(re.findall(r"(?<![\w-])--[a-z][a-z-]*", m.group(1) + " " + m.group(3)))
            checked += 1
            wrong += [f"yoco {m.group(2)} {n}" for n in sorted(names - _options_of(m.group(2)))]
    assert checked >= 20, "the README's command lines were not found"
    assert not wrong, f"README names options that do not exist: {wrong}"
