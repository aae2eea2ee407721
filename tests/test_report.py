"""yoco report: paper-shaped tables from evaluation records; nothing filled in that was not measured."""
from __future__ import annotations

import json

import pytest

from yoco_cli.stages import report as rep


def rec(metric, direction, balance, to, best, source="digits/dm/ipc10", frm=10, model="convnet, 200 ep"):
    return rep.EvalRecord("digits", source, frm, to, metric, direction, balance, model, list(best), list(best))


RECORDS = [
    rec("random", "hard", "imbalanced", 1, [40.0, 44.0, 42.0]),
    rec("lbpe", "easy", "balanced", 1, [50.0, 52.0, 51.0]),
    rec("lbpe", "easy", "balanced", 2, [60.0]),
    rec("el2n", "hard", "imbalanced", 1, [30.0]),
    rep.EvalRecord("digits", "digits/dm/ipc10", 10, None, None, None, None, "convnet, 200 ep", [80.0], [79.0]),
]


def test_main_table_cells_are_mean_and_population_std_and_best_is_marked():
    (t,) = rep.build_tables(RECORDS, ["main"])
    assert t.columns == ["10→1", "10→2"]
    rows = dict(t.rows)
    assert rows["Random"][0].mean == 42.0 and rows["Random"][0].std == pytest.approx(1.633, abs=1e-3)
    assert rows["Random"][0].n == 3
    # YOCO - Random over 3 matched repeats: 10, 8, 9 -> 9 ± t(0.975, 2) · 1/sqrt(3): clearly above 0
    assert rows["YOCO"][0].best and not rows["Random"][0].best
    assert rows["Random"][1] is None and rows["SSP"][0] is None  # never measured: no number
    assert t.reference.mean == 80.0


def test_markdown_says_no_runs_and_bolds_the_best():
    (t,) = rep.build_tables(RECORDS, ["main"])
    md = rep.to_markdown(t)
    # 10→2 has one measured cell: nothing to compare, so nothing is marked best; one run is n=1, not ± 0.00
    assert "| rule | 10→1 | Δ 10→1 | 10→2 | Δ 10→2 |" in md
    assert "| YOCO | **51.00 ± 0.82** | — | 60.00 (n=1) | — |" in md
    assert "| Random | 42.00 ± 1.63 | Δ -9.00 [-11.48, -6.52] | no runs |  |" in md
    assert "| EL2N | 30.00 (n=1) | Δ -20.00 (n=1) | no runs |  |" in md
    assert "| SSP | no runs |  | no runs |  |" in md
    assert "± 0.00" not in md and "unpruned source: 80.00 (n=1)" in md


def test_default_report_shows_only_tables_that_compare_and_drops_unmeasured_rows():
    tables = rep.build_tables(RECORDS)  # random, el2n and YOCO measured: main compares three rules
    # each compares two or more; balance (Random, EL2N, YOCO) repeats main's very cells, so it is left out
    assert [t.name for t in tables] == ["main", "rules", "easyhard"]
    (only_yoco,) = rep.build_tables(RECORDS[1:3])  # YOCO alone at two targets: one table, nothing starred
    assert only_yoco.name == "main" and [label for label, _ in only_yoco.rows] == ["YOCO"]
    assert not any(c.best for c in only_yoco.rows[0][1])
    main = tables[0]
    assert [label for label, _ in main.rows] == ["Random", "EL2N", "YOCO"]
    assert main.notes[-1] == "no runs yet: SSP, Entropy, AUM, Forgetting, CCS"  # after the protocol note
    assert "_no runs yet: SSP, Entropy, AUM, Forgetting, CCS_" in rep.to_markdown(main)


def test_default_report_of_one_measured_cell_is_one_table_without_a_star():
    (t,) = rep.build_tables(RECORDS[:1])
    assert t.name == "main" and [label for label, _ in t.rows] == ["Random"]
    assert not t.rows[0][1][0].best
    assert "one rule measured: nothing to compare yet" in t.notes
    assert "*" not in rep.to_markdown(t).replace("**" + rep.caption(t) + "**", "")


