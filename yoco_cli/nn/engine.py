"""The one training loop behind dynamics, eval and condense.

    cfg = TrainConfig(epochs=1000, schedule="iteration")            # docs/method.md §2.2 (dynamics)
    [res] = train(spec, x, y, cfg, seeds=[0], device=dev, normalize=(mean, std), hooks=[rec.update])

Design (airbench-style):
- The training images sit on the device as one tensor (normalized once unless the ImageNet
  pipeline needs raw pixels); an epoch is a seeded permutation sliced into batches, so each
  sample is seen exactly once per epoch (last batch smaller, docs/method.md §2.2). No DataLoader.
- Every random choice of run `seed` comes from three sources derived from it: the weight
  init (`torch.manual_seed(seed)` inside `fork_rng`, on the CPU so every device starts from
  the same weights), a CPU generator for the permutations and a device generator for the
  augmentation draws. Same seed + same device (+ same thread count) => same bytes.
- SGD (momentum 0.9, wd 5e-4) with MultiStepLR semantics: lr * gamma^(milestones passed),
  milestones floor(2T/3), floor(5T/6) counted in iterations (dynamics) or epochs (eval).
- Per batch: [ImageNet pipeline ->] DSA -> CutMix -> forward (train mode) -> loss -> step.
  `hooks[m](epoch, idx, log_probs)` receives the log-softmax of that very forward, i.e.
  on the augmented/CutMix input with the weights before this step (docs/method.md §2.3).
- Several seeds: on CUDA, models without BatchNorm train together as one stacked model
  (torch.func.stack_module_state + vmap), each with its own permutation and augmentation
  stream; elsewhere one after another (vmap measured 0.25-0.6x on this CPU).
- CPU levers (measured in benchmarks/train_throughput.py, ConvNet-3 width 128, 32x32, batch 64,
  1 thread, process CPU time): naive eager step 300 img/s; glibc malloc tuning alone 494;
  engine step with DSA + CutMix + hook 474 (eager) and 569 (torch.compile). So malloc tuning
  is always on, torch.compile is "auto" for long CPU runs on >= 32 px inputs (it costs 10-40 s
  to compile), and channels_last is not used (eager 8% slower, compiled +4%, within noise).
- Optional resumable checkpoints (`Checkpoint`) at epoch boundaries, for long runs.
"""
from __future__ import annotations

import contextlib
import copy
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .. import tensors
from ..errors import UsageError
from .augment import DEFAULT_STRATEGY, DSA, ImageNetAug, cutmix, mixed_loss
from .device import model_step_macs, use_threads
from .models import model_from_spec, uses_batchnorm

Hook = Callable[[int, torch.Tensor, torch.Tensor], None]


