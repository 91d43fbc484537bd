"""The model registry: ``name -> builder(num_classes, in_channels, input_size=32, **options)``.

Zoo nets (CIFAR-style, for 32x32 inputs) and small nets register themselves on import; any
torchvision classification model is reachable with ``source="torchvision"`` and any timm model
with ``source="timm"`` (the ``timm`` extra).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from lrexp.app.schema import ConfigError

if TYPE_CHECKING:
    from torch import nn

__all__ = ["UnknownModelError", "available", "build", "register"]

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


def build(
    name: str,
    num_classes: int,
    in_channels: int = 3,
    input_size: int = 32,
    source: str = "zoo",
    **options: Any,
) -> nn.Module:
    """Build net ``name`` from ``source`` ("zoo", "torchvision" or "timm")."""
    if source == "zoo":
        _load_zoo()
        if name not in _REGISTRY:
            raise UnknownModelError(
                f"Unknown net {name!r}. Registered nets: {', '.join(available())}. For a "
                "torchvision model use net=tv net.name=<name>; for timm, net=timm net.name=<name>."
            )
        _check_options(name, _REGISTRY[name], options)
        return _REGISTRY[name](num_classes, in_channels, input_size=input_size, **options)
    if source == "torchvision":
        return _torchvision_model(name, num_classes, in_channels, **options)
    if source == "timm":
        return _timm_model(name, num_classes, in_channels, **options)
    raise UnknownModelError(f"Unknown model source {source!r}; use zoo, torchvision or timm.")


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


def _torchvision_model(name: str, num_classes: int, in_channels: int, **options: Any) -> nn.Module:
    import torchvision

    names = torchvision.models.list_models(module=torchvision.models)
    if name not in names:
        raise UnknownModelError(
            f"torchvision has no classification model {name!r}. Some it has: "
            f"{', '.join(names[:25])}, ... (torchvision.models.list_models())."
        )
    model = torchvision.models.get_model(name, weights=None, num_classes=num_classes, **options)
    if in_channels != 3:
        from torch import nn

        # torchvision stems expect RGB: a learned 1x1 conv maps the dataset's channels to 3
        model = nn.Sequential(nn.Conv2d(in_channels, 3, kernel_size=1), model)
    return model


def _timm_model(name: str, num_classes: int, in_channels: int, **options: Any) -> nn.Module:
    try:
        import timm
    except ImportError:
        raise UnknownModelError(
            f"net {name!r} needs timm, which is not installed; install the extra with "
            "pip install 'lrexp[timm]'."
        ) from None
    if not timm.list_models(name):
        raise UnknownModelError(f"timm has no model {name!r} (see timm.list_models()).")
    return timm.create_model(name, pretrained=False, num_classes=num_classes,
                             in_chans=in_channels, **options)
