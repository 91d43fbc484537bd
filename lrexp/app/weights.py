"""Pretrained weights into a built net: a checkpoint file (``checkpoint=PATH``) or a library's
weights (torchvision's, through ``lrexp.app.models.torchvision_net``), and where they came from.

A tensor whose shape differs from the net's is left as the net initialized it: that is the
classifier head when the data has another number of classes than the checkpoint was trained on.
Keys that do not match at all are refused (``strict``) with the first few named on each side.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lrexp.app.errors import ConfigError

__all__ = ["CheckpointError", "LoadReport", "WeightsSource", "load_checkpoint", "load_tensors",
           "weights_source"]

log = logging.getLogger(__name__)

# Where trainers keep the model's tensors inside a checkpoint dict (Lightning: state_dict;
# the PyTorch tutorials: model_state_dict; many scripts: model or net).
STATE_DICT_KEYS = ("state_dict", "model_state_dict", "model", "net", "module", "weights")
SHOWN_KEYS = 5  # how many missing or unexpected keys an error names


class CheckpointError(ConfigError):
    """A checkpoint that cannot be read or does not fit the net."""


@dataclass(frozen=True)
class WeightsSource:
    """Where the net's starting weights came from: ``kind`` is none, checkpoint, torchvision,
    timm or net (a user's _target_ that says it loads weights), ``detail`` the path or name."""

    kind: str = "none"
    detail: str = ""

    @property
    def pretrained(self) -> bool:
        return self.kind != "none"

    def __str__(self) -> str:
        return self.kind if not self.detail else f"{self.kind}: {self.detail}"


def weights_source(net: Mapping[str, Any], checkpoint: str | None) -> WeightsSource:
    """The weights a net config asks for: a checkpoint wins over the net's own weights."""
    if checkpoint:
        return WeightsSource("checkpoint", str(Path(checkpoint).expanduser().resolve()))
    target = str(net.get("_target_", ""))
    weights = net.get("weights")
    if weights not in (None, "", "none", False):
        kind = "torchvision" if target.endswith("torchvision_net") else "net"
        return WeightsSource(kind, f"{net.get('name', target)} {weights}")
    if net.get("pretrained") is True:
        kind = "timm" if target.endswith("timm_net") else "net"
        return WeightsSource(kind, f"{net.get('name', target)} pretrained")
    return WeightsSource()


@dataclass
class LoadReport:
    loaded: list[str] = field(default_factory=list)
    resized: list[str] = field(default_factory=list)  # left as initialized: another shape
    missing: list[str] = field(default_factory=list)  # in the net, not in the checkpoint
    unexpected: list[str] = field(default_factory=list)  # in the checkpoint, not in the net


def load_checkpoint(model: Any, path: str, strict: bool = True, prefix: str = "",
                    trusted: bool = False) -> LoadReport:
    """Load the checkpoint file at ``path`` into ``model`` (see the module's docstring);
    ``trusted``: a file holding Python objects besides tensors may be unpickled in full."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise CheckpointError(
            f"Invalid setting checkpoint={path}: there is no file at {file.resolve()}. Point "
            "checkpoint at a file saved with torch.save (a state dict or a checkpoint dict).")
    state = _state_dict(_read(file, trusted), file)
    state = _strip(state, prefix, model, file)
    return load_tensors(model, state, source=f"checkpoint {file}", strict=strict)


def _read(file: Path, trusted: bool) -> Any:
    import pickle

    import torch

    try:
        return torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        text = str(error).lower()  # torch names Python objects it will not unpickle so
        if "can still be loaded" not in text and "unsupported global" not in text:
            raise CheckpointError(
                f"The checkpoint {file} cannot be read by torch.load: it is not a file "
                "torch.save wrote, or it is damaged. Save it with torch.save(model.state_dict(), "
                "path) or point checkpoint at another file.") from None
        if not trusted:  # unpickling Python objects runs code: only for a file one trusts
            raise CheckpointError(
                f"The checkpoint {file} holds Python objects besides tensors, which torch.load "
                "does not unpickle by default (unpickling can run code). If you trust the file, "
                "set checkpoint_trusted=true; or load it yourself and save the model's "
                "state_dict() with torch.save.") from None
        log.warning("%s holds Python objects besides tensors; unpickling it in full "
                    "(checkpoint_trusted=true).", file)
        try:
            return torch.load(file, map_location="cpu", weights_only=False)
        except Exception as error:  # noqa: BLE001 - any unpickling failure is the file's
            raise CheckpointError(_unreadable(file, error)) from None
    except (RuntimeError, OSError, EOFError) as error:
        raise CheckpointError(_unreadable(file, error)) from None


def _unreadable(file: Path, error: BaseException) -> str:
    return (f"The checkpoint {file} cannot be read by torch.load ({type(error).__name__}: "
            f"{str(error)[:200]}). Save it with torch.save(model.state_dict(), path) or point "
            "checkpoint at another file.")


def _state_dict(content: Any, file: Path) -> dict[str, Any]:
    """The tensors of a state dict, of a checkpoint dict holding one, or of a saved module."""
    import torch

    if isinstance(content, torch.nn.Module):
        return dict(content.state_dict())
    if isinstance(content, Mapping):
        if content and all(isinstance(value, torch.Tensor) for value in content.values()):
            return dict(content)
        for key in STATE_DICT_KEYS:
            if key in content:
                return _state_dict(content[key], file)
    keys = sorted(content)[:8] if isinstance(content, Mapping) else type(content).__name__
    raise CheckpointError(
        f"The checkpoint {file} holds no state dict (found: {keys}). lrexp reads a state dict, "
        f"or a dict that keeps one under one of {', '.join(STATE_DICT_KEYS)}, or a saved module.")


def _strip(state: dict[str, Any], prefix: str, model: Any, file: Path) -> dict[str, Any]:
    """Without ``prefix`` (checkpoint_prefix); and without a first name every key shares that
    the net does not have (``module.`` of DDP, ``model.`` or ``net.`` of a Lightning module)."""
    if prefix:
        prefix = prefix if prefix.endswith(".") else prefix + "."
        if not any(key.startswith(prefix) for key in state):
            raise CheckpointError(
                f"Invalid setting checkpoint_prefix={prefix.rstrip('.')}: no key of {file} "
                f"starts with it (its first keys: {', '.join(list(state)[:SHOWN_KEYS])}).")
        return {key[len(prefix):]: value for key, value in state.items()
                if key.startswith(prefix)}
    firsts = {key.split(".", 1)[0] for key in state}
    own = {key.split(".", 1)[0] for key in model.state_dict()}
    if len(firsts) == 1 and all("." in key for key in state) and not firsts & own:
        shared = firsts.pop() + "."
        log.info("Checkpoint keys start with %r, which the net has not: stripped it.", shared)
        return {key[len(shared):]: value for key, value in state.items()}
    return state


def load_tensors(model: Any, state: Mapping[str, Any], source: str,
                 strict: bool = True) -> LoadReport:
    """Copy ``state``'s tensors into ``model``; a tensor of another shape stays as initialized
    (a new head). ``strict``: missing or unexpected keys are an error."""
    own = model.state_dict()
    report = LoadReport(missing=[key for key in own if key not in state],
                        unexpected=[key for key in state if key not in own])
    fitting = {}
    for key, value in state.items():
        if key not in own:
            continue
        if tuple(value.shape) == tuple(own[key].shape):
            fitting[key] = value
            report.loaded.append(key)
        else:
            report.resized.append(f"{key} {list(value.shape)} -> {list(own[key].shape)}")
    if (strict and (report.missing or report.unexpected)) or not report.loaded:
        raise CheckpointError(_mismatch(source, report))
    model.load_state_dict(fitting, strict=False)
    log.info("Loaded %d tensors from %s%s%s", len(report.loaded), source,
             f"; left as initialized (another shape: a new head): {', '.join(report.resized)}"
             if report.resized else "",
             f"; not in the checkpoint: {_first(report.missing)}" if report.missing else "")
    return report


def _mismatch(source: str, report: LoadReport) -> str:
    parts = []
    if report.missing:
        parts.append(f"{len(report.missing)} keys of the net are not in it ("
                     f"{_first(report.missing)})")
    if report.unexpected:
        parts.append(f"{len(report.unexpected)} of its keys are not in the net ("
                     f"{_first(report.unexpected)})")
    if not report.loaded and report.resized:
        parts.append(f"every shared key has another shape ({_first(report.resized)})")
    fix = ("Set checkpoint_prefix=<prefix> if its keys carry one, build the net the checkpoint "
           "was saved from, or set checkpoint_strict=false to load the keys that match.")
    if not report.loaded:
        fix = ("No tensor of it fits this net: is it the checkpoint of another architecture? "
               "Set checkpoint_prefix=<prefix> if its keys carry one.")
    return f"The {source} does not fit the net: {'; '.join(parts) or 'it is empty'}. {fix}"


def _first(keys: list[str]) -> str:
    shown = ", ".join(keys[:SHOWN_KEYS])
    return shown + (f", ... ({len(keys) - SHOWN_KEYS} more)" if len(keys) > SHOWN_KEYS else "")