@dataclass
class TrainConfig:
    epochs: int
    batch_size: int = 64
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "iteration"  # "iteration" (dynamics, docs/method.md §2.2) | "epoch" (eval, §5.2) | "constant"
    gamma: float = 0.2
    dsa: str = DEFAULT_STRATEGY  # "" = no DSA
    cutmix_p: float = 0.5
    cutmix_beta: float = 1.0
    imagenet_aug: bool = False  # RRC/flip/jitter/lighting on raw pixels before normalizing (ImageNet)
    eval_at: tuple[int, ...] = ()  # test after these epochs (1-based: "after epoch e")
    eval_batch: int = 0  # 0 = measured per device (nn/evalbatch.py)
    compile: str = "auto"  # auto | on | off

    def __post_init__(self):
        if self.epochs < 1:
            raise UsageError(f"--epochs must be at least 1, got {self.epochs}")
        if self.batch_size < 1:
            raise UsageError(f"--batch-size must be at least 1, got {self.batch_size}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise UsageError(f"--lr must be a positive number, got {self.lr}")
        if self.schedule not in ("iteration", "epoch", "constant"):
            raise UsageError(f"unknown schedule {self.schedule!r}", "use iteration, epoch or constant")
        if self.compile not in ("auto", "on", "off"):
            raise UsageError(f"unknown compile mode {self.compile!r}", "use auto, on or off")
        if not 0.0 <= self.cutmix_p <= 1.0:
            raise UsageError(f"CutMix probability must lie in [0, 1], got {self.cutmix_p}")
        DSA(self.dsa)  # validates the strategy string
        self.eval_at = tuple(sorted({int(e) for e in self.eval_at if 0 < int(e) <= self.epochs}))

    def params(self) -> dict:
        """What determines the result (cache keys); eval_batch/compile only change speed/rounding."""
        d = asdict(self)
        d.pop("eval_batch")
        d.pop("compile")
        d["eval_at"] = list(self.eval_at)
        return d


def iterations_per_epoch(n: int, batch_size: int) -> int:
    return max(1, math.ceil(n / batch_size))


def milestones(cfg: TrainConfig, n: int) -> list[int]:
    """MultiStepLR milestones: iterations floor(2T/3), floor(5T/6) or epochs floor(2E/3), floor(5E/6)."""
    if cfg.schedule == "constant":
        return []
    total = cfg.epochs * iterations_per_epoch(n, cfg.batch_size) if cfg.schedule == "iteration" else cfg.epochs
    return [(2 * total) // 3, (5 * total) // 6]


def lr_at(cfg: TrainConfig, marks: list[int], step: int) -> float:
    """Learning rate used at iteration/epoch `step` (0-based), as MultiStepLR stepped after each one."""
    return cfg.lr * cfg.gamma ** sum(1 for m in marks if m <= step)


def eval_epochs(epochs: int) -> tuple[int, ...]:
    """Validation points of docs/method.md §5.2: after epochs E/4, E/2, 3E/4 and E."""
    return tuple(sorted({e for e in (epochs // 4, epochs // 2, (3 * epochs) // 4, epochs) if e > 0}))


def eval_key(spec: Any, *extra) -> str | None:
    """A model shape, for the eval-batch probe (None: unknown, no probe)."""
    import json

    return None if spec is None else json.dumps([spec, *extra], sort_keys=True, default=str)


def aug_seed(seed: int) -> int:
    """The augmentation stream's seed, distinct from the permutation stream's."""
    return (int(seed) * 1_000_003 + 7919) % (2**63 - 1)


# -- results and callbacks -----------------------------------------------------------------

@dataclass
class TrainResult:
    seed: int
    model: nn.Module
    evals: dict[int, float] = field(default_factory=dict)  # epoch -> test accuracy
    history: list[dict] = field(default_factory=list)      # per epoch: loss, acc, lr
    compiled: bool = False
    batched: bool = False

    @property
    def best(self) -> float | None:
        return max(self.evals.values()) if self.evals else None

    @property
    def last(self) -> float | None:
        return self.evals[max(self.evals)] if self.evals else None


@dataclass
class EpochInfo:
    seeds: list[int]
    epoch: int           # 0-based epoch just finished
    epochs: int
    loss: list[float]    # per model: mean training loss of the epoch
    acc: list[float]     # per model: training accuracy on augmented inputs vs original labels
    lr: float
    test_acc: list[float] | None = None


# -- checkpoints ---------------------------------------------------------------------------

class Checkpoint:
    """Resumable state at epoch boundaries in one safetensors file (written atomically).

    `extra_get() -> dict[str, Tensor]` / `extra_set(dict)` let a caller (the dynamics
    recorder) store its own tensors in the same file, so both resume from the same epoch.
    """

    def __init__(self, directory: Path, every_s: float = 60.0,
                 extra_get: Callable[[], dict] | None = None, extra_set: Callable[[dict], None] | None = None):
        self.path = Path(directory) / "engine.safetensors"
        self.every_s = every_s
        self.extra_get, self.extra_set = extra_get, extra_set
        self._last = time.monotonic()

    def due(self) -> bool:
        return time.monotonic() - self._last >= self.every_s

    def load(self) -> tuple[dict, dict] | None:
        if not self.path.is_file():
            return None
        try:
            return tensors.load(self.path)
        except Exception:  # noqa: BLE001  a torn, damaged (seal mismatch) or foreign file: start over rather than fail
            return None

    def save(self, ts: dict, meta: dict) -> None:
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        tensors.save(tmp, ts, meta, seal=True)  # checkpoints carry no digest in their name: seal them
        os.replace(tmp, self.path)
        self._last = time.monotonic()


# -- model groups: one model, or several stacked for vmap ---------------------------------

def _init_model(spec: dict, seed: int) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        return model_from_spec(spec)


class _Single:
    batched = False

    def __init__(self, model: nn.Module, device, compile_: bool):
        self.model = model.to(device)
        self.fn = self.model
        self.compiled = False
        if compile_:
            self.fn, self.compiled = _try_compile(self.model)

    def parameters(self) -> list[torch.Tensor]:
        return list(self.model.parameters())

    def train(self, flag: bool = True):
        self.model.train(flag)

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        if not self.compiled:
            return [self.model(xs[0])]
        try:
            return [self.fn(xs[0])]
        except Exception as e:  # noqa: BLE001  torch.compile fails lazily (no C++ compiler, unsupported op): go eager
            import warnings

            warnings.warn(f"torch.compile failed ({type(e).__name__}); training continues in eager mode")
            self.fn, self.compiled = self.model, False
            return [self.model(xs[0])]

    def eval_forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        # eager: a compiled eval graph (per test batch shape) would cost more compile time than it saves
        return [self.model(xs[0])]

    def state(self) -> list[dict]:
        return [self.model.state_dict()]

    def load_state(self, states: list[dict]) -> None:
        self.model.load_state_dict(states[0])

    def models(self) -> list[nn.Module]:
        return [self.model]


class _Stacked:
    """M models with identical architecture as one functional model (torch.func)."""

    batched = True
    compiled = False

    def __init__(self, models: list[nn.Module], device):
        from torch.func import stack_module_state

        self._models = [m.to(device) for m in models]
        params, buffers = stack_module_state(self._models)
        self.params = {k: v.detach().clone().requires_grad_(True) for k, v in params.items()}
        self.buffers = {k: v.detach().clone() for k, v in buffers.items()}
        self.base = copy.deepcopy(self._models[0]).to("meta")

    def parameters(self) -> list[torch.Tensor]:
        return list(self.params.values())

    def train(self, flag: bool = True):
        self.base.train(flag)

    def _call(self, p, b, x):
        from torch.func import functional_call

        return functional_call(self.base, (p, b), (x,))

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        from torch.func import vmap

        out = vmap(self._call)(self.params, self.buffers, torch.stack(xs))
        return list(out.unbind(0))

    def eval_forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        return self.forward(xs)

    def state(self) -> list[dict]:
        both = {**self.params, **self.buffers}
        return [{k: v[i].detach() for k, v in both.items()} for i in range(len(self._models))]

    def load_state(self, states: list[dict]) -> None:
        with torch.no_grad():
            for k, v in self.params.items():
                v.copy_(torch.stack([s[k] for s in states]))
            for k, v in self.buffers.items():
                v.copy_(torch.stack([s[k] for s in states]))

    def models(self) -> list[nn.Module]:
        for m, s in zip(self._models, self.state()):
            m.load_state_dict(s)
        return self._models


def _try_compile(model: nn.Module):
    try:
        # static shapes: one graph for full batches, one for the last (smaller) batch
        return torch.compile(model, dynamic=False), True
    except Exception:  # noqa: BLE001  no compiler toolchain: eager is correct, just slower
        return model, False


def plan_batched(spec: dict, device: torch.device, n_models: int, batched: str = "auto") -> bool:
    """Whether several seeds train as one stacked model (see module doc)."""
    if n_models < 2 or batched == "off":
        return False
    probe = model_from_spec(spec)
    if uses_batchnorm(probe) or getattr(probe, "net", None) is not None:
        if batched == "on":
            raise UsageError("batched training needs a model without BatchNorm", "use --batched off")
        return False
    return batched == "on" or device.type == "cuda"


def _want_compile(cfg: TrainConfig, device: torch.device, n: int, image_size: int) -> bool:
    if cfg.compile != "auto":
        return cfg.compile == "on"
    # compiling costs 15-60 s on the dev CPU and pays only on >= 32 px inputs over long runs
    return device.type == "cpu" and image_size >= 32 and cfg.epochs * n >= 200_000 and not os.environ.get(
        "YOCO_NO_COMPILE")


# -- the trainer ------------------------------------------------------------------------------

class _Stream:
    """Per-model randomness and bookkeeping."""

    def __init__(self, seed: int, device: torch.device):
        self.seed = int(seed)
        self.perm_gen = torch.Generator().manual_seed(self.seed)
        self.aug_gen = torch.Generator(device=device).manual_seed(aug_seed(self.seed))


def _normalizer(normalize, device):
    if normalize is None:
        return None
    mean, std = normalize
    m = torch.tensor(mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32, device=device).view(1, -1, 1, 1)
    return lambda t: (t - m) / s


def train(spec: dict, x: torch.Tensor, y: torch.Tensor, cfg: TrainConfig, *, seeds: Sequence[int] = (0,),
          device: torch.device | str = "cpu", normalize: tuple | None = None, test: tuple | None = None,
          hooks: Sequence[Hook | None] | None = None, on_epoch: Callable[[EpochInfo], None] | None = None,
          checkpoint: Checkpoint | None = None, batched: str = "auto") -> list[TrainResult]:
    """Train one model per seed on (x, y); returns their results in seed order.

    x: images (n, c, h, w) in the set's value space; `normalize=(mean, std)` maps raw pixels
    to the network's input (None: x is already normalized). `test=(x_test, y_test)`, already
    in the network's input space (normalized), is evaluated after the epochs in `cfg.eval_at`.
    A checkpoint is only taken when all seeds train as one group (one seed, or batched).
    """
    device = torch.device(device)
    use_threads(model_step_macs(spec, cfg.batch_size), device)  # a no-op unless the caller set a policy
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise UsageError("no seeds to train")
    if len(set(seeds)) != len(seeds):
        raise UsageError(f"duplicate seeds {seeds}")
    if x.shape[0] == 0:
        raise UsageError("the training set is empty")
    hooks = list(hooks) if hooks is not None else [None] * len(seeds)
    if len(hooks) != len(seeds):
        raise ValueError("one hook per seed")
    stacked = plan_batched(spec, device, len(seeds), batched)
    groups = [list(range(len(seeds)))] if stacked else [[i] for i in range(len(seeds))]
    if checkpoint is not None and len(groups) > 1:
        raise ValueError("checkpoints need all seeds in one group; train one seed per call")
    data = _Data(x, y, cfg, device, normalize, test)
    results: list[TrainResult] = [None] * len(seeds)  # type: ignore[list-item]
    for group in groups:
        run = _GroupRun(spec, data, cfg, [seeds[i] for i in group], device, stacked)
        for i, res in zip(group, run.fit([hooks[i] for i in group], on_epoch, checkpoint)):
            results[i] = res
    return results


class _Data:
    def __init__(self, x, y, cfg: TrainConfig, device, normalize, test):
        self.norm = _normalizer(normalize, device)
        x = x.to(device, torch.float32)
        # normalize once up front unless the ImageNet pipeline needs raw pixels per batch
        self.x = x if (cfg.imagenet_aug or self.norm is None) else self.norm(x)
        self.y = y.to(device).long()
        self.n = int(self.x.shape[0])
        self.image_size = int(self.x.shape[-1])
        # the test set arrives already in the network's input space (see `prepare_test`)
        self.test = None if test is None else (test[0].to(device, torch.float32), test[1].to(device).long())


class _GroupRun:
    def __init__(self, spec, data: _Data, cfg: TrainConfig, seeds: list[int], device, stacked: bool):
        self.spec, self.data, self.cfg, self.seeds, self.device = spec, data, cfg, seeds, device
        if device.type == "cuda":
            torch.backends.cudnn.deterministic = True
            torch.backends.cudnn.benchmark = False
        models = [_init_model(spec, s) for s in seeds]
        if stacked:
            self.group: Any = _Stacked(models, device)
        else:
            self.group = _Single(models[0], device, _want_compile(cfg, device, data.n, data.image_size))
        # foreach: the same bits as torch's per-parameter loop (tests/test_engine.py), fewer dispatches
        self.opt = torch.optim.SGD(self.group.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                                   weight_decay=cfg.weight_decay, foreach=True)
        self.streams = [_Stream(s, device) for s in seeds]
        self.dsa = DSA(cfg.dsa) if cfg.dsa else None
        self.inet = ImageNetAug(size=data.image_size) if cfg.imagenet_aug else None
        self.ipe = iterations_per_epoch(data.n, cfg.batch_size)
        self.marks = milestones(cfg, data.n)
        self.evals: list[dict[int, float]] = [{} for _ in seeds]
        self.history: list[list[dict]] = [[] for _ in seeds]
        self.start_epoch = 0

    # -- checkpoint state --------------------------------------------------------------
    def _fingerprint(self) -> dict:
        return {"spec": self.spec, "cfg": self.cfg.params(), "seeds": self.seeds, "n": self.data.n,
                "batched": self.group.batched, "compiled": self.group.compiled}

    def state(self, epoch_done: int) -> tuple[dict, dict]:
        ts: dict[str, torch.Tensor] = {}
        for i, sd in enumerate(self.group.state()):
            ts.update({f"m{i}.{k}": v for k, v in sd.items()})
        for j, p in enumerate(self.group.parameters()):
            buf = self.opt.state.get(p, {}).get("momentum_buffer")
            if buf is not None:
                ts[f"mom.{j}"] = buf
        for i, st in enumerate(self.streams):
            ts[f"g{i}.perm"] = st.perm_gen.get_state()
            ts[f"g{i}.aug"] = st.aug_gen.get_state()
        meta = {"fingerprint": self._fingerprint(), "epoch_done": epoch_done,
                "evals": [{str(k): v for k, v in e.items()} for e in self.evals], "history": self.history}
        return ts, meta

    def restore(self, ts: dict, meta: dict) -> None:
        states = [{k[len(f"m{i}."):]: v.to(self.device) for k, v in ts.items() if k.startswith(f"m{i}.")}
                  for i in range(len(self.seeds))]
        self.group.load_state(states)
        for j, p in enumerate(self.group.parameters()):
            if f"mom.{j}" in ts:
                self.opt.state[p]["momentum_buffer"] = ts[f"mom.{j}"].to(self.device).clone()
        for i, st in enumerate(self.streams):
            st.perm_gen.set_state(ts[f"g{i}.perm"])
            st.aug_gen.set_state(ts[f"g{i}.aug"])
        self.evals = [{int(k): v for k, v in e.items()} for e in meta["evals"]]
        self.history = meta["history"]
        self.start_epoch = int(meta["epoch_done"])

    def _resume(self, ck: Checkpoint | None) -> None:
        got = ck.load() if ck is not None else None
        if ck is None or not got:
            return
        ts, meta = got
        if meta.get("fingerprint") != self._fingerprint():
            return  # a checkpoint of other settings: ignore it
        extra = {k[len("x."):]: v for k, v in ts.items() if k.startswith("x.")}
        self.restore({k: v for k, v in ts.items() if not k.startswith("x.")}, meta)
        if ck.extra_set is not None:
            ck.extra_set(extra)

    def _save(self, ck: Checkpoint, epoch_done: int) -> None:
        ts, meta = self.state(epoch_done)
        if ck.extra_get is not None:
            ts.update({f"x.{k}": v for k, v in ck.extra_get().items()})
        ck.save(ts, meta)

    # -- one batch for one model -------------------------------------------------------
    def _batch(self, st: _Stream, idx: torch.Tensor):
        xb, yb = self.data.x[idx], self.data.y[idx]
        if self.inet is not None:
            xb = self.inet(xb, st.aug_gen)
            if self.data.norm is not None:
                xb = self.data.norm(xb)
        if self.dsa is not None:
            xb = self.dsa(xb, st.aug_gen)
        return cutmix(xb, yb, st.aug_gen, self.cfg.cutmix_p, self.cfg.cutmix_beta)

    # -- the loop ------------------------------------------------------------------------
    def fit(self, hooks, on_epoch, ck: Checkpoint | None) -> list[TrainResult]:
        self._resume(ck)
        cfg, m = self.cfg, len(self.seeds)
        b = cfg.batch_size
        for epoch in range(self.start_epoch, cfg.epochs):
            self.group.train(True)
            perms = [torch.randperm(self.data.n, generator=st.perm_gen).to(self.device) for st in self.streams]
            loss_sum = torch.zeros(m, device=self.device, dtype=torch.float64)
            correct = torch.zeros(m, device=self.device, dtype=torch.int64)
            lr = cfg.lr
            for it in range(self.ipe):
                step = epoch * self.ipe + it if cfg.schedule == "iteration" else epoch
                lr = lr_at(cfg, self.marks, step)
                for g in self.opt.param_groups:
                    g["lr"] = lr
                idxs = [p[it * b:(it + 1) * b] for p in perms]
                batches = [self._batch(st, idx) for st, idx in zip(self.streams, idxs)]
                logits = self.group.forward([bt[0] for bt in batches])
                losses = [mixed_loss(lg, ya, yb, r) for lg, (_, ya, yb, r) in zip(logits, batches)]
                self.opt.zero_grad(set_to_none=True)
                (losses[0] if m == 1 else torch.stack(losses).sum()).backward()
                self.opt.step()
                for i in range(m):
                    lg = logits[i].detach()
                    loss_sum[i] += losses[i].detach().double()
                    correct[i] += (lg.argmax(1) == batches[i][1]).sum()
                    if hooks[i] is not None:
                        hooks[i](epoch, idxs[i], F.log_softmax(lg.float(), dim=1))
            losses_e = (loss_sum / self.ipe).tolist()
            accs_e = (correct.double() / self.data.n).tolist()
            test_acc = None
            if self.data.test is not None and (epoch + 1) in cfg.eval_at:
                test_acc = self.evaluate()
                for i in range(m):
                    self.evals[i][epoch + 1] = test_acc[i]
            for i in range(m):
                self.history[i].append({"loss": losses_e[i], "acc": accs_e[i], "lr": lr})
            if ck is not None and (ck.due() or epoch + 1 == cfg.epochs):
                self._save(ck, epoch + 1)
            if on_epoch is not None:
                on_epoch(EpochInfo(self.seeds, epoch, cfg.epochs, losses_e, accs_e, lr, test_acc))
        return [TrainResult(seed, model.cpu().eval(), self.evals[i], self.history[i], self.group.compiled,
                            self.group.batched)
                for i, (seed, model) in enumerate(zip(self.seeds, self.group.models()))]

    @torch.no_grad()
    def evaluate(self) -> list[float]:
        from . import evalbatch

        assert self.data.test is not None, "evaluate() runs only with a test split"
        tx, ty = self.data.test
        self.group.train(False)
        key = eval_key(self.spec, "test", len(self.seeds), self.group.batched)
        logits = evalbatch.run(lambda s, e: tuple(self.group.eval_forward([tx[s:e]] * len(self.seeds))),
                               tx.shape[0], self.device, key, self.cfg.eval_batch)
        self.group.train(True)
        if not logits:
            return [float("nan")] * len(self.seeds)
        hits = [(torch.cat([out[i] for out in logits]).argmax(1) == ty).sum() for i in range(len(self.seeds))]
        return (torch.stack(hits).double() / tx.shape[0]).tolist()


# -- value spaces -------------------------------------------------------------------------------

def set_normalization(value_space: str, stats: tuple) -> tuple | None:
    """What the engine applies to a set's images: raw01 -> the dataset's (mean, std); normalized/zca -> nothing."""
    return tuple(stats) if value_space == "raw01" else None


def prepare_test(value_space: str, stats: tuple, x_test: torch.Tensor) -> torch.Tensor:
    """A real (raw [0, 1]) test split brought into the space the set's network sees; `stats` is
    the dataset's (mean, std) (stages.datasets.dataset_stats)."""
    if value_space == "zca":
        raise UsageError("this set is ZCA-whitened; testing it needs the ZCA transform of its source, "
                         "which yoco does not have", "evaluate a raw01 or normalized set")
    mean, std = stats
    return _normalizer((mean, std), x_test.device)(x_test.float())


# -- inference helpers (scores, eval) ------------------------------------------------------------

@torch.no_grad()
def eval_pass(model: nn.Module, x: torch.Tensor, device: torch.device | str = "cpu", normalize: tuple | None = None,
              batch_size: int = 0, features: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The one eval-mode batch loop: (logits, flattened `embed` features or None) of x, on the CPU.

    Models split into `embed` + `classifier` (every engine model) give both in one pass. The batch
    is `batch_size` when given, else measured for the device and model shape (nn/evalbatch.py).
    """
    from . import evalbatch

    device = torch.device(device)
    norm = _normalizer(normalize, device)
    was_training = model.training
    model = model.to(device).eval()
    embed, classifier = getattr(model, "embed", None), getattr(model, "classifier", None)
    if features and embed is None:
        raise UsageError(f"the model {type(model).__name__} has no embed(); its features cannot be taken")
    spec = getattr(model, "spec", None)
    # the thread policy sizes a forward (~1/3 of a step) at the batch the device's table gives
    macs = model_step_macs(spec, batch_size or evalbatch.table_batch(device)) if spec else None
    use_threads(macs / 3 if macs is not None else None, device)

    def forward(s: int, e: int) -> tuple[torch.Tensor, ...]:
        """(logits,) or, with `features`, (logits, features) of one batch."""
        xb = x[s:e].to(device, torch.float32)
        xb = norm(xb) if norm is not None else xb
        if not features or embed is None:  # no embed with features was refused above
            return (model(xb).float().cpu(),)
        if classifier is not None:  # embed + classifier: both from one pass
            f = embed(xb)
            return classifier(f).float().cpu(), f.flatten(1).float().cpu()
        return model(xb).float().cpu(), embed(xb).flatten(1).float().cpu()

    key = eval_key(spec, features, normalize is not None)
    outs = evalbatch.run(forward, x.shape[0], device, key, batch_size)
    model.train(was_training)
    logits = torch.cat([o[0] for o in outs]) if outs else torch.zeros(0)
    return logits, ((torch.cat([o[1] for o in outs]) if outs else torch.zeros(0, 0)) if features else None)


def eval_features(model: nn.Module, x: torch.Tensor, device: torch.device | str = "cpu") -> torch.Tensor:
    """The flattened `embed` features of x, on the CPU: `eval_pass(..., features=True)`'s second half."""
    feats = eval_pass(model, x, device, features=True)[1]
    if feats is None:  # unreachable: eval_pass returns features whenever it is asked for them
        raise RuntimeError("eval_pass returned no features")
    return feats


def save_model(model: nn.Module, path: Path | str) -> Path:
    """Final weights + the model spec (so `load_model` rebuilds the architecture), as safetensors."""
    state = {k: v for k, v in model.state_dict().items()}
    return tensors.save(path, state, {"format": "yoco-model/1", "spec": model.spec})


def load_model(path: tensors.Source) -> nn.Module:
    from ..errors import IntegrityError

    ts, meta = tensors.load(path)
    if meta.get("format") != "yoco-model/1":
        raise IntegrityError(f"{path} is not a yoco model file")
    model = model_from_spec(meta["spec"])
    model.load_state_dict(ts)
    return model.eval()


@contextlib.contextmanager
def threads(n: int | None):
    """Temporarily set torch's intra-op threads (benchmarks)."""
    old = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)
