"""VGG-16 with BatchNorm for 32×32 inputs; a block is one conv-BN-ReLU (after its max-pool, if
any)."""

from __future__ import annotations

from torch import nn

from .base import Backbone, BlockOutputs, init_weights, pool, run_blocks, scaled

CFG16 = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]


class VGG(Backbone):
    """`mlp_head`: LA-OOD's classifier, (Linear 512→512, ReLU, Dropout 0.5) twice, 512→C."""

    laood_logits = False
    cotrain_layers = None  # co_train.py uses all 13 convs of VGG-16 at every step

    def __init__(
        self, cfg=CFG16, num_classes=10, width=1.0, normalization="hendrycks-cifar", mlp_head=False
    ):
        super().__init__(normalization)
        blocks, cin = [], 3
        for v in cfg:
            if v == "M":
                blocks[-1].append(nn.MaxPool2d(2))
                continue
            cout = scaled(v, width)
            blocks.append(
                nn.Sequential(
                    nn.Conv2d(cin, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()
                )
            )
            cin = cout
        self.blocks = nn.ModuleList(blocks)
        self.block_names = [f"conv{i + 1}" for i in range(len(blocks))]
        hidden = scaled(512, width)
        self.head = (
            nn.Sequential(
                nn.Linear(cin, hidden),
                nn.ReLU(),
                nn.Dropout(0.5),
                nn.Linear(hidden, hidden),
                nn.ReLU(),
                nn.Dropout(0.5),
            )
            if mlp_head
            else nn.Identity()
        )
        self.fc = nn.Linear(hidden if mlp_head else cin, num_classes)
        init_weights(self)
        if mlp_head:
            for m in [*self.head, self.fc]:
                if isinstance(m, nn.Linear):
                    nn.init.normal_(m.weight, 0, 0.01)

    def body(self, z):
        h, outs = run_blocks(z, self.blocks)
        feat = self.head(pool(h))
        return BlockOutputs(self.fc(feat), feat, outs)


def vgg16_bn(**kw):
    return VGG(CFG16, **kw)
