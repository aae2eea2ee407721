"""A demanding user's bad input: every mistake is one line on stderr and a documented exit code.

Each test here reproduces something that once ended in an `internal error` (exit 1) or a traceback,
or that was silently accepted. All run on digits with the random method (no training) unless a
model has to be built.
"""
from __future__ import annotations

from pathlib import Path

import pytest

SET = "digits/random/ipc10"


@pytest.fixture
def digits_set(cli):
    r = cli("condense", "digits", "--ipc", "10", "--method", "random")
    assert r.exit_code == 0, r.stderr
    return SET


def one_line_error(r, code: int) -> str:
    assert r.exit_code == code, (r.exit_code, r.stdout, r.stderr)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), r.stderr
    assert "Traceback" not in r.stderr and "internal error" not in r.stderr
    return lines[0]


# -- user text is printed as text, never parsed as Rich markup --------------------------------------
@pytest.mark.parametrize("ref", ["[/bold]", "x[/]y", "[red]x"])
def test_markup_in_a_ref_is_printed_verbatim(cli, ref):
    line = one_line_error(cli("show", ref), 2)
    assert ref in line


def test_markup_in_a_path_is_printed_verbatim(cli, digits_set, tmp_path):
    folder = tmp_path / "a[" / "b]"  # the path reads `a[/b]`: a closing tag to Rich
    folder.mkdir(parents=True)
    r = cli("export", digits_set, folder / "s.pt")
    assert r.exit_code == 0, r.stderr
    assert str(folder / "s.pt") in r.stderr
    r = cli("show", folder / "s.pt")
    assert r.exit_code == 0, r.stderr


# -- --seed and --device are checked while parsing, wherever they are used --------------------------
@pytest.mark.parametrize("args", [
    ["condense", "digits", "--method", "random", "--seed", "99999999999999999999999"],  # was: overflow, exit 1
    ["condense", "digits", "--method", "random", "--seed", "-1"],
    ["score", SET, "--seed", str(2**32)],
    ["prune", SET, "--to", "1", "--metric", "random", "--seed", "-3"],
])
def test_seed_out_of_range_is_a_usage_error(cli, args):
    assert "--seed" in one_line_error(cli(*args), 2)


@pytest.mark.parametrize("args", [
    ["condense", "digits", "--method", "random", "--device", "foo"],  # random ignores the device: was accepted
    ["dynamics", SET, "--device", "cuda:x"],
    ["score", SET, "--device", "gpu"],
    ["eval", SET, "--device", "cpu:1"],
])
def test_misspelt_device_is_a_usage_error(cli, args):
    assert "unknown device" in one_line_error(cli(*args), 2)


# -- model options the model cannot use: refused before training, not as an internal error ------------
@pytest.mark.parametrize("model", ["convnet:width=0", "convnet:width=abc", "convnet:depth=0"])
@pytest.mark.parametrize("command", [
    ["dynamics", SET, "--seeds", "1", "--epochs", "1"],
    ["eval", SET, "--repeats", "1", "--epochs", "1"],
    ["condense", "digits", "--method", "dm", "--iterations", "1"],
])
def test_unusable_model_options_are_usage_errors(cli, digits_set, command, model):
    line = one_line_error(cli(*command, "--model", model), 2)
    assert model in line and "1x8x8" in line


# -- numbers no run can use --------------------------------------------------------------------------
@pytest.mark.parametrize("args, words", [
    (["--lr-img", "nan"], "finite"),          # was: internal error from the cache key
    (["--lr-img", "inf"], "finite"),
    (["--lr-img", "0"], "positive"),          # was: accepted (images never move)
    (["--lr-img", "-1"], "positive"),
    (["--set", "mom_img=5"], "[0, 1)"),       # was: minutes of training, then NaN images (exit 3)
])
def test_condense_settings_out_of_range(cli, args, words):
    line = one_line_error(cli("condense", "digits", "--method", "dm", "--iterations", "1", *args), 2)
    assert words in line


@pytest.mark.parametrize("command", [["dynamics", SET, "--seeds", "1"], ["eval", SET, "--repeats", "1"]])
@pytest.mark.parametrize("option", ["--batch-size", "--lr"])
def test_zero_is_refused_not_taken_as_the_preset(cli, digits_set, command, option):
    line = one_line_error(cli(*command, "--epochs", "1", option, "0"), 2)
    assert option in line


