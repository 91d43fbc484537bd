"""A batch's loss: the loss function on the model's outputs, or the model's own.

``loss_fn=None`` means the model computes its loss: ``model(inputs, targets)`` returns a scalar
tensor, a dict holding ``"loss"``, or an object with a ``.loss`` (as Hugging Face models do).
Either way the loss must be one number per batch: a per-sample loss (``reduction="none"``)
would make the backward pass fail far from its cause.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from lrexp.engine.settings import SettingError

__all__ = ["LossFn", "batch_loss", "model_computes_loss"]

LossFn = Callable[[Any, Any], torch.Tensor] | None


def model_computes_loss() -> None:
    """The loss to name when the model returns its own (the app's ``loss=from_model``)."""
    return None


def batch_loss(model: nn.Module, loss_fn: LossFn, inputs: Any, targets: Any) -> torch.Tensor:
    """The scalar loss of one batch; anything else is the user's to fix, said plainly."""
    if loss_fn is None:
        output = model(inputs, targets)
        loss = output["loss"] if isinstance(output, Mapping) and "loss" in output \
            else getattr(output, "loss", output)
        what = "The model (the loss is the model's own)"
    else:
        loss = loss_fn(model(inputs), targets)
        what = "The loss function"
    if not isinstance(loss, torch.Tensor) or loss.dim() != 0:
        shape = list(loss.shape) if isinstance(loss, torch.Tensor) else type(loss).__name__
        raise SettingError(
            f"{what} returned {shape}, not a scalar tensor: the range test needs one loss per "
            "batch. Reduce it to its mean (reduction='mean', torch's default), or, for a "
            "model that computes its loss, return it as a scalar or under the key 'loss'.")
    return loss
