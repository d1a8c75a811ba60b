"""The contract between stages: what the model expects and how to get an image there.

Torch-free on purpose: the client, the Triton preprocessing model and the train stage all
import it, so the same bytes become the same array everywhere.
"""

from contract.preprocess import (
    MODEL_INPUTS,
    ImageError,
    load_image,
    model_input,
    normalize,
    pixels,
    preprocess,
)
from contract.spec import ModelSpec, SpecError, load_spec, save_spec

__all__ = [
    "MODEL_INPUTS",
    "ImageError",
    "ModelSpec",
    "SpecError",
    "load_image",
    "load_spec",
    "model_input",
    "normalize",
    "pixels",
    "preprocess",
    "save_spec",
]
