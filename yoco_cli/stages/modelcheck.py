"""Check a user's `--model NAME:opts` against the data before any stage trains with it.

`build_model` refuses unknown names and options, but values it cannot use (`width=0`,
`width=abc`, `depth=0` on 8x8 images) only fail deep inside construction or at the first
forward pass, as ZeroDivisionError, ValueError or a shape RuntimeError: internal errors to
the CLI, minutes into a run. Building the model once and passing two blank images through it
turns them into a usage error up front; for the small models this costs milliseconds.
"""
from __future__ import annotations

import warnings

from ..errors import UsageError, YocoError


def label(name: str, options: dict) -> str:
    opts = ",".join(f"{k}={v}" for k, v in options.items())
    return f"{name}:{opts}" if opts else name


def checked_spec(name: str, options: dict, num_classes: int, channels: int, image_size: int) -> dict:
    """The model spec of `name` with `options`, after one forward pass on CxSxS zeros."""
    import torch

    from ..nn.models import build_model, spec_of

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch warns about zero-sized layers before failing
            model = build_model(name, num_classes, channels, image_size, **options)
            model.eval()  # BatchNorm in training mode rejects batches that small
            with torch.no_grad():
                out = model(torch.zeros(2, channels, image_size, image_size))
    except YocoError:
        raise
    except (ValueError, TypeError, ZeroDivisionError, RuntimeError, IndexError) as e:
        why = (str(e).splitlines() or [type(e).__name__])[0]
        raise UsageError(f"model {label(name, options)} does not work on {channels}x{image_size}x{image_size} "
                         f"images ({type(e).__name__}: {why})",
                         "check its options, e.g. convnet:width=64,depth=2") from None
    if tuple(out.shape) != (2, num_classes):
        raise UsageError(f"model {label(name, options)} gives outputs of shape {tuple(out.shape)[1:]}, "
                         f"not {num_classes} class scores", "check its options")
    return spec_of(model)
