"""Presets fitted to a dataset yoco has none for, from its shape and size, said out loud."""
from __future__ import annotations

import pytest

from yoco_cli.stages import fitted
from yoco_cli.stages.fitted import DataShape


@pytest.mark.parametrize("size, expect", [
    (8, ("convnet", {"width": 64, "depth": 2})),     # digits' own measured choice
    (12, ("convnet", {"width": 64, "depth": 2})),
    (16, ("convnet", {"width": 128, "depth": 3})),
    (28, ("convnet", {"width": 128, "depth": 3})),   # MNIST: 28 -> 14 -> 7 -> 3
    (32, ("convnet", {"width": 128, "depth": 3})),   # the paper's ConvNet-3 on CIFAR
    (64, ("convnet", {"width": 128, "depth": 4})),   # the paper's ConvNet-4 on 64 px
    (224, ("resnet10_ap", {})),
])
def test_network_keeps_the_last_map_at_least_2x2(size, expect):
    assert fitted.network(size) == expect


def test_known_datasets_keep_their_rows_and_others_say_why():
    from yoco_cli.stages import training

    p, why = training.fitted_preset("dynamics", "digits", DataShape(1, 8, 10))
    assert why is None and p.epochs == 100
    p, why = training.fitted_preset("dynamics", "folder:/data/mnist", DataShape(1, 28, 10))
    assert (p.model, p.model_options, p.epochs) == ("convnet", {"width": 128, "depth": 3}, 1000)
    assert why == ("no preset for folder:/data/mnist (1x28x28, 10 classes): convnet:width=128,depth=3 from the "
                   "image size, 1000 epochs as cifar10's")
    p, _ = training.fitted_preset("eval", "folder:/data/tiny", DataShape(3, 8, 5))
    assert (p.model_options, p.epochs) == ({"width": 64, "depth": 2}, 200)  # the digits anchor below 16 px


def test_condensing_iterations_scale_with_images_per_class():
    from yoco_cli.condensation import dm, idc

    s, why = fitted.condense_settings(dm, "folder:/d", DataShape(1, 28, 10, per_class=2500))
    assert (s["model"], s["iterations"], s["batch_real"]) == ("convnet:width=128,depth=3", 10000, 256)
    assert "10000 iterations (cifar10's 20000 x 2500/5000 images per class, at least 1000)" in why
    s, why = fitted.condense_settings(dm, "folder:/d", DataShape(1, 28, 10, per_class=24))
    assert (s["iterations"], s["batch_real"]) == (1000, 24) and "real batch 24" in why
    s, _ = fitted.condense_settings(idc, "folder:/d", DataShape(3, 32, 10, per_class=60000))
    assert s["iterations"] == 2000  # never above the paper's
    assert fitted.condense_settings(dm, "digits", DataShape(1, 8, 10, 180)) == (dm.preset("digits"), None)


def test_cli_says_which_preset_and_why(cli, tmp_path):
    from PIL import Image

    for c in range(2):
        (tmp_path / "px" / str(c)).mkdir(parents=True)
        for i in range(12):
            Image.new("L", (28, 28), 20 * i + c).save(tmp_path / "px" / str(c) / f"{i}.png")
    r = cli("condense", f"folder:{tmp_path / 'px'}", "--ipc", "1", "--method", "dm", "--show-settings")
    assert r.exit_code == 0, r.stderr
    assert "no dm preset for folder:" in r.stderr and "convnet:width=128,depth=3 from the image size" in r.stderr
    assert "1000 iterations (cifar10's 20000 x 10/5000 images per class, at least 1000), real batch 10" in r.stderr
