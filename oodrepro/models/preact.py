"""WatermarkNN's ResNet-18 (docs/watermarknn.md): a post-activation stem, pre-activation
blocks without BatchNorm on the shortcut, and no final BN-ReLU before pooling.

Neither torchvision's ResNet-18 nor the usual PreActResNet-18; kept exact because the
paper's trigger and attack numbers were measured on it. Default PyTorch init.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from .base import Backbone, BlockOutputs, pool, resnet_stages, run_blocks, scaled


class PreActBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.shortcut = (
            nn.Conv2d(cin, cout, 1, stride, bias=False) if stride != 1 or cin != cout else None
        )

    def forward(self, x):
        o = F.relu(self.bn1(x))
        shortcut = self.shortcut(o) if self.shortcut is not None else x
        out = self.conv1(o)
        return self.conv2(F.relu(self.bn2(out))) + shortcut


class PreActResNetHybrid(Backbone):
    def __init__(
        self, layers=(2, 2, 2, 2), num_classes=10, width=1.0, normalization="wrong-std-cifar"
    ):
        super().__init__(normalization)
        chans = [scaled(c, width) for c in (64, 128, 256, 512)]
        self.stem = nn.Sequential(
            nn.Conv2d(3, chans[0], 3, 1, 1, bias=False), nn.BatchNorm2d(chans[0]), nn.ReLU()
        )
        self.blocks, self.block_names, cin = resnet_stages(PreActBlock, layers, chans, chans[0])
        self.fc = nn.Linear(cin, num_classes)

    def body(self, z):
        h, outs = run_blocks(self.stem(z), self.blocks)
        feat = pool(h)  # avg_pool2d(4) of the 4×4 map at 32×32 input
        return BlockOutputs(self.fc(feat), feat, outs)


def preact_resnet18_hybrid(**kw):
    return PreActResNetHybrid((2, 2, 2, 2), **kw)
