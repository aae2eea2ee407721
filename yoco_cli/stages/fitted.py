"""Presets for datasets yoco has none for (a `folder:` of 28x28 digits, say), fitted to the data.

Without this such a dataset silently got CIFAR-10's settings: over an hour of work on a CPU
before anything was printed. yoco has two measured anchors: the paper's CIFAR-10 protocol
(32x32x3, 5000 training images per class) and its own digits preset (8x8x1, ~180 per class).
A dataset without a row is fitted from its shape and size, in the paper's proportions:

  network      ConvNet with as many pooling blocks as keep the last feature map at least 2x2
               (at most 3; 4 from 64 px, the paper's ConvNet-4 for 64x64 data); width 128 from
               16 px, 64 below (digits measured: three blocks on 8x8 left 66% accuracy, two 88%);
               ResNetAP-10 from 128 px (the ImageNet protocol). Images under 16 px take the digits
               row, the others CIFAR-10's, for every setting not named here.
  condensing   the anchor's iterations scaled by training images per class over the anchor's
               (the reference sees each real image about as often), never below the digits
               preset's count nor above the anchor's; the real batch at most the images per class.
  dynamics,    the anchor's epochs (the paper's 1000 at CIFAR size: LBPE's windows are fractions
  evaluation   of that run, and the run-time estimate says what it costs here).

`why` strings say which preset was chosen and why; stages print them before they train.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

SMALL = 16  # below this side, the digits anchor; from it, CIFAR-10's
ANCHOR_PER_CLASS = {"digits": 180, "cifar10": 5000}


@dataclass(frozen=True)
class DataShape:
    channels: int
    size: int
    num_classes: int
    per_class: int | None = None  # real training images per class (None: unknown, e.g. a condensed set)

    def text(self) -> str:
        n = f", {self.per_class} training images per class" if self.per_class else ""
        return f"{self.channels}x{self.size}x{self.size}, {self.num_classes} classes{n}"


def anchor(shape: DataShape) -> str:
    return "digits" if shape.size < SMALL else "cifar10"


def network(size: int) -> tuple[str, dict]:
    """(model name, options) fitted to the image side (see the module doc)."""
    if size >= 128:
        return "resnet10_ap", {}
    depth = 1
    while depth < (4 if size >= 64 else 3) and size // 2 ** (depth + 1) >= 2:
        depth += 1
    return "convnet", {"width": 128 if size >= SMALL else 64, "depth": depth}


def model_text(name: str, options: dict) -> str:
    if name != "convnet":
        return name
    return f"convnet:width={options['width']},depth={options['depth']}"


def train_preset(table: dict, dataset: str, shape: DataShape):
    """(TrainPreset, why or None): the table's row, else one fitted to `shape`."""
    if dataset in table:
        return table[dataset], None
    base = anchor(shape)
    name, options = network(shape.size)
    p = replace(table[base], model=name, model_options=options)
    epochs = "by IPC" if p.epochs is None else f"{p.epochs} epochs"
    why = (f"no preset for {dataset} ({shape.text()}): {model_text(name, options)} from the image size, "
           f"{epochs} as {base}'s")
    return p, why


def condense_settings(method_module, dataset: str, shape: DataShape) -> tuple[dict, str | None]:
    """(settings, why or None) of a condensation method for a dataset it has no preset for."""
    presets = getattr(method_module, "PRESETS", {})
    if dataset in presets or "model" not in method_module.preset("cifar10"):
        return method_module.preset(dataset), None
    base = anchor(shape)
    settings = dict(method_module.preset(base))
    name, options = network(shape.size)
    settings["model"] = model_text(name, options)
    notes = [f"{settings['model']} from the image size"]
    if shape.per_class and "iterations" in settings:
        floor = int(method_module.preset("digits")["iterations"])
        full = int(settings["iterations"])
        scaled = round(full * shape.per_class / ANCHOR_PER_CLASS[base])
        settings["iterations"] = max(floor, min(full, scaled))
        notes.append(f"{settings['iterations']} iterations ({base}'s {full} x {shape.per_class}/"
                     f"{ANCHOR_PER_CLASS[base]} images per class, at least {floor})")
    if shape.per_class and "batch_real" in settings and settings["batch_real"] > shape.per_class:
        settings["batch_real"] = int(shape.per_class)
        notes.append(f"real batch {shape.per_class}")
    why = f"no {method_module.NAME} preset for {dataset} ({shape.text()}): {', '.join(notes)}; the rest as {base}'s"
    return settings, why
