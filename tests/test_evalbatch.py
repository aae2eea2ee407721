"""Eval passes pick their batch size by a probe (issue 14), without their results depending on it."""
from __future__ import annotations

import time

import pytest
import torch

from yoco_cli.nn import engine, evalbatch

CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def fresh_choices(monkeypatch):
    monkeypatch.setattr(evalbatch, "_chosen", {})


def _costly_forward(calls: list, odd_size: int | None = None, per_call_s: float = 0.004):
    """Rows -> their squares; every call burns a fixed amount of CPU, so bigger batches are cheaper."""
    x = torch.arange(1000, dtype=torch.float64)

    def forward(s, e):
        calls.append((s, e))
        end = time.process_time() + per_call_s
        while time.process_time() < end:
            pass
        out = x[s:e] ** 2
        return out + 1e-9 if e - s == odd_size else out  # a batch size that changes the bits
    return forward


def test_probe_picks_the_cheapest_exact_batch_and_keeps_the_table_grid():
    calls = []
    outs = evalbatch.run(_costly_forward(calls), 1000, CPU, key="m")
    assert torch.equal(torch.cat(outs), torch.arange(1000, dtype=torch.float64) ** 2)
    assert evalbatch.chosen(CPU, "m") == 512
    # after the probe of rows [0, 512) at 128 (kept), 64, 256 and 512, the rows outside a whole
    # batch of 512 run in the table's batches of 128, as they would without the probe
    assert calls[-4:] == [(512, 640), (640, 768), (768, 896), (896, 1000)]
    calls.clear()
    evalbatch.run(_costly_forward(calls), 1100, CPU, key="m")  # probed once per process
    assert calls == [(0, 512), (512, 1024), (1024, 1100)]
    calls.clear()
    evalbatch.run(_costly_forward(calls), 300, CPU, key="m", batch_size=100)  # an explicit size wins
    assert calls == [(0, 100), (100, 200), (200, 300)]


def test_a_batch_size_that_changes_the_bits_is_never_chosen():
    calls = []
    outs = evalbatch.run(_costly_forward(calls, odd_size=512), 1000, CPU, key="m")
    assert evalbatch.chosen(CPU, "m") == 256
    assert torch.equal(torch.cat(outs), torch.arange(1000, dtype=torch.float64) ** 2)
    calls.clear()
    assert evalbatch.run(_costly_forward(calls), 100, CPU, key="small") and calls == [(0, 100)]
    assert evalbatch.chosen(CPU, "small") is None  # too few rows to measure anything: the table batch


def test_model_outputs_do_not_depend_on_the_probe():
    from yoco_cli.nn.models import build_model
    from yoco_cli.stages.score import model_outputs

    torch.manual_seed(0)
    model = build_model("convnet", 10, 1, 8, width=8, depth=2)
    x, y = torch.rand(600, 1, 8, 8), torch.randint(0, 10, (600,))
    logits, feats = engine.eval_pass(model, x, "cpu", batch_size=128, features=True)
    probed = engine.eval_pass(model, x, "cpu", features=True)
    assert evalbatch.chosen(CPU, engine.eval_key(model.spec, True, False)) in (64, 128, 256, 512)
    assert torch.equal(probed[0], logits) and torch.equal(probed[1], feats)
    assert torch.equal(engine.eval_pass(model, x, "cpu")[0], logits)
    a, b = model_outputs(model, x, y, "cpu"), model_outputs(model, x, y, "cpu", 128)
    assert all(torch.equal(a[k], b[k]) for k in ("entropy", "loss"))
