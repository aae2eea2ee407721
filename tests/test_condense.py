"""`yoco condense`: mix layout, baselines, IDC/DM steps, checkpoint/resume, CLI errors."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from yoco_cli.condensation import common, dm, idc
from yoco_cli.data.decode import decode_zoom
from yoco_cli.data.real import RealDataset
from yoco_cli.errors import UsageError
from yoco_cli.stages import condense as stage

TINY_IDC = {"iterations": 3, "inner_loop": 2, "n_data": 32, "net_batch": 16, "batch_real": 16,
            "model": "convnet:width=8"}
TINY_DM = {"iterations": 4, "batch_real": 16, "model": "convnet:width=8"}


def fake_real(classes=3, per_class=9, side=32, channels=3, seed=0) -> RealDataset:
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(classes).repeat(per_class)  # interleaved: class order != dataset order
    x = torch.rand(len(y), channels, side, side, generator=g)
    return RealDataset("fake", x, y, x[:classes], y[:classes], [str(c) for c in range(classes)],
                       (0.5,) * channels, (0.25,) * channels)


def expected_decoded(real, idx, factor):
    """What decoding a tile of image i gives back: nearest-down to the tile, bilinear up to H."""
    h = real.image_size
    side = -(-h // factor)
    small = F.interpolate(real.train_x[idx], size=(side, side), mode="nearest")
    return F.interpolate(small, size=(h, h), mode="bilinear", align_corners=False)


# -- mix initialisation ------------------------------------------------------------------------

def test_mix_init_tiles_decode_to_the_first_images_in_order():
    real = fake_real()
    ipc, f = 2, 2
    images, labels = common.mix_init(real, ipc, f)
    assert images.shape == (3 * ipc, 3, 32, 32) and labels.tolist() == [0, 0, 1, 1, 2, 2]
    for c in range(3):
        first = torch.nonzero(real.train_y == c).flatten()[: ipc * f * f]  # dataset order
        decoded = decode_zoom(images[c * ipc:(c + 1) * ipc], f)
        # decoded position k*IPC+m is tile k of stored image m = real image k*IPC+m
        assert torch.allclose(decoded, expected_decoded(real, first, f), atol=1e-6)


def test_mix_tiles_follow_decoding_when_size_is_not_divisible():
    assert common.tile_boxes(224, 224, 3)[:3] == [(0, 0, 75, 75), (0, 75, 75, 75), (0, 150, 75, 74)]
    real = fake_real(side=10)
    images, _ = common.mix_init(real, 1, 3)
    first = torch.nonzero(real.train_y == 0).flatten()[:9]
    # tile 4 (centre) is a full 4x4 crop both ways: decoding returns its nearest-downsampled image
    small = F.interpolate(real.train_x[first[4:5]], size=(4, 4), mode="nearest")
    assert torch.equal(images[0, :, 4:8, 4:8], small[0])


def test_ipc_beyond_the_data_is_a_usage_error():
    with pytest.raises(UsageError, match="needs 40 training images per class"):
        common.check_ipc(fake_real(per_class=9), 10, 2)


# -- baselines ---------------------------------------------------------------------------------

def test_random_subset_counts_labels_content_and_determinism(store):
    req = stage.Request("digits", method="random", ipc=3, factor=2, seed=1)
    res = stage.run(store, req)
    from yoco_cli.stages.sets import load_set

    cset = load_set(store, res.manifest)
    assert res.ref == "digits/random/ipc3" and cset.images.shape == (30, 1, 8, 8)
    assert cset.class_counts() == [3] * 10 and cset.factor == 2 and cset.value_space == "raw01"
    assert cset.labels.tolist() == sorted(cset.labels.tolist())
    meta = cset.meta
    assert meta["method"] == "random" and len(meta["source"]["digest"]) == 64
    from yoco_cli.stages.datasets import load_real as load

    real = load("digits")
    chosen = res.manifest.meta["indices"]
    x, y, _ = cset.decoded()
    for c in range(10):
        idx = torch.tensor(chosen[c])
        assert (real.train_y[idx] == c).all() and len(set(chosen[c])) == 12
        assert torch.allclose(x[y == c], expected_decoded(real, idx, 2), atol=1e-6)
    again = stage.run(store, req)
    assert again.cached and again.manifest.digest("set") == res.manifest.digest("set")
    other = stage.run(store, stage.Request("digits", method="random", ipc=3, seed=2, name="r2"))
    assert other.manifest.digest("set") != res.manifest.digest("set")
    # recomputed from scratch (not the cache): same bytes
    store.rm([res.manifest])
    assert stage.run(store, req).manifest.digest("set") == res.manifest.digest("set")


def test_herding_ignores_the_seed(store):
    a = stage.run(store, stage.Request("digits", method="herding", ipc=1, seed=0))
    b = stage.run(store, stage.Request("digits", method="herding", ipc=1, seed=5))
    assert b.cached and a.manifest.key == b.manifest.key


def test_herding_picks_the_mean_first():
    from yoco_cli.condensation.herding import herd

    feats = torch.tensor([[0.0], [10.0], [4.0], [6.0], [5.2]], dtype=torch.float64)
    assert herd(feats, 3).tolist()[0] == 4  # closest to the mean 5.04
    assert sorted(herd(feats, 5).tolist()) == [0, 1, 2, 3, 4]


# -- IDC and DM pieces ---------------------------------------------------------------------------

def test_grad_matching_uses_conv_kernels_only():
    from yoco_cli.nn.models import build_model

    torch.manual_seed(0)
    model = build_model("convnet", 4, 3, 16, width=8)
    params = idc.matched_params(model)
    convs = [m.weight for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(params) == 3 and all(p is q for p, q in zip(params, convs))
    x, y = torch.randn(6, 3, 16, 16), torch.tensor([0, 1, 2, 3, 0, 1])
    xs = torch.randn(4, 3, 16, 16)
    loss = idc.grad_match_loss(model, x, y, xs, y[:4], "mse")
    gr = torch.autograd.grad(F.cross_entropy(model(x), y), convs)
    gs = torch.autograd.grad(F.cross_entropy(model(xs), y[:4]), convs)
    assert torch.isclose(loss, sum(((a - b) ** 2).sum() for a, b in zip(gr, gs)), rtol=1e-5)
    l1 = idc.grad_match_loss(model, x, y, xs, y[:4], "l1")
    assert torch.isclose(l1, sum((a - b).abs().sum() for a, b in zip(gr, gs)), rtol=1e-5)


@pytest.mark.parametrize("kind", ["grad", "feat"])
def test_matching_steps_reduce_the_loss_for_a_fixed_network(kind):
    from yoco_cli.nn.models import build_model

    torch.manual_seed(0)
    model = build_model("convnet", 2, 1, 8, width=16)
    x_real, y = torch.randn(32, 1, 8, 8), torch.zeros(32, dtype=torch.int64)
    syn = torch.rand(2, 1, 8, 8)
    buf = torch.zeros_like(syn)

    def loss_of(p):
        xs = decode_zoom(p, 2)
        if kind == "grad":
            return idc.grad_match_loss(model, x_real, y, xs, y[: len(xs)], "mse")
        return dm.embedding_loss(model, x_real, xs)

    first = float(loss_of(syn).detach())
    for _ in range(15):
        leaf = syn.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(loss_of(leaf), leaf)
        common.sgd_momentum_step(syn, g, buf, 0.01 if kind == "grad" else 2.0, 0.5)
    assert float(loss_of(syn).detach()) < 0.7 * first


def test_momentum_step_on_some_rows_moves_the_rest_by_momentum():
    p, buf = torch.zeros(4), torch.tensor([1.0, 1.0, 0.0, 0.0])
    common.sgd_momentum_step(p, torch.tensor([2.0, 2.0]), buf, 0.1, 0.5, rows=slice(2, 4))
    assert torch.allclose(buf, torch.tensor([0.5, 0.5, 2.0, 2.0]))
    assert torch.allclose(p, torch.tensor([-0.05, -0.05, -0.2, -0.2]))


@pytest.mark.parametrize("method,settings", [("idc", TINY_IDC), ("dm", TINY_DM)])
def test_a_few_iterations_on_digits_stay_finite_and_in_range(store, method, settings):
    seen = []
    res = stage.run(store, stage.Request("digits", method=method, ipc=2, device="cpu", overrides=settings),
                    on_iteration=lambda done, total, loss: seen.append((done, total, loss)))
    from yoco_cli.stages.sets import load_set

    cset = load_set(store, res.manifest)
    init, _ = common.mix_init(cset_real(), 2, 2)
    assert [d for d, _, _ in seen] == list(range(1, settings["iterations"] + 1))
    assert all(torch.isfinite(torch.tensor(loss)) for _, _, loss in seen)
    assert cset.images.min() >= 0 and cset.images.max() <= 1 and torch.isfinite(cset.images).all()
    assert not torch.equal(cset.images, init)  # the images did move
    assert res.manifest.meta["iterations"] == settings["iterations"]
    assert cset.meta["params"]["settings"]["model"] == "convnet:width=8"


def test_idc_early_pretraining_changes_the_network(store):
    base = {**TINY_IDC, "iterations": 1, "inner_loop": 1}
    plain = stage.run(store, stage.Request("digits", method="idc", ipc=1, device="cpu", overrides=base))
    early = stage.run(store, stage.Request("digits", method="idc", ipc=1, device="cpu", name="e",
                                           overrides={**base, "early": 1}))
    assert plain.manifest.digest("set") != early.manifest.digest("set")


def cset_real():
    from yoco_cli.stages.datasets import load_real as load

    return load("digits")


# -- checkpoint and resume -----------------------------------------------------------------------

class Stop(Exception):
    pass


@pytest.mark.parametrize("method,settings,every,stop_at", [
    ("dm", TINY_DM, 2, 3),    # interrupted between checkpoints: redoes iteration 3
    ("idc", TINY_IDC, 1, 2),
])
def test_interrupt_then_rerun_ends_byte_identical(tmp_path, method, settings, every, stop_at):
    from yoco_cli.store import Store

    req = stage.Request("digits", method=method, ipc=2, device="cpu", overrides=settings, checkpoint_every=every)
    plain = stage.run(Store(tmp_path / "a"), req)

    store = Store(tmp_path / "b")

    def interrupt(done, total, loss):
        if done == stop_at:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt, match=f"checkpointed after iteration {stop_at}: a rerun resumes"):
        stage.run(store, req, on_iteration=interrupt)
    assert store.load_run("condense", plain.manifest.key) is None  # nothing committed
    ckpt = store.partial_dir("condense", plain.manifest.key) / common.CKPT_NAME
    assert ckpt.is_file()
    resumed_from = []
    res = stage.run(store, req, on_iteration=lambda d, t, l: resumed_from.append(d))
    assert resumed_from[0] == stop_at  # Ctrl-C checkpointed the last finished iteration, between checkpoints too
    assert res.manifest.digest("set") == plain.manifest.digest("set")
    assert res.manifest.meta["loss_curve"] == plain.manifest.meta["loss_curve"]
    assert not ckpt.exists()  # the partial folder goes on commit


def _loop(tmp_path, stop_in: int, every: int = 10):
    """run_loop on a counter that Ctrl-C interrupts halfway through iteration `stop_in`."""
    from yoco_cli.errors import Interrupted

    state = {"x": torch.zeros(3)}

    def step(it):
        state["x"] += 1
        if it == stop_in:
            state["x"] += 100  # half an update: must never reach a checkpoint
            raise KeyboardInterrupt
        return float(it)

    job = common.Job(None, 1, 1, 0, {}, ckpt=common.Checkpointer(tmp_path, "k", every))
    with pytest.raises(Interrupted) as err:
        common.run_loop(job, state, 20, step)
    return err.value.hint, job


def test_ctrl_c_mid_iteration_checkpoints_the_last_finished_one(tmp_path):
    hint, job = _loop(tmp_path, stop_in=3)
    assert hint == "checkpointed after iteration 3: a rerun resumes at iteration 4"
    ts, meta = job.ckpt.load()
    assert meta["iteration"] == 3 and ts["x"].tolist() == [3.0, 3.0, 3.0] and ts["_losses"].tolist() == [0, 1, 2]
    state = {"x": torch.zeros(3)}  # the rerun resumes there and ends as an uninterrupted run would
    losses = common.run_loop(job, state, 20, lambda it: (state["x"].add_(1), float(it))[1])
    assert state["x"].tolist() == [20.0] * 3 and losses == [float(i) for i in range(20)]


def test_ctrl_c_in_the_first_iteration_says_a_rerun_starts_at_1(tmp_path):
    hint, job = _loop(tmp_path, stop_in=0)
    assert hint == "no checkpoint yet: a rerun starts at iteration 1" and job.ckpt.load() is None
    off, _ = _loop(None, stop_in=5)  # checkpoints off (--checkpoint-every 0): nothing to resume from
    assert off == "no checkpoint yet: a rerun starts at iteration 1"


def test_cli_says_what_ctrl_c_kept(cli, monkeypatch):
    from yoco_cli.errors import Interrupted

    def interrupted(*args, **kwargs):
        raise Interrupted("checkpointed after iteration 21: a rerun resumes at iteration 22")

    monkeypatch.setattr(stage, "run", interrupted)
    r = cli("condense", "digits", "--ipc", "2", "--method", "dm")
    assert r.exit_code == 130
    assert "interrupted" in r.stderr and "a rerun resumes at iteration 22" in r.stderr


# -- CLI -----------------------------------------------------------------------------------------

def test_cli_random_then_cached(cli):
    r = cli("condense", "digits", "--ipc", "2", "--method", "random", "--json")
    assert r.exit_code == 0, r.stderr
    doc = r.json()
    assert doc["name"] == "digits/random/ipc2" and doc["set"]["stored_shape"] == [20, 1, 8, 8]
    assert doc["cached"] is False
    again = cli("condense", "digits", "--ipc", "2", "--method", "random", "--json")
    assert again.json()["cached"] is True and again.json()["digest"] == doc["digest"]
    human = cli("condense", "digits", "--ipc", "2", "--method", "random")
    assert "digits/random/ipc2" in human.stdout and "cached" in human.stdout


def test_cli_show_settings_and_overrides(cli):
    r = cli("condense", "digits", "--method", "idc", "--iterations", "7", "--set", "metric=l1", "--show-settings",
            "--json")
    assert r.exit_code == 0, r.stderr
    s = r.json()["settings"]
    assert s["iterations"] == 7 and s["metric"] == "l1" and s["inner_loop"] == idc.PRESETS["digits"]["inner_loop"]


@pytest.mark.parametrize("args,needle", [
    (["--ipc", "40"], "training images per class"),
    (["--method", "bogus"], "unknown condensation method"),
    (["--method", "random", "--iterations", "5"], "no setting 'iterations'"),
    (["--set", "nonsense"], "KEY=VALUE"),
    (["--set", "inner_loop=abc"], "needs an integer"),
    (["--set", "metric=cosine", "--iterations", "1"], "unknown metric"),
    (["--factor", "5"], "factor"),
    (["--name", "bad name!"], "invalid name"),
])
def test_cli_bad_input_is_one_line_exit_2(cli, args, needle):
    r = cli("condense", "digits", *args)
    assert r.exit_code == 2, (r.stdout, r.stderr)
    assert needle in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_unknown_dataset_exit_2(cli):
    r = cli("condense", "no-such-data", "--method", "random")
    assert r.exit_code == 2 and "unknown dataset" in r.stderr


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_idc_and_dm_run_on_cuda(store):
    for method, settings in (("idc", TINY_IDC), ("dm", TINY_DM)):
        res = stage.run(store, stage.Request("digits", method=method, ipc=2, device="cuda", overrides=settings))
        assert res.manifest.meta["device"].startswith("cuda")
