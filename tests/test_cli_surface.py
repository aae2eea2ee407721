"""The CLI's surface: `--json` after every command's name (as the README promises), `yoco env`, help text
in click's words (no Python types, no broken sentences)."""
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


def test_help_shows_click_metavars_not_python_types(cli):
    import re

    for path, _cmd in _leaf_commands():
        text = cli(*path.split(), "--help").stdout
        assert not re.search(r"<(bool|str|int|float|path|list\[)", text), (path, text)
        assert "((" not in text and ")))" not in text, path  # a default inside a default's parentheses
    prune = cli("prune", "--help").stdout
    assert re.search(r"--to\s+IPC", prune) and re.search(r"--ccs-beta\s+X\s", prune)


def test_the_command_list_gives_one_clean_sentence_per_command():
    group = typer.main.get_command(app)
    for name, cmd in group.commands.items():
        short = cmd.get_short_help_str(limit=300)
        assert "Example" not in short and "\n" not in short, (name, short)
        assert short.endswith("."), (name, short)


def test_usage_lines_name_arguments_in_capitals(cli):
    assert "Usage: yoco import [OPTIONS] PATH" in cli("import", "--help").stdout
    assert "Usage: yoco cache rm [OPTIONS] TARGETS..." in cli("cache", "rm", "--help").stdout
    assert "{" not in cli("cache", "info", "--help").stdout.split("\n\n")[0]


def test_fetch_hints_fit_the_artifact(cli):
    data = cli("fetch", "cifar10", "--offline")
    assert data.exit_code == 4
    assert "file:///PATH/TO/cifar-10-python.tar.gz kind=dataset" in data.stderr
    assert "YOCO_REGISTRY=that-file yoco fetch cifar10" in data.stderr and "yoco import" not in data.stderr
    one_set = cli("fetch", "idc/cifar10/ipc10", "--offline")
    assert one_set.exit_code == 4 and "`yoco import FILE --name idc/cifar10/ipc10`" in one_set.stderr


def test_a_file_url_in_a_registry_is_a_copy_on_this_machine_fetched_offline(cli, tmp_path, monkeypatch):
    import hashlib

    body = tmp_path / "notes.bin"
    body.write_bytes(b"a copy downloaded by hand\n")
    reg = tmp_path / "reg.txt"
    reg.write_text(f"my/notes sha256:{hashlib.sha256(body.read_bytes()).hexdigest()} {body.as_uri()} kind=file\n")
    monkeypatch.setenv("YOCO_REGISTRY", str(reg))  # YOCO_OFFLINE=1 is set for every test
    r = cli("fetch", "my/notes", "--json")
    assert r.exit_code == 0, r.stderr
    [got] = r.json()
    assert got["name"] == "my/notes" and not got["cached"]


def test_verbose_says_what_was_computed_and_reused_and_default_is_silent(cli):
    quiet = cli("condense", "digits", "--ipc", "2", "--method", "random")
    assert quiet.exit_code == 0 and " ms  " not in quiet.stderr  # silent by default
    first = cli("-v", "prune", "digits/random/ipc2", "--to", "1", "--metric", "random")
    assert first.exit_code == 0, first.stderr
    assert "computed prune " in first.stderr and "as digits/random/ipc2@random-hard-imbalanced-ipc1" in first.stderr
    again = cli("-v", "prune", "digits/random/ipc2", "--to", "1", "--metric", "random")
    assert "reused prune " in again.stderr and "params {" not in again.stderr
    debug = cli("-vv", "prune", "digits/random/ipc2", "--to", "1", "--metric", "random")
    assert "params {" in debug.stderr and "'metric': 'random'" in debug.stderr
    after = cli("prune", "digits/random/ipc2", "--to", "1", "--metric", "random")
    assert "reused" not in after.stderr  # the handler of an earlier -v run is gone


def test_a_run_estimated_at_over_a_day_is_not_started_without_yes(cli):
    from yoco_cli.store import Store

    assert cli("condense", "digits", "--ipc", "2", "--method", "random").exit_code == 0
    r = cli("eval", "digits/random/ipc2", "--repeats", "1", "--epochs", "1000000000")
    assert r.exit_code == 2, r.stderr
    assert " days" in r.stderr and "; not started" in r.stderr and "yoco --yes" in r.stderr
    assert not Store().all_runs("eval-run") and not Store().all_runs("eval")


def test_max_parallel_beyond_the_cores_is_said_aloud(cli, monkeypatch):
    monkeypatch.setattr("yoco_cli.executors.local.usable_cores", lambda: 2)
    r = cli("eval", "no/such/set", "--max-parallel", "1000000")
    assert r.exit_code == 2  # the name fails as usual, after the one-line warning
    assert "--max-parallel 1000000 is more than this machine's 2 usable cores" in r.stderr
    quiet = cli("eval", "no/such/set", "--max-parallel", "2")
    assert "usable cores" not in quiet.stderr
