"""The pipeline's progress: every step announced by label when it starts (planned up front,
weighted by cost), the running stage's own bar, an ETA, and no leftover bars."""
from __future__ import annotations

import io

from yoco_cli.stages import pipeline as pipeline_stage

REQ = {"dataset": "digits", "method": "random", "ipc": 2, "targets": [1], "metrics": ["random", "lbpe"], "seeds": 1,
       "repeats": 1, "dynamics_epochs": 2, "eval_epochs": 2}


def test_steps_are_told_when_they_start_and_end_in_the_planned_order(tmp_path):
    from yoco_cli.store import Store

    store = Store(tmp_path / "home").ensure()
    req = pipeline_stage.PipelineRequest(**REQ)
    planned = [(s.kind, s.label) for s in pipeline_stage.plan_steps(store, req)]
    assert planned == [
        ("condense", "condense digits/random/ipc2"),
        ("dynamics", "dynamics, 1 seed(s) x 2 epochs"),
        ("scores", "scores"),
        ("prune", "prune random-hard-imbalanced to IPC 1, run 0"),
        ("prune", "prune lbpe-easy-balanced to IPC 1, run 0"),
        ("eval", "eval digits/random/ipc2"),
        ("eval", "eval random-hard-imbalanced IPC 1, run 0"),
        ("eval", "eval lbpe-easy-balanced IPC 1, run 0"),
    ]
    events, stages = [], []
    pipeline_stage.run(store, pipeline_stage.PipelineRequest(**REQ),
                       on_step=lambda s: events.append((s.index, s.count, s.label, s.cached)),
                       on_stage=lambda done, total, status="": stages.append((done, total)))
    # each step twice: started (cached None), then finished; in plan order, numbered 1..8 of 8
    assert [e[2] for e in events[::2]] == [label for _, label in planned]
    assert [e[3] for e in events[::2]] == [None] * 8 and all(e[3] is not None for e in events[1::2])
    assert [e[:2] for e in events[::2]] == [(i, 8) for i in range(1, 9)]
    assert (2, 2) in stages  # the dynamics' and evals' own epochs reached their end
    # a rerun: every step cached
    again = []
    pipeline_stage.run(store, pipeline_stage.PipelineRequest(**REQ), on_step=lambda s: again.append(s.cached))
    assert again[1::2] == [True] * 8


def _render(prog) -> str:
    prog.refresh()
    return prog.console.file.getvalue()


def test_bar_shows_the_running_step_its_stage_bar_and_an_eta_without_empty_counts():
    from rich.console import Console
    from rich.progress import Progress

    from yoco_cli.cli.cmd_pipeline import PipelineBar
    from yoco_cli.cli.output import Output

    console = Console(file=io.StringIO(), force_terminal=True, width=160, color_system=None)
    out = Output(err=console)
    now = [0.0]
    with out.progress(unit="pipeline") as prog:
        assert isinstance(prog, Progress)
        bar = PipelineBar(prog, clock=lambda: now[0])
        first = _render(prog)
        assert "planning the pipeline" in first and "0/?" not in first
        steps = [pipeline_stage.Step("condense", "condense digits/dm/ipc10", weight=30.0),
                 pipeline_stage.Step("dynamics", "dynamics, 3 seed(s) x 100 epochs", weight=60.0),
                 pipeline_stage.Step("eval", "eval digits/dm/ipc10", weight=10.0)]
        for i, s in enumerate(steps, 1):
            s.index, s.count, s.plan_weight = i, 3, 100.0
        bar.on_step(steps[0])
        bar.on_stage(5, 10, "loss 1.5")
        assert bar.eta() is None  # nothing timed yet
        now[0] = 10.0
        bar.on_stage(5, 10, "loss 1.5")  # half of 30 units in 10 s: 85 units left at 1.5 s each
        assert abs(bar.eta() - 85 * 10 / 15) < 1e-9
        text = _render(prog)
        assert "step 1/3: condense digits/dm/ipc10" in text and "condense" in text and "5/10" in text
        assert "ETA 57 s" in text and "loss 1.5" in text
        now[0] = 20.0
        steps[0].cached = False
        bar.on_step(steps[0])  # 30 units took 20 s
        steps[1].cached = None
        bar.on_step(steps[1])
        assert abs(bar.eta() - 70 * 20 / 30) < 1e-9
        text = _render(prog).rsplit("step 1/3", 1)[-1]
        assert "step 2/3: dynamics, 3 seed(s) x 100 epochs" in text
        steps[1].cached = True  # a cached step does not count as speed
        bar.on_step(steps[1])
        assert abs(bar.eta() - 10 * 20 / 30) < 1e-9
