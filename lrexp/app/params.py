"""Which parameters train, and at which LR: ``freeze`` and ``param_groups`` by module-name prefix.

A prefix names a module path as ``model.named_parameters()`` spells it (``backbone``,
``encoder.layers.0``, ``fc``); it matches that module and everything inside it, never a sibling
whose name merely starts the same (``fc`` is not ``fc2``). A parameter named by several groups
goes to the longest prefix. The parameters no group names come first (a group of their own even
when there are none), at the scheduled LR; the range test keeps every other group's LR ratio to
the first group, so each group trains at ``lr_mult`` x the scheduled LR.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from lrexp.app.errors import ConfigError

__all__ = ["GroupSpec", "freeze", "param_groups"]


@dataclass(frozen=True)
class GroupSpec:
    prefix: str
    lr_mult: float = 1.0
    weight_decay: float | None = None


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def _top_modules(model: Any) -> str:
    """The net's modules two levels deep (``backbone``, ``backbone.0``, ...), the first 16."""
    names = [name for name, _ in model.named_modules() if name and name.count(".") < 2]
    return ", ".join(names[:16]) + (", ..." if len(names) > 16 else "")


def _check_matches(model: Any, key: str, prefix: str, names: Sequence[str]) -> None:
    if not any(_under(name, prefix) for name in names):
        raise ConfigError(
            f"Invalid setting {key}={prefix}: no parameter of the net is under a module of that "
            f"name. Its modules: {_top_modules(model)} (full names: "
            "model.named_parameters()).")


def freeze(model: Any, prefixes: Sequence[str]) -> int:
    """Turn off the gradients of the parameters under ``prefixes``; how many were frozen."""
    names = [name for name, _ in model.named_parameters()]
    frozen = 0
    for prefix in prefixes:
        _check_matches(model, "freeze", prefix, names)
        for name, parameter in model.named_parameters():
            if _under(name, prefix):
                parameter.requires_grad_(False)
                frozen += 1
    return frozen


def param_groups(model: Any, groups: Sequence[GroupSpec], lr: float) -> list[dict[str, Any]]:
    """torch param groups: the trainable parameters no group names (at ``lr``) first, then one
    per spec (at ``lr * lr_mult``, with its weight decay when it sets one). Without specs, one
    group of every trainable parameter."""
    trainable = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    if not trainable:
        raise ConfigError("Every parameter of the net is frozen (freeze=...): nothing would "
                          "train. Freeze fewer modules.")
    if not groups:
        return [{"params": [p for _, p in trainable], "lr": lr}]
    names = [name for name, _ in trainable]
    prefixes = [spec.prefix for spec in groups]
    for index, spec in enumerate(groups):
        if prefixes.index(spec.prefix) != index:
            raise ConfigError(
                f"Invalid setting param_groups[{index}].prefix={spec.prefix}: "
                f"param_groups[{prefixes.index(spec.prefix)}] names the same prefix. Give each "
                "prefix one group.")
        _check_matches(model, f"param_groups[{index}].prefix", spec.prefix, names)
    chosen: dict[int, list[Any]] = {index: [] for index in range(-1, len(groups))}
    for name, parameter in trainable:
        matches = [(len(spec.prefix), index) for index, spec in enumerate(groups)
                   if _under(name, spec.prefix)]
        chosen[max(matches)[1] if matches else -1].append(parameter)
    # The first group follows the schedule and the others keep their ratio to it: the rest
    # comes first, at lr_mult 1, even when empty, so the suggested LR is the lr_mult-1 LR.
    result: list[dict[str, Any]] = [{"params": chosen[-1], "lr": lr}]
    for index, spec in enumerate(groups):
        if not chosen[index]:
            raise ConfigError(
                f"Invalid setting param_groups[{index}].prefix={spec.prefix}: a longer prefix "
                "takes all its parameters, so its group would be empty. Remove one of them.")
        group: dict[str, Any] = {"params": chosen[index], "lr": lr * spec.lr_mult}
        if spec.weight_decay is not None:
            group["weight_decay"] = float(spec.weight_decay)
        result.append(group)
    return result
