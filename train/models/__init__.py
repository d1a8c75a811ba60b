"""Model registry: `create_model(name, num_classes, in_channels)`; names in MODELS."""

from train.models import resnet  # noqa: F401  (registers the architectures)
from train.models.registry import MODELS, create_model, register_model

__all__ = ["MODELS", "create_model", "register_model"]
