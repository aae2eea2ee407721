"""The training presets of the two stages that train on a set: dynamics and eval (docs/method.md §2, §5).

One preset type for both. Each stage has a table by dataset name; a dataset without a row
takes CIFAR-10's. `plan` turns a preset plus the user's overrides into (model spec,
TrainConfig), and `preset_help` writes the CLI's help text from the same tables, so the
numbers in `--help` are the numbers that run.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import UsageError

DEFAULT_DSA = "color_crop_flip_scale_rotate"


@dataclass(frozen=True)
class TrainPreset:
    model: str = "convnet"
    model_options: dict = field(default_factory=dict)
    epochs: int | None = 1000  # None: ImageNet's rule by decoded images per class (ipc_epochs)
    batch_size: int = 64
    lr: float = 0.01
    dsa: str = DEFAULT_DSA
    cutmix_p: float = 0.5
    imagenet_aug: bool = False


# digits is ours: on 8x8 inputs a third conv block instance-normalizes 2x2 maps (measured on
# 100 random digits, 100 epochs: 66% test accuracy with three blocks, 88% with two), so digits
# uses ConvNet-2 of width 64; short runs keep it to seconds on a CPU.
DIGITS_MODEL = {"width": 64, "depth": 2}

# docs/method.md §2.2
DYNAMICS: dict[str, TrainPreset] = {
    "cifar10": TrainPreset(),
    "cifar100": TrainPreset(),
    "imagenet10": TrainPreset(model="resnet10_ap", imagenet_aug=True),
    "digits": TrainPreset(model_options=DIGITS_MODEL, epochs=100),
}
# docs/method.md §5.1, §5.2
EVAL: dict[str, TrainPreset] = {
    "cifar10": TrainPreset(),
    "cifar100": TrainPreset(),
    "imagenet10": TrainPreset(model="resnet10_ap", epochs=None, dsa="", cutmix_p=1.0, imagenet_aug=True),
    "digits": TrainPreset(model_options=DIGITS_MODEL, epochs=200),
}
TABLES = {"dynamics": DYNAMICS, "eval": EVAL}


def check_switches(**switches: str) -> None:
    """batched / compile take auto, on or off (the CLI's --batched/--compile, the API's keywords)."""
    for name, value in switches.items():
        if value not in ("auto", "on", "off"):
            raise UsageError(f"--{name} {value!r}", "use auto, on or off")


def overrides(**given) -> dict:
    """The training settings a caller named (None: the preset's), as the dict every stage takes;
    the CLI's options and the API's keywords both go through here."""
    return {name: value for name, value in given.items() if value is not None}


def preset(table: str, dataset: str, shape=None) -> TrainPreset:
    """The table's row for `dataset`; without one, a preset fitted to `shape` (a fitted.DataShape,
    see stages/fitted.py), else CIFAR-10's."""
    return fitted_preset(table, dataset, shape)[0]


def fitted_preset(table: str, dataset: str, shape=None) -> tuple[TrainPreset, str | None]:
    """(preset, why): why is None for a dataset with its own row, else says what was fitted and why."""
    presets = TABLES[table]
    if dataset in presets or shape is None:
        return presets.get(dataset, presets["cifar10"]), None
    from .fitted import train_preset

    return train_preset(presets, dataset, shape)


def ipc_epochs(ipc: int, factor: int) -> int:
    """ImageNet's epoch rule on decoded images per class (docs/method.md §5.2): 2000/1500/1000/500/300."""
    n = ipc * factor * factor
    for limit, epochs in ((10, 2000), (50, 1500), (200, 1000), (500, 500)):
        if n <= limit:
            return epochs
    return 300


def plan(p: TrainPreset, *, num_classes: int, channels: int, image_size: int, schedule: str,
         default_epochs: int | None = None, model: str | None = None, epochs: int | None = None,
         batch_size: int | None = None, lr: float | None = None, aug: str | None = None,
         cutmix: float | None = None, eval_at=None, compile: str = "auto"):
    """(model spec, TrainConfig) of a preset with the user's overrides. `eval_at(epochs)` gives
    the test points; `default_epochs` stands in for a preset without a fixed epoch count."""
    from ..nn.engine import TrainConfig
    from ..nn.models import parse_model_arg
    from .modelcheck import checked_spec

    name, options = parse_model_arg(model) if model else (p.model, dict(p.model_options))
    spec = checked_spec(name, options, num_classes, channels, image_size)
    eps = epochs if epochs is not None else (p.epochs or default_epochs)
    if eps is None:  # a caller's mistake, not the user's: a preset without epochs (ImageNet) needs default_epochs
        raise ValueError("this preset has no epoch count: pass default_epochs (e.g. ipc_epochs)")
    dsa = p.dsa if aug is None else ("" if aug.lower() in ("", "none", "off") else aug)
    cfg = TrainConfig(epochs=eps, batch_size=p.batch_size if batch_size is None else batch_size,
                      lr=p.lr if lr is None else lr, schedule=schedule, dsa=dsa,
                      cutmix_p=p.cutmix_p if cutmix is None else cutmix, imagenet_aug=p.imagenet_aug,
                      eval_at=eval_at(eps) if eval_at else (), compile=compile)
    return spec, cfg


def every_k_epochs(test_every: int | None, epochs: int) -> tuple[int, ...]:
    """Every K epochs and the last (dynamics' --test-every); None is off, 0 is refused."""
    if test_every is None:
        return ()
    if test_every < 1:
        raise UsageError(f"--test-every must be at least 1, got {test_every}")
    return tuple(range(test_every, epochs + 1, test_every)) + (epochs,)


def _show(name: str, value) -> str:
    if name == "epochs" and value is None:
        return "by IPC"
    if name == "dsa":
        return value or "none"
    if name == "model":
        return {"convnet": "ConvNet-3", "resnet10_ap": "ResNetAP-10"}.get(value, value)
    return str(value)


def preset_help(table: str, name: str) -> str:
    """'preset 1000; digits 100' for a TrainPreset field: CIFAR-10's value, then every dataset
    whose value differs (the help text of the training options)."""
    presets = TABLES[table]
    base = getattr(presets["cifar10"], name)
    if name == "model":  # a digits preset's ConvNet-2 is spelled by its options
        other = {d: (p.model if not p.model_options else "convnet:" + ",".join(
            f"{k}={v}" for k, v in p.model_options.items())) for d, p in presets.items()}
        base = other["cifar10"]
    else:
        other = {d: getattr(p, name) for d, p in presets.items()}
    parts = [f"preset {_show(name, base)}"]
    parts += [f"{d} {_show(name, v)}" for d, v in other.items() if v != base]
    return "; ".join(parts)
