"""Model registry: `create_model(name, num_classes, in_channels)`; names in MODELS."""

from train.models import efficientnet_lite, resnet  # noqa: F401  (register the architectures)
from train.models.registry import MODELS, create_model, register_model

__all__ = ["MODELS", "create_model", "register_model"]
