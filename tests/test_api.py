"""yoco_cli's public functions: the CLI's workflow from a script, the same artifacts as the CLI."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
EPOCHS = "12"


def _digests(home: Path) -> dict[str, str]:
    """ref name -> the digest of the artifact it names (the cache's own record)."""
    from yoco_cli.store import Store

    store = Store(home)
    out = {}
    for name, (stage, key) in store.refs().items():
        m = store.load_run(stage, key)
        out[name] = {k: o["digest"] for k, o in m.outputs.items()}
    return out


def test_script_gives_the_same_artifacts_as_the_cli(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    import yoco_cli as yoco
    from yoco_cli.cli.app import app

    api_home, cli_home = tmp_path / "api", tmp_path / "cli"
    src = yoco.condense("digits", ipc=10, method="random", home=api_home)
    dyn = yoco.dynamics(src, seeds=1, epochs=int(EPOCHS), home=api_home)
    [small] = yoco.prune(src, to=1, metric="lbpe", balanced=True, dynamics=dyn.ref, home=api_home)
    ev = yoco.evaluate(small, repeats=1, epochs=int(EPOCHS), home=api_home)

    assert src.ref == "digits/random/ipc10" and src.set.ipc == 10
    assert dyn.seeds == [0] and dyn.runs[0].epochs == int(EPOCHS)
    per_class = src.set.factor ** 2  # IPC 1 of a factor-f set keeps f*f decoded images per class
    assert small.set.ipc == 1 and small.set.class_counts() == [per_class] * 10 and len(small.indices) == 10 * per_class
    assert 0.0 <= ev.last_mean <= 1.0 and len(ev.per_repeat) == 1

    import torch

    run = CliRunner()
    threads = ["--threads", str(torch.get_num_threads())]  # same bytes need the same thread count
    for args in (["condense", "digits", "--ipc", "10", "--method", "random"],
                 ["dynamics", "digits/random/ipc10", "--seeds", "1", "--epochs", EPOCHS],
                 ["prune", "digits/random/ipc10", "--to", "1", "--metric", "lbpe", "--balanced",
                  "--dynamics", "digits/random/ipc10@dynamics"],
                 ["eval", small.ref, "--repeats", "1", "--epochs", EPOCHS]):
        r = run.invoke(app, ["--home", str(cli_home), *threads, *args])
        assert r.exit_code == 0, (args, r.output)
    assert _digests(api_home) == _digests(cli_home)


def test_results_carry_the_data_a_script_needs(tmp_path):
    import torch

    import yoco_cli as yoco

    src = yoco.condense("digits", ipc=2, method="random", seed=1, home=tmp_path)
    scores = yoco.score(src, dynamics_epochs=4, dynamics_seeds=2, home=tmp_path)
    assert set(scores.scores) >= {"lbpe", "el2n", "forgetting", "aum", "entropy", "loss", "random"}
    assert scores.scores["el2n"].shape == (src.set.decoded_count,) and len(scores.per_run["el2n"]) == 2
    assert torch.allclose(scores.scores["el2n"].double(), torch.stack(scores.per_run["el2n"]).double().mean(0),
                          atol=1e-6)
    again = yoco.load_set(src.ref, home=tmp_path)
    assert again.key == src.key and torch.equal(again.set.images, src.set.images)


def test_bad_input_raises_the_cli_errors(tmp_path):
    import yoco_cli as yoco
    from yoco_cli.errors import UsageError

    with pytest.raises(UsageError, match="unknown condensation method"):
        yoco.condense("digits", ipc=2, method="nope", home=tmp_path)
    with pytest.raises(UsageError):
        yoco.load_set("no/such/set", home=tmp_path)
    with pytest.raises(UsageError) as err:  # before the set is looked up
        yoco.score("no/such/set", el2n_window=(0, 5, 10), home=tmp_path)
    assert (err.value.message, err.value.hint) == ("el2n_window takes two epochs, got 3", "e.g. el2n_window=(0, 10)")


def test_the_library_leaves_the_process_alone(tmp_path):
    """Importing and running yoco_cli applies no malloc tuning; tune_process() does."""
    code = ("import yoco_cli as yoco, sys; from yoco_cli.nn import device; "
            "assert 'torch' not in sys.modules; "
            f"yoco.condense('digits', ipc=2, method='random', home={str(tmp_path)!r}); "
            "assert device._malloc_tuned is None, 'tuned by the library'; "
            "yoco.tune_process(); assert device._malloc_tuned is not None")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_readme_python_example_runs(tmp_path, monkeypatch):
    section = README.split("## Using yoco from Python", 1)
    assert len(section) == 2, "README.md needs a 'Using yoco from Python' section"
    code = re.search(r"```python\n(.*?)```", section[1], re.DOTALL)
    assert code, "that section needs a ```python example"
    monkeypatch.setenv("YOCO_HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    exec(compile(code.group(1), "README.md", "exec"), {})  # noqa: S102  runs the README's own example, as a user would


def test_no_subpackage_shadows_a_public_function():
    """`import yoco_cli.X` sets the attribute X on the package: a subpackage named like a public
    function would replace the function once anything imported it."""
    import pkgutil

    import yoco_cli

    subs = {m.name for m in pkgutil.iter_modules(yoco_cli.__path__)}
    assert not subs & set(yoco_cli.__all__)


def test_api_prune_and_cli_prune_run_one_entry_point_and_give_the_same_digests(tmp_path):
    """YOCO, CCS and SSP (which the API could not run before it had their options), per-seed protocol."""
    from typer.testing import CliRunner

    import yoco_cli as yoco
    from yoco_cli.cli.app import app

    api_home, cli_home = tmp_path / "api", tmp_path / "cli"
    src = yoco.condense("digits", ipc=10, method="random", home=api_home)
    dyn = yoco.dynamics(src, seeds=2, epochs=4, home=api_home)
    yoco.prune(src, to=[1, 2], metric="lbpe", balanced=True, dynamics=dyn.ref, home=api_home)
    ccs = yoco.prune(src, to=2, key="ccs", ccs_beta=0.2, ccs_strata=5, dynamics=dyn.ref, home=api_home)
    ssp = yoco.prune(src, to=1, metric="ssp", ssp_duplicates="keep", dynamics=dyn.ref, home=api_home)
    assert len(ccs) == 2 and len(ssp) == 2  # one set per dynamics run (the paper's protocol)
    from yoco_cli.store import Store

    params = Store(api_home).load_run("prune", ccs[0].key).params
    assert (params["ccs_beta"], params["ccs_strata"]) == (0.2, 5)

    import torch

    run = CliRunner()
    threads = ["--threads", str(torch.get_num_threads())]
    for args in (["condense", "digits", "--ipc", "10", "--method", "random"],
                 ["dynamics", "digits/random/ipc10", "--seeds", "2", "--epochs", "4"],
                 ["prune", "digits/random/ipc10", "--to", "1", "2", "--metric", "lbpe", "--balanced",
                  "--dynamics", dyn.ref],
                 ["prune", "digits/random/ipc10", "--to", "2", "--key", "ccs", "--ccs-beta", "0.2",
                  "--ccs-strata", "5", "--dynamics", dyn.ref],
                 ["prune", "digits/random/ipc10", "--to", "1", "--metric", "ssp", "--ssp-duplicates", "keep",
                  "--dynamics", dyn.ref]):
        r = run.invoke(app, ["--home", str(cli_home), *threads, *args])
        assert r.exit_code == 0, (args, r.output)
    api, cli = _digests(api_home), _digests(cli_home)
    pruned = sorted(n for n in api if "@" in n and "dynamics" not in n and "scores" not in n)
    assert any("ccs" in n for n in pruned) and any("ssp" in n for n in pruned) and any("lbpe" in n for n in pruned)
    assert api == cli


def test_api_prune_checks_options_before_any_training(tmp_path):
    import yoco_cli as yoco
    from yoco_cli.errors import UsageError

    src = yoco.condense("digits", ipc=10, method="random", home=tmp_path)
    with pytest.raises(UsageError, match="ssp duplicates 'twice'") as err:
        yoco.prune(src, to=1, metric="ssp", ssp_duplicates="twice", home=tmp_path)
    assert err.value.hint == "use fill or keep"
    with pytest.raises(UsageError, match="choose different scores"):
        yoco.prune(src, to=1, score_run=0, mean_scores=True, home=tmp_path)
    from yoco_cli.store import Store

    assert not [n for n in Store(tmp_path).refs() if "dynamics" in n]  # nothing trained


def test_the_api_takes_its_own_results_and_names_a_wrong_type(tmp_path):
    import yoco_cli as yoco
    from yoco_cli.errors import UsageError

    src = yoco.condense("digits", ipc=10, method="random", home=tmp_path)
    dyn = yoco.dynamics(src, seeds=2, epochs=4, executor="serial", home=tmp_path)
    sc = yoco.score(dyn, home=tmp_path)
    by_result = yoco.prune(src, to=1, metric="lbpe", balanced=True, dynamics=dyn, home=tmp_path)
    by_scores = yoco.prune(src, to=1, metric="lbpe", balanced=True, scores=sc, home=tmp_path)
    by_name = yoco.prune(src.ref, to=1, metric="lbpe", balanced=True, dynamics=dyn.ref, home=tmp_path)
    assert [r.key for r in by_result] == [r.key for r in by_name] == [r.key for r in by_scores]
    assert len(by_result) == 2  # one pruned set per dynamics run

    evals = yoco.evaluate(by_result, repeats=1, epochs=2, executor="serial", home=tmp_path)
    assert isinstance(evals, list) and len(evals) == 2 and all(0.0 <= e.best_mean <= 1.0 for e in evals)
    assert yoco.evaluate(by_result[0], repeats=1, epochs=2, home=tmp_path).key == evals[0].key

    with pytest.raises(UsageError) as err:
        yoco.evaluate([by_result[0], src.set], repeats=1, epochs=2, home=tmp_path)
    assert str(err.value).startswith("target[1]: a CondensedSet is not something yoco can name")
    assert "tensor" not in str(err.value) and "SetResult" in err.value.hint
    with pytest.raises(UsageError, match="^dynamics: a ScoreResult"):
        yoco.prune(src, to=1, dynamics=sc, home=tmp_path)
    with pytest.raises(UsageError, match="batched"):
        yoco.dynamics(src, seeds=1, epochs=2, batched="yes", home=tmp_path)
    with pytest.raises(UsageError, match="not an executor"):
        yoco.evaluate(src, repeats=1, epochs=2, executor="gpu", home=tmp_path)
