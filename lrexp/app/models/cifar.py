"""CIFAR-style nets for 32x32 inputs: a 3x3 stem and no early downsampling, as in the
CIFAR literature (VGG with BatchNorm; ResNet, MobileNetV2 and DenseNet with CIFAR stems).
Every builder takes (num_classes, in_channels, input_size); global pooling makes them work for
any input of at least 32x32, and a VGG refuses a smaller one (its pools would shrink it away)."""

from __future__ import annotations

import torch
from torch import nn

from lrexp.app.errors import ConfigError
from lrexp.app.models import register

# -- VGG ---------------------------------------------------------------------------------------
_VGG_LAYERS = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg13": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
              512, 512, 512, "M"],
    "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
              512, 512, 512, 512, "M"],
}


class VGG(nn.Module):
    def __init__(self, layers: list, num_classes: int, in_channels: int) -> None:
        super().__init__()
        modules: list[nn.Module] = []
        channels = in_channels
        for item in layers:
            if item == "M":
                modules.append(nn.MaxPool2d(2))
            else:
                modules += [nn.Conv2d(channels, item, 3, padding=1, bias=False),
                            nn.BatchNorm2d(item), nn.ReLU(inplace=True)]
                channels = item
        self.features = nn.Sequential(*modules, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.classifier = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def _register_vgg(name: str) -> None:
    @register(name)
    def build(num_classes: int, in_channels: int, input_size: int = 32) -> nn.Module:
        pools = _VGG_LAYERS[name].count("M")
        if input_size < 2 ** pools:  # each pool halves the image; below 1x1 torch fails mid-test
            raise ConfigError(
                f"Invalid input size {input_size}x{input_size} for net '{name}': its {pools} "
                f"max-pools halve the image {pools} times, so it needs images of at least "
                f"{2 ** pools}x{2 ** pools}. Set dataset.image_size={2 ** pools} or more, or "
                "choose a net that pools globally (simple_cnn, resnet18, mobilenetv2).")
        return VGG(_VGG_LAYERS[name], num_classes, in_channels)


for _name in _VGG_LAYERS:
    _register_vgg(_name)


# -- ResNet ------------------------------------------------------------------------------------
class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(cin, planes, 3, stride, 1, bias=False), nn.BatchNorm2d(planes),
            nn.ReLU(inplace=True),
            nn.Conv2d(planes, planes, 3, 1, 1, bias=False), nn.BatchNorm2d(planes),
        )
        self.shortcut = _shortcut(cin, planes * self.expansion, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.shortcut(x))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        out = planes * self.expansion
        self.body = nn.Sequential(
            nn.Conv2d(cin, planes, 1, bias=False), nn.BatchNorm2d(planes), nn.ReLU(inplace=True),
            nn.Conv2d(planes, planes, 3, stride, 1, bias=False), nn.BatchNorm2d(planes),
            nn.ReLU(inplace=True),
            nn.Conv2d(planes, out, 1, bias=False), nn.BatchNorm2d(out),
        )
        self.shortcut = _shortcut(cin, out, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.shortcut(x))


def _shortcut(cin: int, cout: int, stride: int) -> nn.Module:
    if stride == 1 and cin == cout:
        return nn.Identity()
    return nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))


class ResNet(nn.Module):
    def __init__(self, block, counts: list[int], num_classes: int, in_channels: int) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False),
                                  nn.BatchNorm2d(64), nn.ReLU(inplace=True))
        stages, cin = [], 64
        for index, (planes, count) in enumerate(zip((64, 128, 256, 512), counts)):
            for block_index in range(count):
                stride = 2 if index > 0 and block_index == 0 else 1
                stages.append(block(cin, planes, stride))
                cin = planes * block.expansion
        self.stages = nn.Sequential(*stages)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                  nn.Linear(cin, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stages(self.stem(x)))


_RESNETS = {"resnet18": (BasicBlock, [2, 2, 2, 2]), "resnet34": (BasicBlock, [3, 4, 6, 3]),
            "resnet50": (Bottleneck, [3, 4, 6, 3])}


def _register_resnet(name: str) -> None:
    @register(name)
    def build(num_classes: int, in_channels: int, input_size: int = 32) -> nn.Module:
        block, counts = _RESNETS[name]
        return ResNet(block, counts, num_classes, in_channels)


for _name in _RESNETS:
    _register_resnet(_name)


# -- MobileNetV2 -------------------------------------------------------------------------------
class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, expansion: int, stride: int) -> None:
        super().__init__()
        hidden = cin * expansion
        self.use_residual = stride == 1 and cin == cout
        layers: list[nn.Module] = []
        if expansion != 1:
            layers += [nn.Conv2d(cin, hidden, 1, bias=False), nn.BatchNorm2d(hidden),
                       nn.ReLU6(inplace=True)]
        layers += [nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
                   nn.BatchNorm2d(hidden), nn.ReLU6(inplace=True),
                   nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x) if self.use_residual else self.body(x)


# (expansion, channels, repeats, stride); the CIFAR variant keeps stride 1 in the second stage
# and in the stem so that 32x32 inputs are not reduced to 1x1 too early.
_MOBILENET_STAGES = [(1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                     (6, 160, 3, 2), (6, 320, 1, 1)]


@register("mobilenetv2")
def mobilenetv2(num_classes: int, in_channels: int, input_size: int = 32) -> nn.Module:
    layers: list[nn.Module] = [nn.Conv2d(in_channels, 32, 3, 1, 1, bias=False),
                               nn.BatchNorm2d(32), nn.ReLU6(inplace=True)]
    cin = 32
    for expansion, cout, repeats, stride in _MOBILENET_STAGES:
        for index in range(repeats):
            layers.append(InvertedResidual(cin, cout, expansion, stride if index == 0 else 1))
            cin = cout
    layers += [nn.Conv2d(cin, 1280, 1, bias=False), nn.BatchNorm2d(1280), nn.ReLU6(inplace=True),
               nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(1280, num_classes)]
    return nn.Sequential(*layers)


# -- DenseNet-121 ------------------------------------------------------------------------------
class DenseLayer(nn.Module):
    def __init__(self, cin: int, growth: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.BatchNorm2d(cin), nn.ReLU(inplace=True), nn.Conv2d(cin, 4 * growth, 1, bias=False),
            nn.BatchNorm2d(4 * growth), nn.ReLU(inplace=True),
            nn.Conv2d(4 * growth, growth, 3, padding=1, bias=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.body(x)], 1)


@register("densenet121")
def densenet121(num_classes: int, in_channels: int, input_size: int = 32,
                growth: int = 32) -> nn.Module:
    cin = 2 * growth
    layers: list[nn.Module] = [nn.Conv2d(in_channels, cin, 3, padding=1, bias=False)]
    for index, count in enumerate((6, 12, 24, 16)):
        for _ in range(count):
            layers.append(DenseLayer(cin, growth))
            cin += growth
        if index < 3:  # transition: halve channels and resolution
            layers += [nn.BatchNorm2d(cin), nn.ReLU(inplace=True),
                       nn.Conv2d(cin, cin // 2, 1, bias=False), nn.AvgPool2d(2)]
            cin //= 2
    layers += [nn.BatchNorm2d(cin), nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
               nn.Linear(cin, num_classes)]
    return nn.Sequential(*layers)
