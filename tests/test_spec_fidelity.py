"""Second reading against docs/method.md §1.3, §2.2, §3, §4, §5.4, §5.5.

Each test restates one rule of docs/method.md as a small, independent, deliberately naive
computation (per sample, per record, in plain Python) and checks the package against it,
so a change that drifts from the reference's semantics fails here even if the package's
own tests were changed along with it.
"""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from yoco_cli.data.decode import decode_set, decode_zoom
from yoco_cli.data.dynamics import Recorder
from yoco_cli.methods import presets, scores, select
from yoco_cli.nn import augment as A
from yoco_cli.nn import engine as E
from yoco_cli.nn.models import model_spec

# -- a record stream (docs/method.md §2.3) and its naive replay (docs/method.md §3) ----------------

def _stream(n=23, c=4, epochs=7, batch=5, seed=0):
    rng = np.random.default_rng(seed)
    y = torch.tensor(rng.integers(0, c, n))
    records = []
    for t in range(epochs):
        perm = torch.tensor(rng.permutation(n))
        for s in range(0, n, batch):
            idx = perm[s:s + batch]
            logits = torch.tensor(rng.normal(size=(len(idx), c)) * 2)
            records.append((t, idx, torch.log_softmax(logits, 1).half()))  # the reference stores fp16
    return y, records


def _naive(y, records, n, c, epochs):
    err = np.zeros((epochs, n))
    correct_num = np.zeros(epochs, dtype=np.int64)
    loss_epoch = np.zeros(epochs)
    margin = np.zeros(n)
    last = np.zeros(n, dtype=int)  # last_i initialised to 0 (docs/method.md §3.4)
    forgetting = np.zeros(n, dtype=int)
    for t, idx, out in records:
        p = out.float().exp().numpy()
        nll = []
        for r, i in enumerate(idx.tolist()):
            label = int(y[i])
            onehot = np.eye(c)[label]
            err[t, i] = np.linalg.norm(p[r] - onehot)
            a = int(p[r].argmax() == label)
            correct_num[t] += a
            margin[i] += p[r][label] - np.delete(p[r], label).max()
            nll.append(-math.log(p[r][label]))
            forgetting[i] += int(last[i] == 1 and a == 0)
            last[i] = a
        loss_epoch[t] += np.mean(nll)  # sum over batches of the batch-mean NLL (docs/method.md §3.1)
    return err, correct_num, loss_epoch, margin, forgetting


@pytest.fixture(scope="module")
def replay():
    n, c, epochs = 23, 4, 7
    y, records = _stream(n, c, epochs)
    rec = Recorder(y, epochs, c)
    for t, idx, out in records:
        rec.update(t, idx, out)
    return rec.result({}), _naive(y, records, n, c, epochs)


def test_recorder_statistics_equal_a_per_record_replay(replay):
    dyn, (err, correct_num, loss_epoch, margin, forgetting) = replay
    assert np.abs(dyn.err.float().numpy() - err).max() < 2e-3  # err is stored as float16
    assert dyn.correct_num.tolist() == correct_num.tolist()
    assert np.allclose(dyn.loss_epoch.numpy(), loss_epoch, atol=1e-4)
    assert np.allclose(dyn.margin_sum.numpy(), margin, atol=1e-5)
    f, _ = scores.forgetting(dyn)
    assert f.tolist() == forgetting.tolist()
    aum, _ = scores.aum(dyn)
    assert np.allclose(aum.numpy(), margin, atol=1e-5)


