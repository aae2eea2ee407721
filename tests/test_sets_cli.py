"""`yoco import | show | export` through the CLI: JSON contracts, PNG grid, and every bad input of issue 2."""
from __future__ import annotations

import os

import pytest
import torch

IMPORT_KEYS = {"ref", "key", "dataset", "classes", "ipc", "factor", "stored_shape", "decoded_count", "value_space"}


def _pair(tmp_path, x=None, y=None, name="data.pt"):
    x = torch.rand(20, 3, 32, 32, generator=torch.Generator().manual_seed(0)) if x is None else x
    y = torch.arange(10).repeat_interleave(2) if y is None else y
    p = tmp_path / name
    torch.save([x, y], p)
    return p


def _digits_set(tmp_path, per_class=5, normalized=False):
    """Real 8x8 digits, class-sorted, in IDC's layout (or DSA's, normalized with the digits stats)."""
    from yoco_cli.data.digits import load_digits

    d = load_digits()
    idx = torch.cat([torch.nonzero(d.train_y == c).flatten()[:per_class] for c in range(10)])
    x, y = d.train_x[idx], d.train_y[idx]
    p = tmp_path / ("digits_dsa.pt" if normalized else "digits_idc.pt")
    torch.save({"data": [[d.normalize(x), y]]} if normalized else [x, y], p)
    return p, x


def test_import_json_has_exactly_the_documented_keys(cli, tmp_path):
    r = cli("import", _pair(tmp_path), "--format", "idc", "--dataset", "cifar10", "--json")
    assert r.exit_code == 0, r.stderr
    doc = r.json()
    assert set(doc) == IMPORT_KEYS
    assert doc == {**doc, "ref": "import/cifar10/idc-ipc2", "dataset": "cifar10", "classes": 10, "ipc": 2,
                   "factor": 2, "stored_shape": [20, 3, 32, 32], "decoded_count": 80, "value_space": "raw01"}
    again = cli("--json", "import", _pair(tmp_path), "--name", "my/set", "--factor", "1")
    assert again.json()["ref"] == "my/set" and again.json()["factor"] == 1 and again.json()["key"] != doc["key"]


def test_show_metadata_counts_and_made_by(cli, tmp_path):
    p, _ = _digits_set(tmp_path)
    assert cli("import", p, "--name", "d").exit_code == 0
    doc = cli("show", "d", "--json").json()
    assert IMPORT_KEYS <= set(doc) and doc["ref"] == "d" and doc["dataset"] == "digits"
    assert doc["class_counts"] == [5] * 10 and doc["made_by"]["format"] == "idc" and doc["stage"] == "import"
    table = cli("show", "d").stdout
    assert "5 in each of 10 classes" in table and "format=idc" in table and "raw01" in table


@pytest.mark.parametrize("normalized", [False, True])
def test_show_png_writes_a_grid_one_row_per_class(cli, tmp_path, normalized):
    from PIL import Image

    from yoco_cli.data import preview
    from yoco_cli.stages.importing import resolve_set
    from yoco_cli.store import Store

    p, raw = _digits_set(tmp_path, normalized=normalized)
    out = tmp_path / "grid.png"
    r = cli("show", p, "--png", out)  # a path is imported on the way
    assert r.exit_code == 0, r.stderr
    img = Image.open(out)
    cell = 32 + preview.GAP  # 8 px digits enlarged 4x
    grid_w = 5 * cell + preview.GAP
    assert img.format == "PNG" and img.size[1] == 10 * cell + preview.GAP  # a row per class
    assert img.size[0] > grid_w  # the grid, with the class names in a column at its left
    _, cset = resolve_set(Store(os.environ["YOCO_HOME"]), str(p))
    shown = preview.to_display(cset)  # normalized sets are de-normalized back to the raw digits
    assert torch.allclose(shown, raw, atol=1e-5)


def test_export_round_trip_through_the_cli(cli, tmp_path):
    from yoco_cli.store import Store

    src = _pair(tmp_path)
    first = cli("--json", "import", src, "--dataset", "cifar10").json()
    out = tmp_path / "exported.pt"
    r = cli("export", first["ref"], "--format", "idc", out)
    assert r.exit_code == 0, r.stderr
    for a, b in zip(torch.load(out, weights_only=True), torch.load(src, weights_only=True)):
        assert torch.equal(a, b) and a.dtype == b.dtype
    back = cli("--json", "import", out, "--name", "back").json()
    store = Store(os.environ["YOCO_HOME"])
    a, b = store.resolve(first["key"]), store.resolve(back["key"])
    assert a.digest("set") == b.digest("set")  # bit-identical set: the very same object
    assert len(store.all_objects()) == 1 + 2  # and the two runs' manifests


