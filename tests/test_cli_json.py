"""`--json` after every command's name, as the README promises (before the name it is a global option)."""
from __future__ import annotations

import typer

from yoco_cli.cli.app import app


def _leaf_commands():
    group = typer.main.get_command(app)
    for name, cmd in sorted(group.commands.items()):
        subs = getattr(cmd, "commands", None)
        for sub, subcmd in sorted((subs or {name: cmd}).items()):
            yield (f"{name} {sub}" if subs else name), subcmd


def test_every_command_takes_json_after_its_name():
    lacking = [path for path, cmd in _leaf_commands()
               if not any("--json" in p.opts for p in cmd.params)]
    assert lacking == []


def test_pipeline_json_gives_a_json_error_object(cli):
    r = cli("pipeline", "digits", "--metric", "no-such-metric", "--json")
    assert r.exit_code == 2, r.stderr
    doc = r.json()
    assert doc["exit_code"] == 2 and "no-such-metric" in doc["error"]
    assert "No such option" not in r.stderr
