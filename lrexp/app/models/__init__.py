"""The nets lrexp builds, each an ordinary ``_target_`` whose arguments are its node's keys.

``zoo_net(name, num_classes, in_channels, input_size, **options)``: the zoo's CIFAR-style and
small nets, from a registry they join on import (``register``, ``available``);
``torchvision_net``: any torchvision classification model, untrained or from its pretrained
``weights``; ``timm_net``: any timm model (the ``timm`` extra), ``pretrained`` or not.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from lrexp.app.errors import ConfigError

if TYPE_CHECKING:
    from torch import nn

__all__ = ["UnknownModelError", "WeightsUnavailableError", "available", "register", "timm_net",
           "torchvision_net", "unreachable", "zoo_net"]

Builder = Callable[..., "nn.Module"]
_REGISTRY: dict[str, Builder] = {}


class UnknownModelError(ValueError):
    """A model name that no registry knows; the message lists what is there."""


def register(name: str) -> Callable[[Builder], Builder]:
    def add(builder: Builder) -> Builder:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is registered twice")
        _REGISTRY[name] = builder
        return builder

    return add


def _load_zoo() -> None:
    from lrexp.app.models import cifar, small  # noqa: F401 - registers on import


def available() -> list[str]:
    """Names of the registered (zoo and small) nets."""
    _load_zoo()
    return sorted(_REGISTRY)


def zoo_net(name: str, num_classes: int, in_channels: int = 3, input_size: int = 32,
            **options: Any) -> nn.Module:
    """Net ``name`` of lrexp's zoo (``available()``); ``options`` are its own (mlp's hidden)."""
    _load_zoo()
    if name not in _REGISTRY:
        raise UnknownModelError(
            f"Unknown net {name!r}. Registered nets: {', '.join(available())}. For a "
            "torchvision model use net=tv net.name=<name>; for timm, net=timm net.name=<name>; "
            "for a model of your own, net._target_=<module.Class> (README: Your own project)."
        )
    _check_shapes(name, num_classes=num_classes, in_channels=in_channels, input_size=input_size)
    _check_options(name, _REGISTRY[name], options)
    return _REGISTRY[name](num_classes, in_channels, input_size=input_size, **options)


def _check_shapes(net: str, **shapes: Any) -> None:
    """The zoo nets read their shapes from data.*, which a dataset of one's own may not set."""
    for key, value in shapes.items():
        if not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
            raise ConfigError(
                f"Invalid setting net.{key}={value}: net {net!r} needs a positive integer. "
                f"It reads data.{key}, which the dataset option sets; a dataset of your own "
                f"may not: set data.{key}=<n> (or net.{key}=<n>).")


def _check_options(name: str, builder: Builder, options: dict[str, Any]) -> None:
    """An option the zoo net does not take would do nothing: name it instead."""
    parameters = inspect.signature(builder).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return  # the builder takes anything; it checks its own options
    taken = [key for key in parameters if key not in ("num_classes", "in_channels", "input_size")]
    unknown = sorted(set(options) - set(taken))
    if unknown:
        key = unknown[0]
        raise ConfigError(
            f"Invalid setting net.{key}={options[key]}: net {name!r} has no option {key!r} "
            f"(its options: {', '.join(taken) or 'none'}). Remove it, or choose a net that "
            "takes it."
        )


class WeightsUnavailableError(ConfigError):
    """Pretrained weights that are neither in their cache nor downloadable from here."""


def torchvision_net(name: str, num_classes: int, in_channels: int = 3,
                    weights: str | None = None, **options: Any) -> nn.Module:
    """Any torchvision classification model, untrained or from torchvision's ``weights``
    (``DEFAULT``, ``IMAGENET1K_V1`` or ``ResNet18_Weights.IMAGENET1K_V1``): the net is built
    for ``num_classes`` and every pretrained tensor of the same shape is loaded, so a head of
    another size stays freshly initialized."""
    import torchvision

    names = torchvision.models.list_models(module=torchvision.models)
    if name not in names:
        raise UnknownModelError(
            f"torchvision has no classification model {name!r}. Some it has: "
            f"{', '.join(names[:25])}, ... (torchvision.models.list_models())."
        )
    model = torchvision.models.get_model(name, weights=None, num_classes=num_classes, **options)
    if weights not in (None, "", "none"):
        from lrexp.app.weights import load_tensors

        state = _torchvision_state_dict(name, str(weights))
        load_tensors(model, state, source=f"torchvision {name} weights {weights}", strict=True)
    if in_channels != 3:
        _adapt_stem(model, in_channels, name)
    return model