def test_export_refuses_a_layout_of_another_value_space(cli, tmp_path):
    p = tmp_path / "dsa.pt"
    torch.save({"data": [[torch.randn(20, 3, 32, 32), torch.arange(10).repeat_interleave(2)]]}, p)
    assert cli("import", p, "--name", "n").exit_code == 0
    r = cli("export", "n", "--format", "idc", tmp_path / "o.pt")
    assert r.exit_code == 2 and "export it as dsa or mtt" in r.stderr and not (tmp_path / "o.pt").exists()
    assert cli("export", "n", "--format", "dsa", tmp_path / "o.pt").exit_code == 0


class _RunsCode:
    """A pickle that would create a file when loaded unsafely."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _bad_input(kind, tmp_path):
    """(args, expected exit code) for each bad input of issue 2's acceptance list."""
    x, y = torch.rand(20, 3, 32, 32), torch.arange(10).repeat_interleave(2)
    if kind == "missing":
        return ["import", tmp_path / "nope.pt"], 2
    if kind == "directory":
        (tmp_path / "adir").mkdir()
        return ["import", tmp_path / "adir"], 2
    if kind == "not_torch":
        (tmp_path / "t.pt").write_text("just some text\n")
        return ["import", tmp_path / "t.pt"], 3
    if kind == "empty_file":
        (tmp_path / "e.pt").write_bytes(b"")
        return ["import", tmp_path / "e.pt"], 3
    if kind == "runs_code":
        torch.save([_RunsCode(tmp_path / "PWNED"), y], tmp_path / "evil.pt")
        return ["import", tmp_path / "evil.pt"], 3
    if kind == "wrong_rank":
        return ["import", _pair(tmp_path, x=x[:, 0])], 3
    if kind == "label_length":
        return ["import", _pair(tmp_path, y=y[:-3])], 3
    if kind == "nan":
        x[4, 1, 2, 3] = float("nan")
        return ["import", _pair(tmp_path, x=x)], 3
    if kind == "inf":
        x[0, 0, 0, 0] = float("-inf")
        return ["import", _pair(tmp_path, x=x)], 3
    if kind == "factor_too_big":
        return ["import", _pair(tmp_path), "--factor", "64"], 2
    if kind == "factor_zero":
        return ["import", _pair(tmp_path), "--factor", "0"], 2
    if kind == "unknown_format":
        return ["import", _pair(tmp_path), "--format", "idx"], 2
    if kind == "unknown_dataset":
        return ["import", _pair(tmp_path), "--dataset", "cifar11"], 2
    if kind == "ambiguous_dataset":
        return ["import", _pair(tmp_path, x=torch.rand(20, 1, 28, 28))], 2
    if kind == "dsa_experiment":
        torch.save({"data": [[x, y]]}, tmp_path / "dsa.pt")
        return ["import", tmp_path / "dsa.pt", "--experiment", "2"], 2
    if kind == "unwritable_home":
        (tmp_path / "blocker").write_text("a file, not a folder")
        return ["--home", tmp_path / "blocker" / "home", "import", _pair(tmp_path)], 2
    if kind == "export_unknown_format":
        return ["export", _pair(tmp_path), "--format", "png", tmp_path / "o.pt"], 2
    if kind == "export_to_directory":
        return ["export", _pair(tmp_path), tmp_path], 2
    if kind == "show_unknown_ref":
        return ["show", "no/such/set"], 2
    raise AssertionError(kind)


BAD = ["missing", "directory", "not_torch", "empty_file", "runs_code", "wrong_rank", "label_length", "nan", "inf",
       "factor_too_big", "factor_zero", "unknown_format", "unknown_dataset", "ambiguous_dataset", "dsa_experiment",
       "unwritable_home", "export_unknown_format", "export_to_directory", "show_unknown_ref"]


@pytest.mark.parametrize("kind", BAD)
def test_bad_input_is_one_line_with_its_exit_code(cli, tmp_path, kind):
    args, code = _bad_input(kind, tmp_path)
    r = cli(*args)
    assert r.exit_code == code, (r.exit_code, r.stderr, r.exception)
    err = r.stderr.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in r.stderr, r.stderr
    assert r.stdout == ""
    assert not (tmp_path / "PWNED").exists()  # the code in the pickle never ran


def test_help_renders_for_the_set_commands(cli):
    for cmd in ("import", "show", "export"):
        r = cli(cmd, "--help")
        assert r.exit_code == 0 and "Example" in r.stdout
