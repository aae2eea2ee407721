"""yoco report: paper-shaped tables from evaluation records; nothing filled in that was not measured."""
from __future__ import annotations

import json

import pytest

from yoco_cli.stages import report as rep


def rec(metric, direction, balance, to, best, source="digits/dm/ipc10", frm=10, model="convnet, 200 ep"):
    return rep.EvalRecord("digits", source, frm, to, metric, direction, balance, model, list(best), list(best))


RECORDS = [
    rec("random", "hard", "imbalanced", 1, [40.0, 44.0]),
    rec("lbpe", "easy", "balanced", 1, [50.0, 52.0]),
    rec("lbpe", "easy", "balanced", 2, [60.0]),
    rec("el2n", "hard", "imbalanced", 1, [30.0]),
    rep.EvalRecord("digits", "digits/dm/ipc10", 10, None, None, None, None, "convnet, 200 ep", [80.0], [79.0]),
]


def test_main_table_cells_are_mean_and_population_std_and_best_is_marked():
    (t,) = rep.build_tables(RECORDS, ["main"])
    assert t.columns == ["10→1", "10→2"]
    rows = dict(t.rows)
    assert rows["Random"][0].mean == 42.0 and rows["Random"][0].std == 2.0 and rows["Random"][0].n == 2
    assert rows["YOCO"][0].best and not rows["Random"][0].best
    assert rows["Random"][1] is None and rows["SSP"][0] is None  # never measured: no number
    assert t.reference.mean == 80.0


def test_markdown_says_no_runs_and_bolds_the_best():
    (t,) = rep.build_tables(RECORDS, ["main"])
    md = rep.to_markdown(t)
    # 10→2 has one measured cell: nothing to compare, so nothing is marked best
    assert "| YOCO | **51.00 ± 1.00** | 60.00 ± 0.00 |" in md
    assert "| SSP | no runs | no runs |" in md


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
    assert (r.metric, r.direction, r.balance, r.ipc_to, r.source) == ("lbpe", "easy", "balanced", 1, "digits/x/ipc10")