def _adapt_stem(model: nn.Module, in_channels: int, name: str) -> None:
    """The first RGB convolution made to take ``in_channels``, in place, so the net keeps
    torchvision's module names (``freeze=[layer1]``, checkpoints of its layout). Its weights
    come from the RGB ones, as timm adapts a stem: summed over the colours for one channel,
    else repeated and scaled to keep the activations' size."""
    import copy
    import math

    import torch
    from torch import nn

    stems = [(path, module) for path, module in model.named_modules()
             if isinstance(module, nn.Conv2d) and module.in_channels == 3]
    if not stems:
        raise ConfigError(f"Invalid setting data.in_channels={in_channels}: torchvision's "
                          f"{name} has no RGB convolution to adapt; use 3-channel images.")
    path, conv = stems[0]
    adapted = copy.deepcopy(conv)  # its stride, padding, bias: all as they were
    with torch.no_grad():
        weight = conv.weight
        if in_channels == 1:
            new_weight = weight.sum(1, keepdim=True)
        else:
            new_weight = (weight.repeat(1, math.ceil(in_channels / 3), 1, 1)[:, :in_channels]
                          * (3 / in_channels))
    adapted.weight = nn.Parameter(new_weight.contiguous())
    adapted.in_channels = in_channels
    parent_path, _, attribute = path.rpartition(".")
    setattr(model.get_submodule(parent_path) if parent_path else model, attribute, adapted)


def _torchvision_state_dict(name: str, weights: str) -> dict[str, Any]:
    """torchvision's pretrained tensors from the torch hub cache, downloaded if missing; a
    machine that cannot download them is told where they belong."""
    import torch
    import torchvision

    enum = torchvision.models.get_model_weights(name)
    member = weights.rsplit(".", 1)[-1]
    try:
        chosen = enum[member] if member != "DEFAULT" else enum.DEFAULT
    except KeyError:
        raise WeightsUnavailableError(
            f"Invalid setting net.weights={weights}: torchvision's {name} has the weights "
            f"{', '.join(w.name for w in enum)} (or DEFAULT). Choose one, or net.weights=null "
            "for an untrained net.") from None
    cache = Path(torch.hub.get_dir()) / "checkpoints"
    file = cache / Path(urlparse(chosen.url).path).name
    problem = None if file.is_file() else unreachable(chosen.url)
    if problem is None:
        try:
            return dict(chosen.get_state_dict(progress=False, check_hash=False))
        except (OSError, ValueError) as error:  # URLError is an OSError
            problem = str(error)
    raise WeightsUnavailableError(
        f"The pretrained weights net.weights={weights} ({enum.__name__}.{chosen.name}) are not "
        f"in the torch hub cache ({file}) and could not be downloaded ({problem}). On a "
        f"machine with network access, download {chosen.url} and copy it to {file} "
        "(TORCH_HOME moves the cache), or start untrained with net.weights=null.")


def unreachable(url: str, timeout_s: float = 5.0) -> str | None:
    """Why ``url`` cannot be fetched from here, None if it can: asked once, briefly, before a
    download whose own retries would keep a machine without network waiting for a minute."""
    import urllib.error
    import urllib.request

    try:  # an opener of its own: it reads the proxy settings as they are now
        urllib.request.build_opener().open(urllib.request.Request(url, method="HEAD"),
                                           timeout=timeout_s).close()
    except urllib.error.HTTPError:
        return None  # the server answered (some refuse HEAD): the network is there
    except (OSError, ValueError) as error:
        return str(getattr(error, "reason", error))
    return None


def timm_net(name: str, num_classes: int, in_channels: int = 3, pretrained: bool = False,
             **options: Any) -> nn.Module:
    """Any timm model; ``pretrained`` loads timm's weights with a new head for
    ``num_classes`` (timm adapts the stem to ``in_channels``)."""
    try:
        import timm
    except ImportError:
        raise UnknownModelError(
            f"net {name!r} needs timm, which is not installed; install the extra with "
            "pip install 'lrexp[timm]'."
        ) from None
    if not timm.list_models(name.split(".")[0]):
        raise UnknownModelError(f"timm has no model {name!r} (see timm.list_models()).")
    problem = _timm_weights_problem(name) if pretrained else None
    if problem is None:
        try:
            return timm.create_model(name, pretrained=bool(pretrained), num_classes=num_classes,
                                     in_chans=in_channels, **options)
        except (OSError, RuntimeError, ValueError) as error:
            if not pretrained:
                raise
            problem = f"{type(error).__name__}: {str(error)[:200]}"
    from huggingface_hub.constants import HF_HUB_CACHE

    raise WeightsUnavailableError(
        f"timm's pretrained weights for {name!r} are not in the Hugging Face cache "
        f"({HF_HUB_CACHE}) and could not be downloaded ({problem}). On a machine with network "
        f"access run python -c \"import timm; timm.create_model('{name}', pretrained=True)\" "
        "and copy its folder of that cache here (HF_HOME moves it), or start untrained with "
        "net.pretrained=false.")


def _timm_weights_problem(name: str) -> str | None:
    """Why timm's weights for ``name`` cannot be had (None: cached, or the hub answers)."""
    import huggingface_hub
    import timm

    config = timm.models.get_pretrained_cfg(name)
    hub_id = getattr(config, "hf_hub_id", None) if config is not None else None
    if not hub_id:
        return None  # weights from a plain URL: timm's own download says what goes wrong
    for file in ("model.safetensors", "pytorch_model.bin"):
        if isinstance(huggingface_hub.try_to_load_from_cache(hub_id, file), str):
            return None
    return unreachable(f"{huggingface_hub.constants.ENDPOINT}/{hub_id}")
