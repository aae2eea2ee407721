"""Pieces every condensation method shares: class indices, mix initialisation, seeds, checkpoints.

Determinism across interruptions: no random generator is carried from one outer iteration to
the next. Iteration `it` draws everything (network init, real batches, DSA parameters) from a
generator seeded by (seed, it), so the state to checkpoint is just tensors (the images and
their optimiser's momentum) and the iteration counter, and a resumed run is byte-identical to
an uninterrupted one whatever the checkpoint interval.
"""
from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from .. import tensors
from ..errors import IntegrityError, Interrupted, UsageError

if TYPE_CHECKING:
    import torch

    from ..data.real import RealDataset


# -- the real data ----------------------------------------------------------------------------

def dataset_digest(real: RealDataset) -> str:
    """What a condensed set came from: the digest of the training split's tensors."""
    return tensors.digest(real.train_x, real.train_y)


def class_indices(labels: torch.Tensor, num_classes: int) -> list[torch.Tensor]:
    """Training indices of each class, in dataset order."""
    import torch

    return [torch.nonzero(labels == c, as_tuple=False).flatten() for c in range(num_classes)]


def check_ipc(real: RealDataset, ipc: int, factor: int) -> None:
    """Each class must hold IPC*f^2 real images (what mix init and the random baseline consume)."""
    from ..data.decode import check_factor

    if ipc < 1:
        raise UsageError(f"--ipc must be at least 1, got {ipc}")
    check_factor(factor, int(real.train_x.shape[-2]), real.image_size)
    tile_boxes(int(real.train_x.shape[-2]), real.image_size, factor)  # every tile non-empty
    need = ipc * factor * factor
    counts = [len(i) for i in class_indices(real.train_y, real.num_classes)]
    if min(counts) < need:
        worst = counts.index(min(counts))
        raise UsageError(
            f"--ipc {ipc} with --factor {factor} needs {need} training images per class, "
            f"but class {real.classes[worst]} of {real.name} has only {min(counts)}",
            f"use --ipc {max(1, min(counts) // (factor * factor))} or less (or a smaller --factor)",
        )


def check_numbers(s: dict, positive: tuple = (), nonnegative: tuple = (), momenta: tuple = (),
                  probabilities: tuple = ()) -> None:
    """Refuse settings no run can use (a negative learning rate, a momentum of 5) before iteration 1,
    instead of minutes later as NaN images (exit 3) or a silently useless set."""
    for k in positive:
        if not s[k] > 0:
            raise UsageError(f"setting {k} must be positive, got {s[k]}")
    for k in nonnegative:
        if not s[k] >= 0:
            raise UsageError(f"setting {k} must be 0 or more, got {s[k]}")
    for k in momenta:
        if not 0 <= s[k] < 1:
            raise UsageError(f"setting {k} must lie in [0, 1), got {s[k]}")
    for k in probabilities:
        if not 0 <= s[k] <= 1:
            raise UsageError(f"setting {k} must lie in [0, 1], got {s[k]}")


# -- multi-formation layout (docs/method.md §6.1, inverse of data/decode.py) -----------------------

def tile_boxes(height: int, width: int, factor: int) -> list[tuple[int, int, int, int]]:
    """(top, left, tile height, tile width) of the f*f tiles, row-major (k = i*f + j).

    Tiles are the crops decoding cuts (side ceil(H/f)); the last row/column of tiles is
    what is left of the image (decoding pads it with gray). For 224/3 this is 75, 75, 74,
    IDC's layout (docs/method.md §6.1); for 32/2 and 8/2 all tiles are equal.
    """
    def sizes(n: int) -> list[int]:
        side = math.ceil(n / factor)
        last = n - (factor - 1) * side
        if last < 1:
            raise UsageError(f"--factor {factor} does not fit {n}-pixel images: the last tile would be empty",
                             "use a smaller --factor")
        return [side] * (factor - 1) + [last]

    hs, ws = sizes(height), sizes(width)
    tops = [sum(hs[:i]) for i in range(factor)]
    lefts = [sum(ws[:j]) for j in range(factor)]
    return [(tops[i], lefts[j], hs[i], ws[j]) for i in range(factor) for j in range(factor)]


def pack_tiles(images: torch.Tensor, ipc: int, factor: int) -> torch.Tensor:
    """IPC*f^2 images of one class -> IPC stored images; image k*IPC+m becomes tile k of image m.

    Each image is shrunk to its tile by nearest interpolation (IDC's `mix` init).
    """
    import torch
    import torch.nn.functional as F

    n, c, h, w = images.shape
    if n != ipc * factor * factor:
        raise ValueError(f"pack_tiles needs {ipc * factor * factor} images, got {n}")
    if factor == 1:
        return images.clone()
    out = torch.empty((ipc, c, h, w), dtype=images.dtype, device=images.device)
    for k, (top, left, th, tw) in enumerate(tile_boxes(h, w, factor)):
        small = F.interpolate(images[k * ipc:(k + 1) * ipc], size=(th, tw), mode="nearest")
        out[:, :, top:top + th, left:left + tw] = small
    return out


