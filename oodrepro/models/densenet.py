"""DenseNet-BC (Huang et al.) for 32×32 inputs: depth 100, growth 12, compression 0.5.

`affine_bn=False` and `dropout` give the Unleashing Mask variant (non-affine BatchNorm,
dropout 0.3). Blocks are the three dense blocks and the two transitions.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import Backbone, BlockOutputs, init_weights, pool, run_blocks, scaled


class Bottleneck(nn.Module):
    def __init__(self, cin, growth, dropout, affine):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin, affine=affine)
        self.conv1 = nn.Conv2d(cin, 4 * growth, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(4 * growth, affine=affine)
        self.conv2 = nn.Conv2d(4 * growth, growth, 3, 1, 1, bias=False)
        self.dropout = dropout

    def forward(self, x):
        y = self.conv1(F.relu(self.bn1(x)))
        if self.dropout > 0:
            y = F.dropout(y, p=self.dropout, training=self.training)
        y = self.conv2(F.relu(self.bn2(y)))
        if self.dropout > 0:
            y = F.dropout(y, p=self.dropout, training=self.training)
        return torch.cat([x, y], 1)


class Transition(nn.Module):
    def __init__(self, cin, cout, dropout, affine):
        super().__init__()
        self.bn = nn.BatchNorm2d(cin, affine=affine)
        self.conv = nn.Conv2d(cin, cout, 1, bias=False)
        self.dropout = dropout

    def forward(self, x):
        y = self.conv(F.relu(self.bn(x)))
        if self.dropout > 0:
            y = F.dropout(y, p=self.dropout, training=self.training)
        return F.avg_pool2d(y, 2)


class DenseNet(Backbone):
    def __init__(
        self,
        depth=100,
        growth=12,
        num_classes=10,
        width=1.0,
        dropout=0.0,
        affine_bn=True,
        normalization="hendrycks-cifar",
    ):
        super().__init__(normalization)
        n = (depth - 4) // 6
        growth = scaled(growth, width)
        c = 2 * growth
        self.conv1 = nn.Conv2d(3, c, 3, 1, 1, bias=False)
        stages = []
        for stage in range(3):
            layers = []
            for _ in range(n):
                layers.append(Bottleneck(c, growth, dropout, affine_bn))
                c += growth
            stages.append(nn.Sequential(*layers))
            if stage < 2:
                cout = c // 2
                stages.append(Transition(c, cout, dropout, affine_bn))
                c = cout
        self.stages = nn.ModuleList(stages)
        self.block_names = ["dense1", "trans1", "dense2", "trans2", "dense3"]
        self.bn = nn.BatchNorm2d(c, affine=affine_bn)
        self.fc = nn.Linear(c, num_classes)
        init_weights(self)

    def body(self, z):
        h = self.conv1(z)
        h, outs = run_blocks(h, self.stages)
        feat = pool(F.relu(self.bn(h)))
        return BlockOutputs(self.fc(feat), feat, outs)


def densenet100(**kw):
    return DenseNet(depth=100, growth=12, **kw)
