"""The small errors met on the main workflows (issue 13, point 4): each checked by its message."""
from __future__ import annotations

import json
import socket

import pytest


# -- help, typos ----------------------------------------------------------------------------------
@pytest.mark.parametrize("args", [[], ["cache"]])
def test_bare_command_shows_help_without_an_error_line(cli, args):
    r = cli(*args)
    assert r.exit_code == 0
    assert "Usage:" in r.stdout and "Commands" in r.stdout
    assert "error" not in r.stderr


def test_typo_suggestion_reads_as_one_sentence(cli):
    r = cli("prun")
    assert r.exit_code == 2
    assert r.stderr.strip() == "error: No such command 'prun'. Did you mean 'prune'? see `yoco --help`"


def test_dataset_typo_hint_has_no_trailing_period_after_question(cli):
    r = cli("condense", "digts", "--method", "random")
    assert r.exit_code == 2
    assert "unknown dataset 'digts'. did you mean digits" in r.stderr and "?." not in r.stderr


# -- --json failures ----------------------------------------------------------------------------------
def test_json_usage_error_object_on_stdout(cli):
    r = cli("--json", "condense", "digts")
    assert r.exit_code == 2
    doc = r.json()
    assert doc["exit_code"] == 2 and doc["error"] == "unknown dataset 'digts'" and doc["hint"].startswith("did you mean")
    assert "error: unknown dataset 'digts'" in r.stderr  # people still get the line


def test_json_given_to_the_command_covers_its_parse_errors(cli):
    r = cli("condense", "digits", "--json", "--bogus")
    assert r.exit_code == 2
    assert r.json() == {"error": "No such option: --bogus", "hint": "see `yoco condense --help`", "exit_code": 2}


def test_json_integrity_error_object(cli, tmp_path):
    bad = tmp_path / "data.pt"
    bad.write_bytes(b"not a torch file at all")
    r = cli("--json", "import", bad)
    assert r.exit_code == 3
    doc = r.json()
    assert doc["exit_code"] == 3 and "is not a torch file" in doc["error"] and str(bad) in doc["error"]


def test_json_internal_error_object(cli, monkeypatch):
    from yoco_cli.stages import condense

    def boom(*a, **k):
        raise RuntimeError("boom")

    monkeypatch.setattr(condense, "run", boom)
    r = cli("--json", "condense", "digits", "--method", "random")
    assert r.exit_code == 1
    assert r.json() == {"error": "internal error: RuntimeError: boom", "hint": "run with --debug for the traceback",
                        "exit_code": 1}


def test_json_missing_command_object(cli):
    r = cli("--json")
    assert r.exit_code == 2 and r.json() == {"error": "Missing command", "hint": "see `yoco --help`", "exit_code": 2}


# -- network errors -------------------------------------------------------------------------------
def test_drive_connection_error_names_host_cause_and_working_hints():
    import requests

    from yoco_cli.remote.gdrive import translate_exception

    url = "https://drive.google.com/embeddedfolderview?id=1yh0Hf2ia4b"
    e = requests.exceptions.ConnectionError(socket.gaierror(-2, "Name or service not known"),
                                            request=requests.Request("GET", url).prepare())
    err = translate_exception(e, "the Drive folder of idc/cifar10/ipc1")
    assert err.exit_code == 4
    assert err.message == ("cannot reach drive.google.com for the Drive folder of idc/cifar10/ipc1: its name does "
                           "not resolve (no network, or no DNS) (https://drive.google.com/drive/folders/1yh0Hf2ia4b)")
    assert "yoco import FILE" in err.hint and "YOCO_GDRIVE_MIRROR" in err.hint and "--offline" not in err.hint


def test_drive_connection_refused_says_so():
    import requests

    from yoco_cli.remote.gdrive import translate_exception

    inner = ConnectionRefusedError(111, "Connection refused")
    e = requests.exceptions.ConnectionError(inner)
    assert translate_exception(e, "x").message.endswith("x: the connection was refused")


def test_http_dns_failure_names_the_host_and_the_mirror_variable():
    from yoco_cli.remote import http

    err = http._url_error(socket.gaierror(-2, "Name or service not known"), 10.0, "example.org:443", "cifar10 data")
    assert err.message == "cannot download cifar10 data: the host name example.org does not resolve (no network, or no DNS)"
    assert "YOCO_REGISTRY" in err.hint and "yoco import FILE" in err.hint and "--offline" not in err.hint


