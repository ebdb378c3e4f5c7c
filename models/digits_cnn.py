"""digits-cnn: a small MobileNet-style convolutional classifier for the 8x8 digits."""

from collections import OrderedDict

import torch
from torch import nn

from lowbit.models.digits_bundle import digits_model
from lowbit.models.training import TrainConfig

TRAIN_CONFIG = TrainConfig(epochs=30, batch_size=64, lr=1e-2, weight_decay=1e-4, seed=0)


class DigitsCNN(nn.Module):
    """Conv-BN-ReLU, depthwise conv-BN-ReLU6, pointwise conv-BN-ReLU, max-pool, conv-BN-ReLU,
    global average pool, linear."""

    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            OrderedDict(
                stem=nn.Conv2d(1, 16, 3, padding=1, bias=False),
                stem_bn=nn.BatchNorm2d(16),
                stem_relu=nn.ReLU(),
                depthwise=nn.Conv2d(16, 16, 3, padding=1, groups=16, bias=False),
                depthwise_bn=nn.BatchNorm2d(16),
                depthwise_relu6=nn.ReLU6(),
                pointwise=nn.Conv2d(16, 32, 1, bias=False),
                pointwise_bn=nn.BatchNorm2d(32),
                pointwise_relu=nn.ReLU(),
                pool=nn.MaxPool2d(2),
                conv=nn.Conv2d(32, 64, 3, padding=1, bias=False),
                conv_bn=nn.BatchNorm2d(64),
                conv_relu=nn.ReLU(),
                gap=nn.AdaptiveAvgPool2d(1),
                flatten=nn.Flatten(),
                classifier=nn.Linear(64, 10),
            )
        )

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.layers(image)


MODEL = digits_model(
    "digits-cnn",
    "MobileNet-style CNN (depthwise/pointwise convs, batch norm, ReLU/ReLU6, pooling), 8x8 digits",
    DigitsCNN,
    TRAIN_CONFIG,
)