def layout_from_indices(real: RealDataset, chosen: list[torch.Tensor], ipc: int, factor: int):
    """Stored images (class-sorted, IPC per class) and labels from IPC*f^2 chosen indices per class."""
    import torch

    stored = [pack_tiles(real.train_x[idx], ipc, factor) for idx in chosen]
    labels = torch.arange(real.num_classes, dtype=torch.int64).repeat_interleave(ipc)
    return torch.cat(stored).contiguous(), labels


def mix_init(real: RealDataset, ipc: int, factor: int):
    """IDC's `mix` init (docs/method.md §6.1): the first IPC*f^2 training images of each class, in
    dataset order, as tiles.

    With f = 1 this is IDC's init for single-formation sets: the first IPC real images.
    """
    check_ipc(real, ipc, factor)
    need = ipc * factor * factor
    chosen = [idx[:need] for idx in class_indices(real.train_y, real.num_classes)]
    return layout_from_indices(real, chosen, ipc, factor)


# -- randomness -------------------------------------------------------------------------------

def iteration_seed(seed: int, iteration: int, stream: int = 0) -> int:
    """A 63-bit seed that depends only on (seed, iteration, stream): no state crosses iterations."""
    import numpy as np

    state = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(iteration), int(stream)]).generate_state(2)
    return int((int(state[0]) << 31 ^ int(state[1])) & 0x7FFFFFFFFFFFFFFF)


def generator(seed: int, device="cpu") -> torch.Generator:
    import torch

    g = torch.Generator(device=device)
    g.manual_seed(seed)
    return g


def sample_indices(pool: torch.Tensor, n: int, gen: torch.Generator) -> torch.Tensor:
    """n distinct members of `pool` (all of them, shuffled, when the pool is smaller)."""
    import torch

    perm = torch.randperm(len(pool), generator=gen)
    return pool[perm[: min(n, len(pool))]]