# -- output paths ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("option", ["--indices", "--export"])
def test_prune_to_a_directory_fails_before_any_work(cli, digits_set, tmp_path, option):
    r = cli("prune", digits_set, "--to", "1", "--metric", "random", option, tmp_path)  # was: exit 1 for --indices
    assert "is a directory" in one_line_error(r, 2)


def test_prune_export_format_checked_before_any_work(cli, digits_set, tmp_path):
    r = cli("prune", digits_set, "--to", "1", "--dynamics-epochs", "1", "--dynamics-seeds", "1",
            "--export", tmp_path / "x.pt", "--export-format", "dsa")
    one_line_error(r, 2)
    assert "dynamics" not in r.stderr  # refused before training anything


def test_unwritable_destination_is_a_usage_error(tmp_path):
    from yoco_cli.data.formats import atomic_write
    from yoco_cli.errors import UsageError

    (tmp_path / "d").mkdir()
    with pytest.raises(UsageError, match="cannot write"):  # os.replace onto a directory: was IsADirectoryError
        atomic_write(tmp_path / "d", lambda p: Path(p).write_text("x"))
    assert [p.name for p in tmp_path.iterdir()] == ["d"]  # no temp file left behind


def test_prune_help_keeps_its_brackets(cli):
    out = cli("prune", "--help").stdout
    assert "[data, targets]" in out and "[kept decoded indices]" in out  # Rich had eaten both


# -- --json means JSON on stdout ------------------------------------------------------------------------
@pytest.mark.parametrize("args", [["--json", "cache", "dir"], ["cache", "dir", "--json"]])
def test_cache_dir_json(cli, args, yoco_home):
    r = cli(*args)
    assert r.exit_code == 0 and r.json() == {"path": str(yoco_home)}  # was the bare path


def test_cache_ls_names_a_misspelt_stage(cli, digits_set):
    r = cli("cache", "ls", "--stage", "condensed")
    assert r.exit_code == 0 and "no runs of stage 'condensed'" in r.stderr and "condense" in r.stderr


def test_a_multi_line_exception_message_is_one_error_line(cli, digits_set, tmp_path):
    torch_file = tmp_path / "data.pt"
    assert cli("export", digits_set, torch_file).exit_code == 0
    # pickle's complaint about a torch zip archive spans two lines
    line = one_line_error(cli("score", "--from-file", torch_file), 3)
    assert "not a readable pickle" in line


def test_quoted_file_lines_are_not_turned_into_emoji(cli, tmp_path, monkeypatch):
    reg = tmp_path / "registry.txt"
    reg.write_text("root:x:0:0:root:/root:/bin/bash\n")
    monkeypatch.setenv("YOCO_REGISTRY", str(reg))
    line = one_line_error(cli("fetch", "--list"), 2)
    assert "root:x:0" in line


# -- absurd sizes: a usage error, not an allocator failure -----------------------------------------------
@pytest.mark.parametrize("args, words", [
    (["dynamics", SET, "--seeds", "1", "--epochs", "100000000"], "GiB"),  # was: RuntimeError from the allocator
    (["dynamics", SET, "--seeds", "1", "--epochs", str(10**20)], "GiB"),  # was: TypeError (overflow) in torch.zeros
    (["dynamics", SET, "--seeds", str(10**20), "--epochs", "1"], "--seeds"),  # was: OverflowError
    (["eval", SET, "--repeats", str(10**17), "--epochs", "1"], "--repeats"),  # was: MemoryError
])
def test_absurd_sizes_are_usage_errors(cli, digits_set, args, words):
    assert words in one_line_error(cli(*args), 2)


def test_negative_labels_are_named(cli, tmp_path):
    import torch

    path = tmp_path / "data.pt"
    torch.save([torch.rand(20, 1, 8, 8), -torch.ones(20, dtype=torch.long)], path)
    line = one_line_error(cli("import", path, "--dataset", "digits"), 3)
    assert "found -1" in line and "1073741823" not in line  # the check's internal bound leaked into the message
