"""The training engine: schedules, epochs as permutations, the hook's contract, determinism,
batched (vmap) training against sequential, and resuming from a checkpoint."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from yoco_cli.errors import UsageError
from yoco_cli.nn import engine as E
from yoco_cli.nn.models import model_spec

SPEC = model_spec("convnet", 4, 1, 8, width=8, depth=2)


def data(n=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 8, 8, generator=g), torch.arange(4).repeat(n // 4)


def same_state(a, b):
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_milestones_and_lr():
    dyn = E.TrainConfig(epochs=1000)  # CIFAR-10 IPC10: 400 decoded images, 7 batches of 64
    assert E.iterations_per_epoch(400, 64) == 7
    assert E.milestones(dyn, 400) == [4666, 5833]
    ev = E.TrainConfig(epochs=1000, schedule="epoch")
    assert E.milestones(ev, 40) == [666, 833]
    marks = E.milestones(ev, 40)
    assert E.lr_at(ev, marks, 665) == pytest.approx(0.01)
    assert E.lr_at(ev, marks, 666) == pytest.approx(0.002)
    assert E.lr_at(ev, marks, 833) == pytest.approx(0.0004)
    assert E.eval_epochs(1000) == (250, 500, 750, 1000)
    assert E.eval_epochs(3) == (1, 2, 3)


def test_lr_schedule_is_applied_per_iteration():
    x, y = data()
    lrs = []
    cfg = E.TrainConfig(epochs=3, batch_size=16, dsa="", cutmix_p=0)  # 3 iterations/epoch, T=9 -> 6, 7
    E.train(SPEC, x, y, cfg, on_epoch=lambda ev: lrs.append(ev.lr))
    assert lrs == pytest.approx([0.01, 0.01, 0.0004])  # last iteration of each epoch: 2, 5, 8 (8 >= 6, 7)


def test_config_validation():
    for bad in ({"epochs": 0}, {"epochs": 1, "lr": -1.0}, {"epochs": 1, "schedule": "cosine"},
                {"epochs": 1, "dsa": "color_warp"}, {"epochs": 1, "cutmix_p": 2.0}):
        with pytest.raises(UsageError):
            E.TrainConfig(**bad)


def test_every_sample_once_per_epoch_and_hook_sees_pre_step_outputs():
    x, y = data(n=36)
    seen: dict[int, list] = {}
    first = {}

    def hook(epoch, idx, lp):
        seen.setdefault(epoch, []).append(idx.clone())
        if not first:
            first.update(idx=idx.clone(), lp=lp.clone())

    cfg = E.TrainConfig(epochs=3, batch_size=16, dsa="", cutmix_p=0)
    norm = ((0.5,), (0.25,))
    E.train(SPEC, x, y, cfg, seeds=[3], normalize=norm, hooks=[hook])
    for epoch in range(3):
        batches = seen[epoch]
        assert [len(b) for b in batches] == [16, 16, 4]  # last batch smaller, no drop
        assert torch.equal(torch.cat(batches).sort().values, torch.arange(36))
    # log-softmax of the initial weights, train mode, on the normalized input: before the first step
    net = E._init_model(SPEC, 3).train()
    with torch.no_grad():
        expect = F.log_softmax(net((x[first["idx"]] - 0.5) / 0.25), 1)
    assert torch.allclose(first["lp"], expect, atol=1e-5)


def test_same_seed_same_weights_other_seed_differs():
    x, y = data()
    cfg = E.TrainConfig(epochs=2, batch_size=16)
    a, b = E.train(SPEC, x, y, cfg, seeds=[0, 1])
    [a2] = E.train(SPEC, x, y, cfg, seeds=[0])
    assert same_state(a.model, a2.model)
    assert not same_state(a.model, b.model)
    assert a.history == a2.history


def test_normalize_up_front_equals_prenormalized_input():
    x, y = data()
    cfg = E.TrainConfig(epochs=2, batch_size=16)
    [a] = E.train(SPEC, x, y, cfg, normalize=((0.4,), (0.3,)))
    [b] = E.train(SPEC, (x - 0.4) / 0.3, y, cfg)
    assert same_state(a.model, b.model)


def test_batched_vmap_matches_sequential():
    x, y = data()
    cfg = E.TrainConfig(epochs=2, batch_size=16)
    idx_seq, idx_bat = [[], []], [[], []]
    hooks = lambda store: [lambda e, i, lp, k=k: store[k].append(i.clone()) for k in range(2)]
    seq = E.train(SPEC, x, y, cfg, seeds=[0, 1], hooks=hooks(idx_seq), batched="off")
    bat = E.train(SPEC, x, y, cfg, seeds=[0, 1], hooks=hooks(idx_bat), batched="on")
    assert bat[0].batched and not seq[0].batched
    for s, b, i_s, i_b in zip(seq, bat, idx_seq, idx_bat):
        assert all(torch.equal(p, q) for p, q in zip(i_s, i_b))  # same permutations per seed
        for p, q in zip(s.model.state_dict().values(), b.model.state_dict().values()):
            assert torch.allclose(p, q, atol=1e-4)
    with pytest.raises(UsageError):
        E.train(model_spec("convnet", 4, 1, 8, width=8, norm="batch"), x, y, cfg, seeds=[0, 1], batched="on")


def test_test_points_and_accuracy():
    x, y = data()
    cfg = E.TrainConfig(epochs=4, batch_size=16, schedule="epoch", eval_at=E.eval_epochs(4))
    [r] = E.train(SPEC, x, y, cfg, test=(x, y))
    assert sorted(r.evals) == [1, 2, 3, 4]
    assert r.last == r.evals[4] and r.best == max(r.evals.values())
    logits, _ = E.eval_pass(r.model, x, batch_size=7)  # the test pass in batches of another size: same accuracy
    assert r.last == pytest.approx(float((logits.argmax(1) == y).double().mean()))
    assert E.eval_pass(r.model, x, features=True)[1].shape == (40, 32)


def test_checkpoint_resume_is_byte_identical(tmp_path):
    x, y = data()
    cfg = E.TrainConfig(epochs=4, batch_size=16)
    [ref] = E.train(SPEC, x, y, cfg, seeds=[5])

    def stop_at_2(ev):
        if ev.epoch == 1:
            raise KeyboardInterrupt

    ck = E.Checkpoint(tmp_path, every_s=0.0)
    with pytest.raises(KeyboardInterrupt):
        E.train(SPEC, x, y, cfg, seeds=[5], on_epoch=stop_at_2, checkpoint=ck)
    assert ck.load()[1]["epoch_done"] == 2
    epochs = []
    [res] = E.train(SPEC, x, y, cfg, seeds=[5], checkpoint=E.Checkpoint(tmp_path, every_s=0.0),
                    on_epoch=lambda ev: epochs.append(ev.epoch))
    assert epochs == [2, 3]  # resumed, not restarted
    assert same_state(res.model, ref.model) and res.history == ref.history


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_batched_and_deterministic():
    x, y = data()
    cfg = E.TrainConfig(epochs=2, batch_size=16)
    a = E.train(SPEC, x, y, cfg, seeds=[0, 1], device="cuda")
    b = E.train(SPEC, x, y, cfg, seeds=[0, 1], device="cuda")
    assert a[0].batched
    assert same_state(a[0].model, b[0].model)
    seq = E.train(SPEC, x, y, cfg, seeds=[0, 1], device="cuda", batched="off")
    for p, q in zip(seq[1].model.state_dict().values(), a[1].model.state_dict().values()):
        assert torch.allclose(p, q, atol=1e-3)


def test_compile_failure_falls_back_to_eager(monkeypatch):
    x, y = data()

    def broken_compile(model, **kw):
        def fn(inp):
            raise RuntimeError("no C++ compiler")
        return fn

    monkeypatch.setattr(torch, "compile", broken_compile)
    cfg = E.TrainConfig(epochs=2, batch_size=16, compile="on")
    with pytest.warns(UserWarning, match="eager"):
        [r] = E.train(SPEC, x, y, cfg, seeds=[0])
    [ref] = E.train(SPEC, x, y, E.TrainConfig(epochs=2, batch_size=16, compile="off"), seeds=[0])
    assert not r.compiled and same_state(r.model, ref.model)


def test_engine_sgd_foreach_gives_the_per_parameter_loops_bits():
    """The engine steps SGD with foreach=True for speed; that must be torch's own per-parameter
    update bit for bit (momentum, weight decay, a learning-rate drop), or results would change."""
    from yoco_cli.nn.models import build_model

    finals = []
    for foreach in (False, True):
        torch.manual_seed(0)
        model = build_model("convnet", 10, 1, 8, width=16, depth=2)
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4, foreach=foreach)
        gen = torch.Generator().manual_seed(1)
        for step in range(40):
            for p in model.parameters():
                p.grad = torch.randn(p.shape, generator=gen)
            for g in opt.param_groups:
                g["lr"] = 0.01 * (0.2 if step >= 25 else 1.0)
            opt.step()
        finals.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert torch.equal(finals[0], finals[1])
