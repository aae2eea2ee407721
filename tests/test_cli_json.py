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


def test_env_says_what_yoco_runs_on_and_never_prints_a_token(cli, tmp_path, monkeypatch, yoco_home):
    import torch

    from yoco_cli.store import Store

    shared = Store(tmp_path / "lab").ensure().root
    monkeypatch.setenv("YOCO_SHARED", str(shared))
    monkeypatch.setenv("HF_TOKEN", "hf_secret_value")
    r = cli("env", "--json")
    assert r.exit_code == 0, r.stderr
    doc = r.json()
    assert doc["torch"]["version"] == torch.__version__
    assert doc["stores"]["home"]["path"] == str(Store().root)
    [lab] = doc["stores"]["shared"]
    assert lab["path"] == str(shared) and lab["exists"] and lab["bytes"] >= 0
    assert doc["environment"]["HF_TOKEN"] == "(set)" and "hf_secret_value" not in r.stdout
    assert doc["environment"]["YOCO_SHARED"] == str(shared)
    assert set(doc["extras"]) == {"vision", "ray", "hub", "test"} and doc["extras"]["test"]["pytest"]
    text = cli("env")
    assert text.exit_code == 0 and "shared store" in text.stdout and "hf_secret_value" not in text.stdout
