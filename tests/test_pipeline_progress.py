"""The pipeline's progress: every step announced by label when it starts (planned up front,
weighted by cost), the running stage's own bar, an ETA, and no leftover bars."""
from __future__ import annotations

import io
import itertools

from yoco_cli.stages import pipeline as pipeline_stage

REQ = {"dataset": "digits", "method": "random", "ipc": 2, "targets": [1], "metrics": ["random", "lbpe"],
       "seeds": 1, "repeats": 1, "dynamics_epochs": 2, "eval_epochs": 2}


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
    # the steps before the sweep: told twice each, started (cached None) then finished, in plan order
    before, sweep = events[:10], events[10:]
    assert [e[2] for e in before[::2]] == [label for _, label in planned[:5]]
    assert [e[3] for e in before[::2]] == [None] * 5 and all(e[3] is not None for e in before[1::2])
    assert [e[:2] for e in events[::2][:5]] == [(i, 8) for i in range(1, 6)]
    # the evaluation sweep: its three steps start together, then each ends when its set is in (any order)
    assert [(e[0], e[3]) for e in sweep[:3]] == [(6, None), (7, None), (8, None)]
    assert sorted(e[0] for e in sweep[3:]) == [6, 7, 8] and all(e[3] is False for e in sweep[3:])
    assert (2, 2) in stages  # the dynamics' and evals' own epochs reached their end
    # a rerun: every step cached
    again = []
    pipeline_stage.run(store, pipeline_stage.PipelineRequest(**REQ), on_step=lambda s: again.append(s.cached))
    assert [c for c in again if c is not None] == [True] * 8 and len(again) == 16


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


def _lpt(weights: list[float], workers: int) -> list[tuple[float, int]]:
    """(end time, index) of each run of a longest-first sweep on `workers` at 1 s per unit of cost."""
    free = [0.0] * workers
    ends = []
    for i in sorted(range(len(weights)), key=lambda i: -weights[i]):
        w = min(range(workers), key=lambda k: free[k])
        free[w] += weights[i]
        ends.append((free[w], i))
    return sorted(ends)


def test_sweep_eta_counts_finished_sets_and_falls_with_the_clock_on_uneven_runs():
    from rich.console import Console
    from rich.progress import Progress

    from yoco_cli.cli.cmd_pipeline import PipelineBar

    weights = [40.0, 20.0, 15.0, 10.0, 8.0, 5.0, 5.0, 3.0, 2.0, 2.0, 1.0, 1.0]
    dyn = pipeline_stage.Step("dynamics", "dynamics", weight=50.0)
    evals = [pipeline_stage.Step("eval", f"eval set {i}", weight=w) for i, w in enumerate(weights)]
    plan = [dyn, *evals]
    for i, s in enumerate(plan, 1):
        s.index, s.count, s.plan_weight = i, len(plan), sum(p.weight for p in plan)
    now = [0.0]
    prog = Progress(console=Console(file=io.StringIO(), width=160, color_system=None))
    bar = PipelineBar(prog, clock=lambda: now[0])
    bar.on_step(dyn)
    now[0] = 50.0  # 50 units alone in 50 s: 1 s per unit
    dyn.cached = False
    bar.on_step(dyn)
    for s in evals:  # the sweep: every set starts at once, 2 workers, longest first
        bar.on_step(s)
    assert prog.tasks[0].description == "steps 2-13/13: 12 eval steps left"
    ends = _lpt(weights, 2)
    makespan = ends[-1][0]
    etas, completed = [], []
    t = 0
    while t <= makespan:
        now[0] = 50.0 + t
        while ends and ends[0][0] <= t:
            _, i = ends.pop(0)
            evals[i].cached = False
            bar.on_step(evals[i])
        etas.append(bar.eta())
        completed.append(prog.tasks[0].completed)
        t += 1
    # never climbs (beyond a second's rounding) while runs are in flight, and reaches 0 at the end
    assert all(b <= a + 1.0 for a, b in itertools.pairwise(etas))
    assert etas[-1] == 0.0 and completed[-1] == sum(p.weight for p in plan)
    assert all(b >= a for a, b in itertools.pairwise(completed))  # finished sets count as they come in
    # the first sweep estimate is priced at the rate measured before it (1 s per unit on one worker, so
    # twice the 2 workers' time: it errs long); once the long run is in, the sweep's own measured rate
    # tracks the true time left within 20% of the sweep
    true_left = [makespan - t for t in range(len(etas))]
    assert etas[0] == sum(weights)
    assert all(abs(e - left) <= 0.2 * makespan for e, left in zip(etas[45:], true_left[45:]))
