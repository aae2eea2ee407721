"""Partial results: a pipeline interrupted in its evaluation sweep leaves every finished set's
evaluation group in the store, and `yoco report` shows those cells with their n and what is missing."""
from __future__ import annotations

import pytest

from yoco_cli.stages import pipeline as pipeline_stage

REQ = {"dataset": "digits", "method": "random", "ipc": 2, "targets": [1], "metrics": ["random", "lbpe"],
       "seeds": 2, "repeats": 1, "dynamics_epochs": 2, "eval_epochs": 2}


class _StopAfter:
    """on_step/on_stage hooks that press Ctrl-C once `runs` evaluation runs of the sweep are in."""

    def __init__(self, runs: int):
        self.runs, self.in_eval = runs, False

    def on_step(self, step) -> None:
        self.in_eval = self.in_eval or step.kind == "eval"

    def on_stage(self, done, total, status: str = "") -> None:
        if self.in_eval and done >= self.runs:
            raise KeyboardInterrupt


def test_interrupted_sweep_leaves_finished_cells_that_report_shows_with_their_n(store, cli):
    from yoco_cli.executors import Setting
    from yoco_cli.stages.sweep import Pool

    stop = _StopAfter(4)
    with Pool(Setting.parse("serial")) as pool, pytest.raises(KeyboardInterrupt):
        pipeline_stage.run(store, pipeline_stage.PipelineRequest(**REQ), on_step=stop.on_step,
                           on_stage=stop.on_stage, pool=pool)
    # longest first: the source, then the pruned sets in plan order (random run 0 and 1, lbpe run 0)
    assert len(list((store.runs / "eval-run").glob("*.json"))) == 4
    assert len(list((store.runs / "eval").glob("*.json"))) == 4  # each finished set's group, at once
    r = cli("report", "--json")
    assert r.exit_code == 0, r.stderr
    (main,) = r.json()
    assert main["name"] == "main" and main["columns"] == ["2→1"]
    rows = dict(main["rows"])
    assert rows["Random"][0]["n"] == 2 and rows["Random"][0]["missing"] == []
    assert rows["YOCO"][0]["n"] == 1 and rows["YOCO"][0]["missing"] == ["run1/repeat0"]
    assert rows["Random"][0]["diff"]["n"] == 1 and main["reference"]["n"] == 1
    text = cli("report")
    assert "incomplete cells (2 runs each when done): YOCO 2→1 lacks run1/repeat0" in " ".join(text.stdout.split())
    # the rerun evaluates only what is missing, and then every cell is whole
    pipeline_stage.run(store, pipeline_stage.PipelineRequest(**REQ))
    assert len(list((store.runs / "eval-run").glob("*.json"))) == 5
    (whole,) = cli("report", "--json").json()
    assert all(c["n"] == 2 and c["missing"] == [] for _, cells in whole["rows"] for c in cells)
