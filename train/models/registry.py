"""A name -> constructor table, as in timm, so configs and checkpoints name architectures."""

from collections.abc import Callable

from torch import nn

from contract.config import ConfigError

MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    # A second definition under a taken name would silently replace the first.
    if fn.__name__ in MODELS:
        raise RuntimeError(f"model {fn.__name__!r} is registered twice")
    MODELS[fn.__name__] = fn
    return fn


def create_model(name: str, num_classes: int, in_channels: int = 3) -> nn.Module:
    if name not in MODELS:
        raise ConfigError(f"unknown model {name!r}; known: {', '.join(sorted(MODELS))}")
    return MODELS[name](num_classes=num_classes, in_channels=in_channels)