def test_recorder_scores_float16_log_probs_like_the_reference():
    # two logits 1e-5 apart are one float16 value apart from nothing: the reference's argmax
    # over exp(fp16 log-softmax) sees a tie and picks the first class, which is the label here
    lp = torch.log_softmax(torch.tensor([[0.0, 1e-5, -20.0]]), 1)
    assert lp.argmax(1).item() == 1 and lp.half().float().argmax(1).item() == 0
    rec = Recorder(torch.tensor([0]), 1, 3)
    rec.update(0, torch.tensor([0]), lp)
    ref = Recorder(torch.tensor([0]), 1, 3)
    ref.update(0, torch.tensor([0]), lp.half())
    a, b = rec.result({}), ref.result({})
    assert a.correct.tolist() == [[True]] and a.correct_num.tolist() == [1]
    for name in ("err", "correct", "margin_sum", "correct_num", "loss_epoch"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name


def test_lbpe_top_k_and_use_loss_equal_the_naive_epoch_choice(replay):
    dyn, (err, correct_num, loss_epoch, _, _) = replay
    stop, k = 5, 3
    # K largest correct_num in [0, stop), ties by ascending epoch; the score is a SUM over them
    best = sorted(range(stop), key=lambda t: (-correct_num[t], t))[:k]
    v, info = scores.lbpe(dyn, k, stop)
    assert info["epochs"] == sorted(best)
    assert np.allclose(v.numpy(), err[best].sum(0), atol=5e-3)
    low = sorted(range(stop), key=lambda t: (loss_epoch[t], t))[:k]
    v, info = scores.lbpe(dyn, k, stop, use_loss=True)
    assert info["epochs"] == sorted(low)
    assert np.allclose(v.numpy(), err[low].sum(0), atol=5e-3)


def test_top_k_epoch_ties_go_to_the_earliest_epochs():
    assert scores.top_k_epochs(torch.tensor([3, 5, 5, 5, 1, 5]), 2, 6) == [1, 2]
    assert scores.top_k_epochs(torch.tensor([3, 5, 5, 5, 1, 5]), 2, 3) == [1, 2]
    assert scores.top_k_epochs([2.0, 1.0, 1.0, 0.5], 2, 4, largest=False) == [1, 3]


def test_forgetting_sequences_by_hand():
    from yoco_cli.data.dynamics import Dynamics

    seqs = [[0, 1, 0, 1, 0], [0, 0, 0, 0, 0], [1, 0, 0, 0, 0], [1, 1, 1, 1, 1], [1, 0, 1, 0, 1]]
    correct = torch.tensor(seqs, dtype=torch.bool).T  # [E, N]
    e, n = correct.shape
    dyn = Dynamics(torch.zeros(n, dtype=torch.long), torch.zeros(e, n, dtype=torch.float16), correct,
                   torch.zeros(n), correct.sum(1), torch.zeros(e), {})
    f, _ = scores.forgetting(dyn)
    assert f.tolist() == [2, 0, 1, 0, 2]


# -- selection (docs/method.md §4) -----------------------------------------------------------------

def _naive_select(sc, labels, per_class, total, use_hard, balanced):
    """The reference's rule: one descending order, ties by ascending index; hard = head, easy = tail."""
    order = sorted(range(len(sc)), key=lambda i: (-sc[i], i))
    if not balanced:
        return sorted(order[:total] if use_hard else order[len(order) - total:])
    out = []
    for c in sorted(set(labels.tolist())):
        oc = [i for i in order if labels[i] == c]
        out += oc[:per_class] if use_hard else oc[len(oc) - per_class:]
    return sorted(out)


def test_score_selection_equals_the_reference_rule_with_aum_flip():
    rng = np.random.default_rng(1)
    labels = np.repeat(np.arange(4), 10)
    for _ in range(25):
        sc = rng.integers(0, 5, 40).astype(float)  # many ties
        for metric, hard, balanced in itertools.product(["el2n", "aum", "forgetting", "lbpe", "entropy"],
                                                        [True, False], [True, False]):
            rule = select.rule_for(metric, hard, balanced)
            got = select.select_by_score(sc, labels, rule, 3, 12, scores.REGISTRY[metric].high_is_hard)
            use_hard = (not hard) if metric == "aum" else hard  # the reference flips use_hard for AUM
            assert got.tolist() == _naive_select(sc, labels, 3, 12, use_hard, balanced), (metric, hard, balanced)


def test_plain_accumulated_margin_keeps_the_lowest_aum():
    sc = np.array([5.0, -1.0, 3.0, 0.5, 2.0, -4.0])
    rule = select.parse_key("accumulated_margin")
    kept = select.select_by_score(sc, np.zeros(6, dtype=int), rule, 2, 2, scores.REGISTRY["aum"].high_is_hard)
    assert kept.tolist() == [1, 5]
    rule = select.parse_key("accumulated_margin_easy")
    kept = select.select_by_score(sc, np.zeros(6, dtype=int), rule, 2, 2, scores.REGISTRY["aum"].high_is_hard)
    assert kept.tolist() == [0, 2]


@pytest.mark.parametrize("key, want", [
    ("accumulated_margin", ("aum", True, False)), ("accumulated_margin_easy", ("aum", False, False)),
    ("yoco", ("lbpe", False, True)), ("yoco_imbalance", ("lbpe", False, False)),
    ("yoco_balance_hard", ("lbpe", True, True)), ("el2n_hard_easy", ("el2n", True, False)),
    ("el2n_imbalance_balance", ("el2n", True, True)), ("forgetting_balance_easy", ("forgetting", False, True)),
    ("entropy", ("entropy", True, False)), ("ssp", ("ssp", True, False)), ("ssp_balance", ("ssp", True, True)),
    ("random", ("random", True, False)), ("random_balance", ("random", True, True)),
    ("ccs_easy_balance", ("ccs", True, False)),
])
def test_key_grammar(key, want):
    r = select.parse_key(key)
    assert (r.metric, r.hard, r.balanced) == want


def test_counts_are_integers_of_spec_4_1():
    # CIFAR-10 10->1 f=2: 4 per class, 40 of 400; ImageNet-10 10->1 f=3: 9 per class, 90 of 900
    assert select.keep_counts(10, 1, 4, 400) == (4, 40)
    assert select.keep_counts(10, 5, 4, 400) == (20, 200)
    assert select.keep_counts(10, 1, 9, 900) == (9, 90)
    assert select.keep_counts(50, 10, 4, 100 * 50 * 4) == (40, 4000)


# -- CCS (docs/method.md §3.8) ---------------------------------------------------------------------

def _naive_ccs(score, budget, beta, strata=50):
    """Transcription of docs/method.md §3.8 in float32 torch, as the reference computes it."""
    s_all = torch.tensor(score, dtype=torch.float32)
    n = len(s_all)
    order = sorted(range(n), key=lambda i: (-s_all[i].item(), i))
    pool = torch.tensor(order[int(beta * n):])
    s = s_all[pool]
    lo, hi = s.min(), s.max() * 1.0001
    step = (hi - lo) / strata
    masks = [(s >= lo + k * step) & (s < lo + (k + 1) * step) for k in range(strata)]
    sizes = [int(m.sum()) for m in masks]
    left, budgets = budget, [0] * strata
    for i, k in enumerate(sorted(range(strata), key=lambda k: (sizes[k], k))):
        budgets[k] = min(sizes[k], left // (strata - i))
        left -= budgets[k]
    kept = []
    for k in range(strata):
        kept += pool[torch.nonzero(masks[k]).flatten()[:budgets[k]]].tolist()  # first in pool order
    return sorted(kept)


def test_ccs_equals_the_spec_transcription():
    rng = np.random.default_rng(2)
    for _ in range(20):
        n = int(rng.integers(60, 250))
        sc = rng.gamma(2.0, 1.0, n)
        budget = int(rng.integers(1, n // 2))
        beta = float(rng.choice([0.0, 0.1, 0.3, 0.5]))
        got = select.ccs_select(sc, budget, presets.cut_count(beta, n)).tolist()
        assert got == _naive_ccs(sc, budget, beta)


def test_ccs_budget_allocation_by_hand():
    # ascending sizes 0, 2, 5, 10 with 9 to give: 0, min(2, 9//3)=2, min(5, 7//2)=3, min(10, 4)=4
    assert select.ccs_budgets([5, 0, 2, 10], 9).tolist() == [3, 0, 2, 4]


# -- decoding (docs/method.md §1.3) ----------------------------------------------------------------

def test_decode_224_by_3_pads_with_gray_and_cuts_75px_tiles():
    x = torch.rand(2, 3, 224, 224)
    out = decode_zoom(x, 3)
    padded = torch.full((2, 3, 225, 225), 0.5)
    padded[:, :, :224, :224] = x
    for k in range(9):
        i, j = divmod(k, 3)
        tile = padded[:, :, i * 75:(i + 1) * 75, j * 75:(j + 1) * 75]
        expect = F.interpolate(tile, size=(224, 224), mode="bilinear", align_corners=False)
        assert torch.allclose(out[2 * k:2 * k + 2], expect)  # tile-major: k*n + m


def test_decoded_index_mapping():
    ipc, f2 = 3, 4
    labels = torch.tensor([0, 0, 0, 1, 1, 1])
    _, dy, origin = decode_set(torch.rand(6, 1, 8, 8), labels, 2)
    b = ipc * f2
    for d in range(len(dy)):
        c = d // b
        assert int(dy[d]) == c and int(origin[d]) == c * ipc + d % ipc


# -- DSA and CutMix (docs/method.md §5.4, §5.5) ----------------------------------------------------

def test_dsa_order_and_exactly_one_drawn_op():
    dsa = A.DSA("color_crop_flip_scale_rotate")
    calls: list[str] = []
    for name in ("flip", "brightness", "saturation", "contrast", "crop", "scale", "rotate", "cutout"):
        op = getattr(dsa, name)
        setattr(dsa, name, lambda x, g, _n=name, _op=op: (calls.append(_n), _op(x, g))[1])
    g = torch.Generator().manual_seed(0)
    drawn = set()
    for _ in range(40):
        calls.clear()
        dsa(torch.rand(2, 3, 8, 8), g)
        assert calls[:4] == ["flip", "brightness", "saturation", "contrast"]
        assert len(calls) == 5 and calls[4] in ("crop", "scale", "rotate")
        drawn.add(calls[4])
    assert drawn == {"crop", "scale", "rotate"}


def test_cutmix_box_is_the_reference_rand_bbox():
    for lam in np.linspace(0.0, 1.0, 9):
        cut = int(32 * math.sqrt(1 - lam))
        for cy, cx in [(0, 31), (5, 16), (31, 0), (16, 16)]:
            y1, y2, x1, x2 = A.cutmix_box(32, 32, float(lam), cy, cx)
            assert (y1, y2) == (min(max(cy - cut // 2, 0), 32), min(max(cy + cut // 2, 0), 32))
            assert (x1, x2) == (min(max(cx - cut // 2, 0), 32), min(max(cx + cut // 2, 0), 32))


# -- the engine's hook and schedules (docs/method.md §2.2, §2.3, §5.2) -----------------------------

def test_hook_gets_pre_step_train_mode_outputs_of_the_augmented_batch(monkeypatch):
    spec = model_spec("convnet", 4, 1, 8, width=8, depth=2)
    g = torch.Generator().manual_seed(1)
    x, y = torch.rand(36, 1, 8, 8, generator=g), torch.arange(4).repeat(9)
    seen, got = [], []
    original = E._GroupRun._batch

    def spy(self, st, idx):
        out = original(self, st, idx)  # after DSA and CutMix, before the forward and the step
        seen.append((copy_state(self.group.model), out[0].clone(), out[1].clone(), out[3]))
        return out

    monkeypatch.setattr(E._GroupRun, "_batch", spy)
    cfg = E.TrainConfig(epochs=2, batch_size=16, cutmix_p=1.0, compile="off")
    E.train(spec, x, y, cfg, seeds=[0], normalize=((0.5,), (0.25,)),
            hooks=[lambda e, i, lp: got.append((i.clone(), lp.clone()))])
    net = E._init_model(spec, 0).train()
    assert len(got) == len(seen) == 6
    for (state, xb, ya, ratio), (idx, lp) in zip(seen, got):
        net.load_state_dict(state)
        with torch.no_grad():
            assert torch.allclose(lp, F.log_softmax(net(xb), 1), atol=1e-5)
        assert torch.equal(ya, y[idx])  # correctness is judged against the original label
    assert any(r < 1.0 for *_, r in seen)  # CutMix did fire


def copy_state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("schedule, epochs, n", [("iteration", 5, 130), ("epoch", 12, 40)])
def test_lr_schedule_equals_torch_multisteplr(schedule, epochs, n):
    cfg = E.TrainConfig(epochs=epochs, schedule=schedule)
    ipe = math.ceil(n / 64)
    total = epochs * ipe if schedule == "iteration" else epochs
    marks = E.milestones(cfg, n)
    assert marks == [2 * total // 3, 5 * total // 6]
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=cfg.lr)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, marks, gamma=0.2)
    for step in range(total):
        assert E.lr_at(cfg, marks, step) == pytest.approx(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()


def test_validation_points():
    assert E.eval_epochs(1000) == (250, 500, 750, 1000)
    assert E.eval_epochs(2000) == (500, 1000, 1500, 2000)
