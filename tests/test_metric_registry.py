"""Declared once: a metric (methods/scores.py), a condensation method (condensation.METHODS), a set
layout (data/formats.LAYOUTS). A toy metric registered in-process reaches `yoco score`, `yoco prune
--metric`, `yoco report`'s rows and the pipeline's metric check, and a score table stored before it
was registered is scored afresh instead of failing."""
from __future__ import annotations

import numpy as np
import pytest
from test_prune_cli import TINY, make_set  # tests/ is on sys.path (no __init__.py)

from yoco_cli.errors import UsageError
from yoco_cli.methods import scores, select
from yoco_cli.stages import report as rep
from yoco_cli.stages.pipeline import MAIN_METRICS, PipelineRequest, rules

FAST_EVAL = ("--epochs", "1", "--repeats", "1", "--model", "convnet:width=8,depth=1")


@pytest.fixture
def toy():
    """`toy`: twice EL2N, over the same window. Removed from the registry afterwards."""
    def toy_scores(dyn, start: int = 0, end: int = 10):
        v, info = scores.el2n(dyn, start, end)
        return 2 * v, {**info, "scale": 2}

    scores.register(scores.Metric(
        "toy", "dynamics", True, "twice EL2N (a test's metric)", label="Toy",
        options=lambda r: {"start": r.opts.el2n_window[0], "end": r.opts.el2n_window[1]}))(toy_scores)
    try:
        yield scores.REGISTRY["toy"]
    finally:
        scores.REGISTRY.pop("toy", None)


def test_todays_metrics_keep_todays_score_key():
    # the registry enters the score key only when it differs from what score VERSION 1 computed
    assert scores.key_params() == {}
    assert MAIN_METRICS == ["random", "ssp", "entropy", "aum", "forgetting", "el2n", "ccs", "lbpe"]


def test_declared_fields_give_the_lists():
    assert [select.rule_for(m).label for m in ("lbpe", "el2n", "aum", "ccs", "random", "ssp")] == [
        "lbpe-easy-balanced", "el2n-hard-imbalanced", "aum-hard-imbalanced", "ccs-hard-imbalanced",
        "random-hard-imbalanced", "ssp-hard-imbalanced"]
    # an undirected metric ignores --easy; a fixed-balance one ignores --balanced
    assert select.rule_for("random", hard=False).hard is True and select.rule_for("ccs", balanced=True).balanced is False
    assert select.rule_for("yoco").metric == "lbpe" and scores.get("accumulated_margin").name == "aum"
    assert [s.label for s in rep.TABLES["main"][1]] == ["Random", "SSP", "Entropy", "AUM", "Forgetting", "EL2N",
                                                         "CCS", "YOCO", "Loss"]
    with pytest.raises(ValueError, match="'el2n' is registered already"):
        scores.declare(scores.Metric("el2n", "dynamics", True, "a second el2n"))
    with pytest.raises(UsageError, match="unknown metric 'nosuch'") as err:
        scores.get("nosuch")
    assert "lbpe" in err.value.hint


def test_pipeline_prunes_every_metric_it_accepts():
    # loss has no row in the paper's table; it used to be accepted and never pruned
    req = PipelineRequest(metrics=["loss", "yoco"])
    req.check()
    assert req.metrics == ["loss", "lbpe"]
    assert [r.label for r in rules(req)] == ["lbpe-easy-balanced", "loss-hard-imbalanced"]
    with pytest.raises(UsageError, match="--metric loss has no row in the table.s. rules") as err:
        PipelineRequest(metrics=["loss"], tables=["rules"]).check()
    assert "--tables main" in err.value.hint
    with pytest.raises(UsageError, match="unknown metric 'nosuch'"):
        PipelineRequest(metrics=["nosuch"]).check()


def test_pipeline_cli_refuses_an_unknown_or_unshown_metric_in_one_line(cli):
    r = cli("pipeline", "digits", "--metric", "nosuch")
    assert r.exit_code == 2 and "unknown metric 'nosuch'" in r.stderr and "Traceback" not in r.stderr
    r = cli("pipeline", "digits", "--metric", "loss", "--tables", "rules")
    assert r.exit_code == 2 and "--metric loss has no row in the table(s) rules" in r.stderr


