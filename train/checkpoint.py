"""Checkpoints hold only tensors and plain types, so `torch.load(weights_only=True)` reads them."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from contract import ModelSpec
from contract.atomic import staged_file
from train.models import create_model


class CheckpointError(ValueError):
    """A checkpoint file that is missing, unreadable or not one of ours."""


def save_checkpoint(path: str | Path, payload: dict) -> Path:
    with staged_file(path) as tmp:
        torch.save(payload, tmp)
    return Path(path)


def read_checkpoint(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for a corrupt or foreign file
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"checkpoint {path} cannot be read safely: {first}") from None
    if not isinstance(blob, dict):
        raise CheckpointError(f"checkpoint {path} does not hold a dict")
    return blob


def state_dict_of(blob: dict) -> dict[str, torch.Tensor]:
    """Our checkpoints keep weights under 'state_dict'; a bare state_dict is accepted too."""
    sd = blob.get("state_dict", blob)
    tensors = {k: v for k, v in sd.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise CheckpointError("checkpoint holds no tensors")
    return tensors


def gray_stem(own: torch.Tensor, theirs: torch.Tensor) -> torch.Tensor | None:
    """An RGB stem convolution summed over its input channels, for a 1-channel model.

    With the same mean and std on every channel, a gray image replicated to RGB gives the
    RGB stem exactly what the summed kernel gives the gray image (zero padding included):
    the pretrained features survive, with a third of the input to decode, send and convolve.
    """
    rgb_of_gray = own.ndim == theirs.ndim == 4 and (own.shape[1], theirs.shape[1]) == (1, 3)
    if rgb_of_gray and own.shape[0] == theirs.shape[0] and own.shape[2:] == theirs.shape[2:]:
        return theirs.sum(dim=1, keepdim=True)
    return None


def load_matching(model: nn.Module, source: dict[str, torch.Tensor]) -> tuple[list, list, list]:
    """Copy tensors whose name and shape match (RGB stems summed for gray models).

    Returns (loaded, kept fresh, summed over RGB) names.
    """
    own = model.state_dict()
    loaded, adapted = [], []
    for k, v in source.items():
        if k not in own:
            continue
        if own[k].shape != v.shape:
            v = gray_stem(own[k], v)
            if v is None:
                continue
            adapted.append(k)
        own[k] = v
        loaded.append(k)
    model.load_state_dict(own)
    return loaded, sorted(set(own) - set(loaded)), adapted


def model_from_checkpoint(blob: dict, spec: ModelSpec) -> nn.Module:
    """Rebuild the architecture named in the checkpoint and load its weights strictly."""
    arch = blob.get("arch")
    if arch != spec.arch:
        raise CheckpointError(f"checkpoint arch {arch!r} does not match spec arch {spec.arch!r}")
    model = create_model(arch, spec.num_classes, spec.channels)
    try:
        model.load_state_dict(state_dict_of(blob))
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise CheckpointError(f"checkpoint does not match the spec's model: {first}") from None
    return model.eval()