def test_rules_table_does_not_mix_directions_or_balance():
    (t,) = rep.build_tables(RECORDS, ["rules"])
    rows = dict(t.rows)
    assert rows["Rule 1 only (LBPE easy, imbalanced)"] == [None, None]
    assert rows["Both (YOCO)"][0].mean == 51.0


def test_metric_filter_and_csv_and_json():
    tables = rep.build_tables(RECORDS, ["main"], metrics=["lbpe"])
    assert [label for label, _ in tables[0].rows] == ["YOCO"]
    csv_text = rep.to_csv(tables)
    assert csv_text.splitlines()[1].startswith("main,digits,digits/dm/ipc10,")
    assert json.loads(json.dumps(rep.to_json(tables)))[0]["rows"][0][0] == "YOCO"


def test_last_accuracy_is_reported_separately():
    (t,) = rep.build_tables(RECORDS, ["main"], which="last")
    assert t.reference.mean == 79.0 and t.which == "last"


def test_plot_writes_a_png(tmp_path):
    path = rep.plot(RECORDS, tmp_path / "r.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_without_runs_exit_2(cli):
    r = cli("report")
    assert r.exit_code == 2 and "no evaluations" in r.stderr


def _fake_set(store):
    import torch

    from yoco_cli.data.condensed import CondensedSet
    from yoco_cli.stages.sets import set_result
    from yoco_cli.store import run_cached

    pruned = {"parent": "digits/x/ipc10", "from": 10, "to": 1, "metric": "lbpe", "direction": "easy",
              "balance": "balanced", "score_run": 0}
    cset = CondensedSet(torch.rand(10, 1, 8, 8), torch.arange(10), "digits", 10, 1, "raw01", 1,
                        meta={"pruned": pruned})
    m, _ = run_cached(store, "prune", 1, {"t": 1}, {}, lambda tmp, key: set_result(tmp, cset, "fake",
                                                                                   {"pruned": pruned}), ref="p")
    return m


def _fake_eval(store, set_m, seeds, accs):
    from yoco_cli.store import Manifest

    outputs, per = {}, []
    for s, a in zip(seeds, accs):
        digest, size = store.put_bytes(json.dumps({"seed": s, "best": a}).encode())
        outputs[f"seed{s}/result"] = {"digest": digest, "size": size}
        per.append({"seed": s, "best": a, "last": a})
    key = f"{len(seeds):064x}"
    store.commit_run(Manifest("eval", 1, key, {}, {"set": set_m.digest("set")}, outputs,
                              {"model": {"name": "convnet"}, "epochs": 5, "per_repeat": per}))


def test_collect_counts_shared_repeats_once(store):
    set_m = _fake_set(store)
    _fake_eval(store, set_m, [0, 1], [0.5, 0.7])        # --repeats 2
    _fake_eval(store, set_m, [0, 1, 2], [0.5, 0.7, 0.9])  # later --repeats 3: seeds 0, 1 are the same runs
    (r,) = rep.collect(store)
    assert sorted(r.best) == pytest.approx([50.0, 70.0, 90.0])
    assert sorted((s, round(v, 6)) for s, v in zip(r.repeats, r.best)) == [(0, 50.0), (1, 70.0), (2, 90.0)]
    assert r.score_run == 0
    assert (r.metric, r.direction, r.balance, r.ipc_to, r.source) == ("lbpe", "easy", "balanced", 1, "digits/x/ipc10")


def _runs(metric, direction, balance, to, values, run):
    """One pruned set (dynamics run `run`) evaluated with repeats 0, 1, ..."""
    r = rec(metric, direction, balance, to, values)
    r.score_run, r.repeats = run, list(range(len(values)))
    return r


def test_star_only_where_the_best_is_distinguishable_from_the_runner_up():
    # 10→1: YOCO leads SSP in every pair by ~9: distinguishable. 10→2: YOCO ahead on average, not in every pair
    recs = [_runs("lbpe", "easy", "balanced", 1, [60.0, 61.0], j) for j in range(3)]
    recs += [_runs("ssp", None, "imbalanced", 1, [51.0, 52.5], j) for j in range(3)]
    recs += [_runs("lbpe", "easy", "balanced", 2, [70.0, 66.0], j) for j in range(3)]
    recs += [_runs("ssp", None, "imbalanced", 2, [68.0, 67.0], j) for j in range(3)]
    (t,) = rep.build_tables(recs, ["main"])
    rows = dict(t.rows)
    yoco1, ssp1, yoco2, ssp2 = rows["YOCO"][0], rows["SSP"][0], rows["YOCO"][1], rows["SSP"][1]
    assert yoco1.best and yoco1.n == 6 and sorted(yoco1.runs) == [f"run{j}/repeat{r}" for j in range(3) for r in (0, 1)]
    assert ssp1.diff.vs == "YOCO" and ssp1.diff.n == 6 and ssp1.diff.mean == -8.75 and ssp1.diff.distinguishable
    assert yoco2.mean > ssp2.mean and not yoco2.best and not ssp2.best
    assert ssp2.diff.n == 6 and ssp2.diff.lo < 0 < ssp2.diff.hi and not ssp2.diff.distinguishable
    assert "no star at 10→2: YOCO and SSP are not distinguishable (n=6)" in t.notes
    assert yoco1.diff is None  # the comparison row itself
    text = _rich_text(t)
    assert "Δ -8.75 [" in text and "Δ -0.50 [" in text and " ~" in text and "Δ: this row minus YOCO" in text


def _rich_text(t) -> str:
    import io

    from rich.console import Console

    console = Console(file=io.StringIO(), width=200, no_color=True)
    console.print(rep.to_rich(t))
    return console.file.getvalue()


def test_vs_picks_another_row_and_json_and_csv_carry_the_intervals():
    recs = [_runs("lbpe", "easy", "balanced", 1, [60.0, 61.0], j) for j in range(3)]
    recs += [_runs("random", None, "imbalanced", 1, [50.0 + j, 52.0], j) for j in range(3)]
    (t,) = rep.build_tables(recs, ["main"], vs="random")
    assert t.vs == "Random" and dict(t.rows)["YOCO"][0].diff.vs == "Random"
    (doc,) = json.loads(json.dumps(rep.to_json([t])))
    assert doc["vs"] == "Random" and doc["interval"] == "paired t, 95%"
    cell = dict(doc["rows"])["YOCO"][0]
    assert set(cell["diff"]) == {"vs", "mean", "lo", "hi", "n", "distinguishable", "sd"}
    assert cell["diff"]["n"] == 6 and cell["runs"]["run2/repeat1"] == 61.0
    lines = rep.to_csv([t]).splitlines()
    assert lines[0].endswith("vs,diff,diff_lo,diff_hi,pairs,distinguishable")
    yoco = next(line for line in lines if ",YOCO," in line)
    assert yoco.split(",")[-6:-4] == ["Random", str(cell["diff"]["mean"])] and yoco.endswith(",6,1")
    (none,) = rep.build_tables(recs, ["main"], vs="none")
    assert none.vs is None and all(c.diff is None for _, cells in none.rows for c in cells if c)


def test_vs_names_a_rule_or_fails_in_one_line():
    from yoco_cli.errors import UsageError

    assert rep.comparison_rule("yoco").label == "lbpe-easy-balanced"
    assert rep.comparison_rule("Random-Balanced").label == "random-hard-balanced"
    assert rep.comparison_rule("none") is None
    for bad in ("bogus", "ssp-sideways"):
        with pytest.raises(UsageError, match="--vs"):
            rep.comparison_rule(bad)


def test_cells_short_of_runs_say_which_are_missing():
    recs = [_runs("lbpe", "easy", "balanced", 1, [60.0], j) for j in range(3)]
    recs += [_runs("ssp", None, "imbalanced", 1, [50.0], j) for j in range(2)]  # run 2 not evaluated yet
    (t,) = rep.build_tables(recs, ["main"])
    ssp = dict(t.rows)["SSP"][0]
    assert ssp.n == 2 and ssp.missing == ["run2/repeat0"] and dict(t.rows)["YOCO"][0].missing == []
    assert "incomplete cells (3 runs each when done): SSP 10→1 lacks run2/repeat0" in t.notes


def test_report_cli_prints_differences_and_rejects_a_bad_vs(cli, store):
    set_m = _fake_set(store)
    _fake_eval(store, set_m, [0, 1], [0.5, 0.7])
    r = cli("report", "--vs", "bogus")
    assert r.exit_code == 2 and "--vs 'bogus': unknown metric 'bogus'" in r.stderr
    ok = cli("report", "--json")
    assert ok.exit_code == 0, ok.stderr
    (t,) = ok.json()
    assert t["vs"] == "YOCO" and t["rows"][0][1][0]["runs"] == {"run0/repeat0": 50.0, "run0/repeat1": 70.0}


def test_verdicts_say_whether_yocos_lead_over_the_best_other_rule_holds_and_what_would_settle_it():
    recs = [_runs("lbpe", "easy", "balanced", 1, [60.0, 61.0], j) for j in range(3)]
    recs += [_runs("ssp", None, "imbalanced", 1, [51.0, 52.5], j) for j in range(3)]
    recs += [_runs("random", None, "imbalanced", 1, [40.0, 41.0], j) for j in range(3)]
    recs += [_runs("lbpe", "easy", "balanced", 2, [70.0, 66.0], j) for j in range(3)]
    recs += [_runs("ssp", None, "imbalanced", 2, [68.0, 67.0], j) for j in range(3)]
    recs += [_runs("lbpe", "easy", "balanced", 5, [80.0], 0), _runs("ssp", None, "imbalanced", 5, [82.0], 0)]
    (t,) = rep.build_tables(recs, ["main"])
    v1, v2, v5 = rep.verdicts(t)
    assert (v1.column, v1.other, v1.lead, v1.n, v1.distinguishable) == ("10→1", "SSP", 8.75, 6, True)
    assert v1.text(3, 2).startswith("10→1: YOCO leads SSP (the best other rule) by +8.75 [")
    assert v1.text(3, 2).endswith("at n=6: distinguishable")
    assert v2.lead == 0.5 and not v2.distinguishable and v2.pairs_needed > 6
    need = v2.pairs_needed
    assert v2.text(3, 2).endswith(f"about {need} pairs would settle it if this difference held: "
                                  f"--repeats {-(-need // 3)} (at --seeds 3) or --seeds {-(-need // 2)} (at --repeats 2)")
    assert v5.text(1, 1) == ("10→5: YOCO trails SSP (the best other rule) by -2.00 with one pair (n=1): no spread "
                             "measured, not distinguishable; --seeds 3 or --repeats 3 gives 3 pairs and an interval")


def test_plot_legend_sits_outside_every_panel_and_clear_of_the_next():
    two = RECORDS + [rec("lbpe", "easy", "balanced", 1, [55.0], source="digits/dm/ipc20", frm=20),
                     rec("random", "hard", "imbalanced", 1, [35.0], source="digits/dm/ipc20", frm=20)]
    fig = rep.figure(two)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    axes = fig.axes
    assert len(axes) == 2
    for i, ax in enumerate(axes):
        box, legend = ax.get_window_extent(renderer), ax.get_legend().get_window_extent(renderer)
        assert legend.x0 >= box.x1  # right of the data, so it covers no point
        if i + 1 < len(axes):
            assert legend.x1 <= axes[i + 1].get_window_extent(renderer).x0
