"""CIFAR-style ResNet-18/34: 3×3 stem, no max-pool, BasicBlocks [2,2,2,2] / [3,4,6,3]."""

from __future__ import annotations

from torch import nn

from .base import Backbone, BlockOutputs, init_weights, pool, resnet_stages, run_blocks, scaled


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )
        self.relu = nn.ReLU()

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class ResNet(Backbone):
    """`stem_padding` 1 keeps 32×32 maps; FeatureNorm's release used 2 (docs/featurenorm.md)."""

    def __init__(
        self, layers, num_classes=10, width=1.0, normalization="hendrycks-cifar", stem_padding=1
    ):
        super().__init__(normalization)
        chans = [scaled(c, width) for c in (64, 128, 256, 512)]
        self.stem = nn.Sequential(
            nn.Conv2d(3, chans[0], 3, 1, stem_padding, bias=False),
            nn.BatchNorm2d(chans[0]),
            nn.ReLU(),
        )
        self.blocks, self.block_names, cin = resnet_stages(BasicBlock, layers, chans, chans[0])
        self.fc = nn.Linear(cin, num_classes)
        init_weights(self)

    def body(self, z):
        h = self.stem(z)
        h, outs = run_blocks(h, self.blocks)
        feat = pool(h)
        return BlockOutputs(self.fc(feat), feat, outs)


def resnet18(**kw):
    return ResNet([2, 2, 2, 2], **kw)


def resnet34(**kw):
    return ResNet([3, 4, 6, 3], **kw)
