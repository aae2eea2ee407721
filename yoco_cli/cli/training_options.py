"""The training options `yoco dynamics` and `yoco eval` share, declared once.

Their help text quotes the preset tables (stages/training.py) rather than copies of them, so
`--help` cannot drift from what runs. `options(table)` builds the typer options of one command,
which its signature wraps as `Annotated[int | None, TRAIN.epochs]` (a type mypy can read): the two
commands differ only in which table their defaults come from.
"""
from __future__ import annotations

from dataclasses import dataclass

import typer
from typer.models import OptionInfo

from ..stages.training import check_switches, preset_help
from .common import complete_switch

__all__ = ["check_switches", "options"]  # check_switches: one check for the CLI and the API

MODELS = "convnet | resnet10_ap | resnet10_bn | resnet18_bn | densenet | tv:NAME, options as convnet:width=64"


@dataclass(frozen=True)
class TrainingOptions:
    """One command's training options: the `Annotated` metadata of its parameters."""
    epochs: OptionInfo
    batch_size: OptionInfo
    lr: OptionInfo
    model: OptionInfo
    aug: OptionInfo
    cutmix: OptionInfo
    batched: OptionInfo
    compile: OptionInfo


def options(table: str, panel: str, runs: str) -> TrainingOptions:
    def opt(flag: str, help_: str) -> OptionInfo:
        return typer.Option(flag, help=help_, rich_help_panel=panel, show_default=False)

    return TrainingOptions(
        epochs=opt("--epochs", f"Epochs ({preset_help(table, 'epochs')})."),
        batch_size=opt("--batch-size", f"Batch size ({preset_help(table, 'batch_size')})."),
        lr=opt("--lr", f"SGD learning rate ({preset_help(table, 'lr')})."),
        model=opt("--model", f"{MODELS} ({preset_help(table, 'model')})."),
        aug=opt("--aug", f"DSA strategy, or none ({preset_help(table, 'dsa')})."),
        cutmix=opt("--cutmix", f"CutMix probability per batch, 0 disables ({preset_help(table, 'cutmix_p')})."),
        batched=typer.Option(
            "--batched", help=f"auto | on | off: train the {runs} as one stacked model (auto: on CUDA).",
            rich_help_panel=panel, autocompletion=complete_switch),
        compile=typer.Option(
            "--compile", help="auto | on | off: torch.compile the model (auto: long CPU runs on >= 32 px).",
            rich_help_panel=panel, autocompletion=complete_switch),
    )