@contextlib.contextmanager
def seeded_global(seed: int):
    """Model constructors draw from torch's global RNG; give them a private, seeded one."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


# -- image optimiser --------------------------------------------------------------------------

def sgd_momentum_step(param: torch.Tensor, grad: torch.Tensor, buf: torch.Tensor,
                      lr: float, momentum: float, rows: slice | None = None) -> None:
    """SGD with heavy-ball momentum (dampening 0, as torch.optim.SGD); the buffer is our state.

    `grad` may cover only `rows` of `param` (the rest has zero gradient): the whole tensor
    still moves by its momentum, exactly as one optimiser over the whole set does. Kept as
    plain tensors so a checkpoint is (images, momentum) and nothing else.
    """
    buf.mul_(momentum)
    if rows is None:
        buf.add_(grad)
    else:
        buf[rows].add_(grad)
    param.sub_(lr * buf)


# -- checkpoints -------------------------------------------------------------------------------

CKPT_NAME = "checkpoint.safetensors"


class Checkpointer:
    """Atomic checkpoints of a condensation in the stage's partial folder.

    A checkpoint is one safetensors file (tensors + JSON meta with the iteration and the run
    key), written to a temp name and renamed into place, so a crash mid-write leaves the
    previous checkpoint intact. It is sealed with a digest of its tensors: one damaged on disk
    is dropped and the run starts over, rather than resuming into a wrong result.
    """

    def __init__(self, folder: Path | None, key: str, every: int):
        self.folder = Path(folder) if folder is not None else None
        self.key = key
        self.every = max(0, int(every))

    @property
    def path(self) -> Path | None:
        return self.folder / CKPT_NAME if self.folder is not None else None

    def load(self) -> tuple[dict, dict] | None:
        p = self.path
        if p is None or not p.is_file():
            return None
        try:
            ts, meta = tensors.load(p)
        except IntegrityError:  # torn or damaged: starting over gives the right result, resuming would not
            p.unlink(missing_ok=True)
            return None
        if meta.get("key") != self.key:  # not ours (cannot happen with per-key folders; be safe)
            return None
        return ts, meta

    def due(self, done: int, total: int) -> bool:
        return self.path is not None and self.every > 0 and done % self.every == 0 and done < total

    def save(self, state: dict, meta: dict) -> None:
        p = self.path
        if p is None:  # no checkpoint file: saving is off (`due` is never true then)
            return
        tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
        tensors.save(tmp, state, {**meta, "key": self.key}, seal=True)
        os.replace(tmp, p)


IterationHook = Callable[[int, int, float], None]  # (iterations done, total, loss)


# -- one condensation job and the loop every iterative method runs -----------------------------

class Job:
    """What a method needs: the real data, the sizes, the seed, its params, the device, hooks."""

    def __init__(self, real, ipc: int, factor: int, seed: int, params: dict, device="cpu",
                 ckpt: Checkpointer | None = None, on_iteration: IterationHook | None = None):
        self.real, self.ipc, self.factor, self.seed = real, ipc, factor, seed
        self.params, self.device = params, device
        self.ckpt = ckpt or Checkpointer(None, "", 0)
        self.on_iteration = on_iteration


class Outcome:
    def __init__(self, images, labels, losses: list[float] | None = None, info: dict | None = None):
        self.images, self.labels = images, labels
        self.losses = losses or []
        self.info = info or {}


def image_state(job: Job):
    """The state a matching method optimises and checkpoints: mix-initialised stored images on the
    device and their zeroed momentum buffer. Returns (state, labels)."""
    import torch

    images, labels = mix_init(job.real, job.ipc, job.factor)
    images = images.to(job.device)
    return {"images": images, "momentum": torch.zeros_like(images)}, labels


def final_outcome(state: dict, labels, losses: list[float]) -> Outcome:
    # IDC leaves the last update unclamped; we clamp, so a raw01 set really lies in [0, 1]
    return Outcome(state["images"].detach().clamp(0.0, 1.0).cpu(), labels, losses)


# Ctrl-C checkpoints the last finished iteration when that takes about a second at most: a state
# up to this size (a fast disk writes it in well under a second; CIFAR IPC 50 is 12 MB with momentum)
INTERRUPT_SAVE_BYTES = 256 * 2 ** 20


def run_loop(job: Job, state: dict, total: int, step: Callable[[int], float]) -> list[float]:
    """Run iterations [start, total) of `step(it) -> loss`, resuming from and writing checkpoints.

    `state` maps names to the tensors `step` updates in place (read through the dict each
    iteration, since a resume replaces them). Returns the loss of every iteration. On Ctrl-C it
    checkpoints the last finished iteration (a copy kept after each one: an interrupted step has
    half-updated the state) where it can in about a second, and raises `errors.Interrupted`
    saying where a rerun starts.
    """
    start, losses = _resume(job, state, total)
    saved = start
    kept = _Kept(job, state, start, losses)
    try:
        for it in range(start, total):
            loss = float(step(it))
            losses.append(loss)
            done = it + 1
            if job.ckpt.due(done, total):
                _save(job, state, losses, done)
                saved = done
            kept.update(done)
            if job.on_iteration:
                job.on_iteration(done, total, loss)
    except KeyboardInterrupt:
        raise Interrupted(kept.checkpoint(saved)) from None
    return losses


def _resume(job: Job, state: dict, total: int) -> tuple[int, list[float]]:
    """Load a matching checkpoint into `state`: (the iterations it had done, their losses); (0, []) for none."""
    loaded = job.ckpt.load()
    if loaded is None:
        return 0, []
    ts, meta = loaded
    saved_losses = ts.pop("_losses", None)
    if set(ts) != set(state) or any(ts[k].shape != state[k].shape for k in ts):
        return 0, []
    for k, t in ts.items():
        state[k].copy_(t.to(state[k].device))
    start = int(meta["iteration"])
    losses = saved_losses.tolist() if saved_losses is not None else []
    if job.on_iteration:
        job.on_iteration(start, total, losses[-1] if losses else float("nan"))
    return start, losses


def _save(job: Job, state: dict, losses: list[float], done: int) -> None:
    import torch

    # losses travel as a tensor: JSON meta cannot hold a NaN loss
    job.ckpt.save({**state, "_losses": torch.tensor(losses, dtype=torch.float64)}, {"iteration": done})


class _Kept:
    """A copy of the state after the last finished iteration, for Ctrl-C (only where it could be
    saved in about a second: checkpoints on and a state of at most INTERRUPT_SAVE_BYTES)."""

    def __init__(self, job: Job, state: dict, done: int, losses: list[float]):
        size = sum(t.numel() * t.element_size() for t in state.values())
        self.job, self.state, self.losses = job, state, losses
        self.on = job.ckpt.path is not None and size <= INTERRUPT_SAVE_BYTES
        self.done = done
        self.copy: dict | None = None
        self.update(done)

    def update(self, done: int) -> None:
        if self.on:
            self.copy = {k: t.detach().clone() for k, t in self.state.items()}
            self.done = done

    def checkpoint(self, saved: int) -> str:
        """Save the copy if it is newer than the last checkpoint; say where a rerun starts."""
        if self.on and self.copy is not None and self.done > saved:
            _save(self.job, self.copy, self.losses[:self.done], self.done)
            saved = self.done
        if saved == 0:
            why = "" if self.on or self.job.ckpt.path is None else " (the state is too large to save at once)"
            return f"no checkpoint yet{why}: a rerun starts at iteration 1"
        return f"checkpointed after iteration {saved}: a rerun resumes at iteration {saved + 1}"