# -- import of yoco's own export ----------------------------------------------------------------------
def test_import_of_a_pruned_export_keeps_its_factor_and_ipc(cli, tmp_path):
    assert cli("condense", "digits", "--ipc", "2", "--method", "random").exit_code == 0
    out = tmp_path / "pruned.pt"
    r = cli("prune", "digits/random/ipc2", "--to", "1", "--metric", "random", "--export", out)
    assert r.exit_code == 0, r.stderr
    r = cli("--json", "import", out)
    assert r.exit_code == 0, r.stderr
    doc = r.json()
    assert (doc["factor"], doc["ipc"], doc["decoded_count"], doc["dataset"]) == (1, 1, 40, "digits")
    assert "factor 1, dataset digits, value space raw01, IPC 1 read from yoco's export metadata in pruned.pt" \
        in r.stderr
    # an explicit --factor still wins, and says so
    r = cli("--json", "import", out, "--factor", "2", "--name", "forced")
    assert r.json()["decoded_count"] == 160 and "--factor 2 overrides factor 1 recorded in pruned.pt" in r.stderr


def test_export_stays_readable_as_the_reference_reads_it(tmp_path):
    import torch

    from yoco_cli.data.condensed import CondensedSet
    from yoco_cli.data.formats import export, read_export_note

    cset = CondensedSet(images=torch.rand(4, 1, 8, 8), labels=torch.tensor([0, 0, 1, 1]), dataset="digits",
                        num_classes=10, factor=1, ipc=1)
    path = tmp_path / "data.pt"
    export(cset, path, "idc")
    data, targets = torch.load(path, weights_only=True)  # the reference's own reading
    assert data.shape == (4, 1, 8, 8) and targets.tolist() == [0, 0, 1, 1]
    assert read_export_note(path)["factor"] == 1
    first = path.read_bytes()
    export(cset, path, "idc")
    assert path.read_bytes() == first  # same set, same bytes


# -- names, flags ----------------------------------------------------------------------------------------
def test_a_name_moves_only_with_a_line_saying_so(cli):
    assert cli("condense", "digits", "--ipc", "2", "--method", "random").exit_code == 0
    r = cli("dynamics", "digits/random/ipc2", "--seeds", "1", "--epochs", "1")
    assert r.exit_code == 0 and "now points to" not in r.stderr
    r = cli("dynamics", "digits/random/ipc2", "--seeds", "1", "--epochs", "2")
    assert r.exit_code == 0
    line = [x for x in r.stderr.splitlines() if "now points to" in x]
    assert len(line) == 1 and line[0].startswith("name digits/random/ipc2@dynamics now points to dynamics ")
    assert "(was dynamics " in line[0]


def test_no_short_flag_means_two_things():
    import typer

    from yoco_cli.cli.app import app

    meaning: dict[str, set[str]] = {}

    def walk(cmd):
        for p in cmd.params:
            longs = [o for o in p.opts if o.startswith("--")]
            for o in p.opts + p.secondary_opts:
                if len(o) == 2 and o.startswith("-") and o not in ("-h",):
                    meaning.setdefault(o, set()).add(longs[0] if longs else p.name)
        for sub in getattr(cmd, "commands", {}).values():
            walk(sub)

    walk(typer.main.get_command(app))
    assert meaning, "no short flags found: the walk is broken"
    assert {k: v for k, v in meaning.items() if len(v) > 1} == {}


def test_folder_dataset_is_named_by_its_folder_and_its_classes_are_shown(cli, tmp_path):
    from PIL import Image

    root = tmp_path / "deep" / "path" / "shapes"
    for c, color in (("circle", 60), ("square", 200)):
        for i in range(4):
            (root / c).mkdir(parents=True, exist_ok=True)
            Image.new("L", (8, 8), color + i).save(root / c / f"{i}.png")
    r = cli("--json", "condense", f"folder:{root}", "--ipc", "1", "--method", "random", "--factor", "1")
    assert r.exit_code == 0, r.stderr
    doc = r.json()
    assert doc["name"] == "folder/shapes/random/ipc1" and doc["class_names"] == ["circle", "square"]
    r = cli("condense", f"folder:{root}", "--ipc", "1", "--method", "random", "--factor", "1")
    assert "2: circle, square" in r.stdout
    r = cli("show", "folder/shapes/random/ipc1")
    assert r.exit_code == 0 and "class names" in r.stdout and "2: circle, square" in r.stdout


def test_report_json_says_accuracies_are_percent():
    from yoco_cli.stages import report as rep

    records = [rep.EvalRecord("digits", "s", 10, 1, "random", "hard", "imbalanced", "convnet", [40.0], [40.0]),
               rep.EvalRecord("digits", "s", 10, 1, "lbpe", "easy", "balanced", "convnet", [50.0], [50.0])]
    (doc, *_) = json.loads(json.dumps(rep.to_json(rep.build_tables(records))))
    assert doc["unit"] == "percent"
