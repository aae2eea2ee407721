"""One-line usage errors from the parser, output paths checked before work, a damaged cache handled."""
from __future__ import annotations

import json

import pytest


@pytest.mark.parametrize("args, where", [
    (["nosuch"], "yoco --help"), (["--bogus"], "yoco --help"), (["eval"], "yoco eval --help"),
    (["prune", "--metric"], "--help"), (["cache", "ls", "--stage"], "--help"),
])
def test_parser_errors_are_one_line_exit_2(cli, args, where):
    r = cli(*args)
    assert r.exit_code == 2
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("error: ") and where in r.stderr
    assert "╭" not in r.stderr and "Usage:" not in r.stderr


@pytest.mark.parametrize("args", [["report", "-o", "/nonexistent-dir/x.md"], ["report", "--plot", "."],
                                  ["pipeline", "--plot", "/nonexistent-dir/p.png"], ["pipeline", "--eval-epochs", "0"],
                                  ["pipeline", "--ipc", "1"]])
def test_bad_outputs_and_numbers_fail_before_work(cli, args, yoco_home):
    r = cli(*args)
    assert r.exit_code == 2 and r.stderr.count("\n") == 1, r.stderr
    assert not (yoco_home / "runs").exists() or not any((yoco_home / "runs").iterdir())  # nothing trained


def _one_set(cli):
    assert cli("condense", "digits", "--method", "random", "--ipc", "10").exit_code == 0


def test_damaged_manifest_is_recomputed_by_its_stage_and_reported_by_verify(cli, yoco_home):
    _one_set(cli)
    (manifest,) = (yoco_home / "runs" / "condense").glob("*.json")
    manifest.write_text("{garbage")
    r = cli("show", "digits/random/ipc10")
    assert r.exit_code == 3 and "damaged" in r.stderr and r.stderr.count("\n") == 1
    assert cli("cache", "verify").exit_code == 3
    assert cli("condense", "digits", "--method", "random", "--ipc", "10").exit_code == 0  # recomputes, replaces
    assert json.loads(manifest.read_text())["stage"] == "condense"
    assert cli("cache", "verify").exit_code == 0


def test_damaged_ref_is_reported_and_collected(cli, yoco_home):
    _one_set(cli)
    (yoco_home / "refs" / "bad.json").write_text("[1, 2]")
    assert cli("cache", "ls").exit_code == 0
    r = cli("cache", "verify")
    assert r.exit_code == 3 and "ref bad is damaged" in r.stderr
    assert cli("cache", "gc").exit_code == 0
    assert not (yoco_home / "refs" / "bad.json").exists() and cli("cache", "verify").exit_code == 0
