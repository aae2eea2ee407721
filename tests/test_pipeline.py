"""yoco pipeline end to end on digits (tiny settings): the second run trains nothing, same report."""
from __future__ import annotations

ARGS = ["pipeline", "digits", "--method", "random", "--to", "1", "2", "--metrics", "lbpe", "--metrics", "random",
        "--metrics", "forgetting", "--seeds", "2", "--repeats", "1", "--dynamics-epochs", "4", "--eval-epochs", "4"]


def test_pipeline_twice_second_run_trains_nothing_and_reports_the_same(cli, tmp_path):
    first = cli("--json", *ARGS, "--plot", tmp_path / "p.png", "--markdown", tmp_path / "r.md")
    assert first.exit_code == 0, first.stderr
    a = first.json()
    assert a["trained_now"] > 0
    # the line before the evaluation sweep: how many runs, how many epochs, on how many workers
    assert "13 evaluation(s) x 4 epochs: " in first.stderr and " worker(s) on " in first.stderr
    # 3 metrics x 2 targets x 2 dynamics seeds pruned sets, + the source, each evaluated
    assert len(a["pruned"]) == 12 and len(a["evals"]) == 13
    main = next(t for t in a["tables"] if t["name"] == "main")
    labels = [row[0] for row in main["rows"]]
    assert labels == ["Random", "Forgetting", "YOCO"]
    assert all(cell is not None and cell["n"] == 2 for _, cells in main["rows"] for cell in cells)
    assert (tmp_path / "p.png").stat().st_size > 1000
    md = (tmp_path / "r.md").read_text()
    assert "| YOCO |" in md and "| rule | 10→1 | Δ 10→1 | 10→2 | Δ 10→2 |" in md
    # the headline: YOCO against the best other rule, per target, paired over 2 seeds x 1 repeat
    assert [(v["column"], v["vs"], v["n"]) for v in a["verdicts"]] == [("10→1", "YOCO", 2), ("10→2", "YOCO", 2)]
    assert all(v["other"] in ("Random", "Forgetting") for v in a["verdicts"])

    second = cli("--json", *ARGS)
    assert second.exit_code == 0, second.stderr
    b = second.json()
    assert b["trained_now"] == 0
    assert b["tables"] == a["tables"] and b["evals"] == a["evals"]
    text = cli(*ARGS)  # cached: the same tables, and one headline line per target
    assert text.exit_code == 0, text.stderr
    lines = [line for line in text.stdout.splitlines() if line.startswith(("10→1: YOCO", "10→2: YOCO"))]
    assert len(lines) == 2 and all("(the best other rule) by" in line and "at n=2" in line for line in lines)
    assert "± 0.00" not in text.stdout


def test_pipeline_bad_target_exit_2(cli):
    r = cli("pipeline", "--to", "10")
    assert r.exit_code == 2 and "--to" in r.stderr


def test_ccs_ratio_for_a_dataset_without_a_row_is_borrowed_and_said_as_in_prune():
    from types import SimpleNamespace

    import pytest

    from yoco_cli.errors import UsageError
    from yoco_cli.stages import pipeline as pipeline_stage
    from yoco_cli.stages import prune

    class Notes:
        def __init__(self):
            self.lines = []

        def warn(self, text):
            self.lines.append(text)

    digits = SimpleNamespace(dataset="digits", num_classes=10, ipc=10)
    notes = Notes()
    req = pipeline_stage.PipelineRequest(targets=[1, 2], metrics=["ccs"])
    assert pipeline_stage.ccs_betas(req, digits, notes) == {1: 0.3, 2: 0.1}  # CIFAR-10's row
    assert notes.lines[0] == ("no CCS cut ratio for digits 10->1 in the reference; using CIFAR-10's (0.3), "
                              "a dataset with as many classes (--ccs-beta sets another)")
    assert [prune.ccs_beta(digits, t) for t in (1, 2)] == [(0.3, notes.lines[0]), (0.1, notes.lines[1])]
    with pytest.raises(UsageError, match="no CCS cut ratio for digits 10->3"):  # not in CIFAR-10's row either
        pipeline_stage.ccs_betas(pipeline_stage.PipelineRequest(targets=[3], metrics=["ccs"]), digits, notes)
    seven = SimpleNamespace(dataset="folder:x", num_classes=7, ipc=10)  # no dataset with 7 classes to borrow from
    with pytest.raises(UsageError, match="no CCS cut ratio for folder:x 10->1") as err:
        prune.ccs_beta(seven, 1)
    assert "--ccs-beta" in err.value.hint