def test_a_registered_metric_reaches_score_prune_report_and_pipeline(cli, store, toy):
    from yoco_cli.stages.score import load_scores

    make_set(store)
    # scores stored before `toy` existed: their key differs, so prune scores afresh instead of failing
    del scores.REGISTRY["toy"]
    before = cli("score", "digits/test/ipc10", *TINY, "--json")
    assert before.exit_code == 0, before.stderr
    assert "toy" not in before.json()["metrics"]
    scores.declare(toy)
    assert scores.key_params()["metrics"]["toy"] == 1

    r = cli("prune", "digits/test/ipc10", "--to", "1", "--metric", "toy", *TINY, "--json")
    assert r.exit_code == 0, r.stderr
    res = r.json()["results"][0]
    assert res["ref"] == "digits/test/ipc10@toy-hard-imbalanced-ipc1" and res["kept"] == 40

    tables = sorted(store.all_runs("score"), key=lambda m: "toy" in m.meta["metrics"])
    assert len(tables) == 2 and "toy" not in tables[0].meta["metrics"]
    table = load_scores(store, tables[1])
    np.testing.assert_allclose(table.values("toy"), 2 * table.values("el2n"))
    # hard, imbalanced: the 40 highest toy scores over the whole set
    from yoco_cli.stages.sets import load_set

    kept = np.sort(load_set(store, store.resolve(res["ref"])).origin.numpy())
    order = np.lexsort((np.arange(400), -table.values("toy")))
    assert kept.tolist() == np.sort(order[:40]).tolist()

    s = cli("score", "digits/test/ipc10", *TINY, "--json")
    assert s.exit_code == 0, s.stderr
    assert s.json()["cached"] is True and s.json()["metrics"]["toy"]["max"] == pytest.approx(
        2 * s.json()["metrics"]["el2n"]["max"], rel=1e-6)

    e = cli("eval", res["ref"], *FAST_EVAL, "--json")
    assert e.exit_code == 0, e.stderr
    rows = cli("report", "--table", "main", "--metric", "toy", "--json")
    assert rows.exit_code == 0, rows.stderr
    assert [row[0] for row in rows.json()[0]["rows"]] == ["Toy"]
    full = cli("report", "--table", "main", "--json")
    assert [row[0] for row in full.json()[0]["rows"]][-2:] == ["YOCO", "Toy"]  # after the paper's rows

    req = PipelineRequest(metrics=["toy"])
    req.check()
    assert [r.label for r in rules(req)] == ["toy-hard-imbalanced"]
    # through the CLI: toy passes the metric check and the request fails later, on its --to
    late = cli("pipeline", "digits", "--metric", "toy", "--to", "10")
    assert late.exit_code == 2 and "--to must be between 1 and 9" in late.stderr
    from yoco_cli.cli.common import complete_metrics

    assert complete_metrics("to") == ["toy"] and "toy." in scores.choices_text(None)


def test_methods_and_layouts_give_the_cli_its_choices(cli, monkeypatch):
    from yoco_cli import condensation
    from yoco_cli.cli.common import complete_methods
    from yoco_cli.data import formats

    assert condensation.help_text() == ("idc (gradient matching) | dm (distribution matching) | random (a seeded "
                                        "real subset) | herding (a herded real subset)")
    monkeypatch.setitem(condensation.METHODS, "toycm", condensation.Method("random_subset", "a test's method"))
    assert complete_methods("toy") == ["toycm"] and condensation.get("toycm").NAME == "random"
    help_text = " ".join(cli("pipeline", "--help").stdout.split())
    assert "dm (distribution matching)" in help_text and "herding (a herded real subset)" in help_text

    assert formats.EXPORT_SPACES["mtt"] == ("normalized", "zca") and formats.DEFAULT_SPACE["kip"] == "zca"
    assert formats.default_factor("dream", 224) == 3 and formats.default_factor("mtt", 224) == 1
    assert "mtt: normalized or zca" in formats.export_help() and formats.import_help().startswith("idc | dream")
    with pytest.raises(UsageError) as err:
        formats.check_export("idc", "normalized")
    assert err.value.hint == "export it as dsa or mtt"
