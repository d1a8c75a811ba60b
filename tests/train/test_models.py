import pytest
import torch

from contract.config import ConfigError
from train.models import MODELS, create_model
from train.models.registry import register_model


@pytest.mark.parametrize(
    "name, params",
    [("resnet18", 11_689_512), ("resnet34", 21_797_672), ("resnet50", 25_557_032)],
)
def test_torchvision_parameter_counts(name, params):
    model = create_model(name, num_classes=1000)
    assert sum(p.numel() for p in model.parameters()) == params


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("channels", [1, 3])
def test_output_shape(name, channels):
    size = 32 if name == "resnet_small" else 64
    model = create_model(name, num_classes=7, in_channels=channels).eval()
    with torch.no_grad():
        out = model(torch.randn(2, channels, size, size))
    assert out.shape == (2, 7)


def test_torchvision_state_dict_names():
    keys = set(create_model("resnet18", 1000).state_dict())
    expected = {
        "conv1.weight", "bn1.running_mean", "layer4.1.bn2.weight", "fc.bias",
        "layer2.0.downsample.0.weight", "layer2.0.downsample.1.num_batches_tracked",
    }  # fmt: skip
    assert expected <= keys


def test_unknown_model():
    with pytest.raises(ConfigError, match="unknown model 'resnet9'"):
        create_model("resnet9", 10)


def test_a_name_registered_twice_is_refused():
    def resnet18(num_classes, in_channels=3):  # same name as the real one
        raise AssertionError("must never replace the registered resnet18")

    with pytest.raises(RuntimeError, match="'resnet18' is registered twice"):
        register_model(resnet18)
    assert MODELS["resnet18"] is not resnet18
