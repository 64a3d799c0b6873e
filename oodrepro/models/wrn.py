"""Wide ResNet (Zagoruyko & Komodakis) as in the Hendrycks / Energy code: WRN-40-2 by default."""

from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from .base import Backbone, BlockOutputs, init_weights, pool, run_blocks, scaled


class PreActBlock(nn.Module):
    def __init__(self, cin, cout, stride, dropout):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.dropout = dropout
        self.equal = cin == cout and stride == 1
        self.shortcut = None if self.equal else nn.Conv2d(cin, cout, 1, stride, bias=False)

    def forward(self, x):
        o = F.relu(self.bn1(x))
        y = self.conv1(o)
        y = F.relu(self.bn2(y))
        if self.dropout > 0:
            y = F.dropout(y, p=self.dropout, training=self.training)
        y = self.conv2(y)
        return y + (x if self.equal else self.shortcut(o))


class WideResNet(Backbone):
    def __init__(
        self,
        depth=40,
        widen_factor=2,
        num_classes=10,
        width=1.0,
        dropout=0.0,
        normalization="hendrycks-cifar",
    ):
        super().__init__(normalization)
        if (depth - 4) % 6:
            raise ValueError("WRN depth must be 6n+4")
        n = (depth - 4) // 6
        chans = [scaled(16, width)] + [scaled(c * widen_factor, width) for c in (16, 32, 64)]
        self.conv1 = nn.Conv2d(3, chans[0], 3, 1, 1, bias=False)
        blocks, names, cin = [], [], chans[0]
        for stage in range(3):
            for i in range(n):
                blocks.append(
                    PreActBlock(cin, chans[stage + 1], 2 if (i == 0 and stage > 0) else 1, dropout)
                )
                names.append(f"block{stage + 1}.layer.{i}")
                cin = chans[stage + 1]
        self.blocks = nn.ModuleList(blocks)
        self.block_names = names
        self.bn = nn.BatchNorm2d(cin)
        self.fc = nn.Linear(cin, num_classes)
        init_weights(self)

    def body(self, z):
        h = self.conv1(z)
        h, outs = run_blocks(h, self.blocks)
        feat = pool(F.relu(self.bn(h)))
        return BlockOutputs(self.fc(feat), feat, outs)


def wrn40_2(**kw):
    return WideResNet(depth=40, widen_factor=2, **kw)


def wrn28_10(**kw):
    return WideResNet(depth=28, widen_factor=10, **kw)
