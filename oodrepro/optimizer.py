"""SGD with momentum, weight decay and Nesterov, computed as `torch.optim.SGD` computes it.

Why not torch.optim's: its optimisers import `torch._dynamo` on first use, 1.5–2 s of a 2-core
CPU in every training job (as long as a short fine-tune on the offline benchmark). This class
does the same arithmetic, step for step (tests compare both bit for bit), and reads and writes
the same `state_dict` layout, so a resume state written by either loads in the other.

Per parameter p with gradient g: d = g + λ·p; b ← d on the first step, else b ← μ·b + (1 − τ)·d;
the step is d + μ·b with Nesterov, else b; p ← p − lr·step.
"""

from __future__ import annotations

import torch


class SGD:
    def __init__(
        self,
        params,
        lr: float,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
        dampening: float = 0.0,
    ):
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum needs momentum > 0 and no dampening")
        self.param_groups = [
            {
                "params": list(params),
                "lr": lr,
                "momentum": momentum,
                "dampening": dampening,
                "weight_decay": weight_decay,
                "nesterov": nesterov,
            }
        ]
        self.buffers: dict[int, torch.Tensor] = {}  # momentum buffer by parameter position

    def _params(self):
        return [p for group in self.param_groups for p in group["params"]]

    @torch.no_grad()
    def step(self) -> None:
        i = 0
        for group in self.param_groups:
            mu, wd = group["momentum"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is not None:
                    d = p.grad if wd == 0 else p.grad.add(p, alpha=wd)
                    if mu != 0:
                        buf = self.buffers.get(i)
                        if buf is None:
                            buf = self.buffers[i] = torch.clone(d).detach()
                        else:
                            buf.mul_(mu).add_(d, alpha=1 - group["dampening"])
                        d = d.add(buf, alpha=mu) if group["nesterov"] else buf
                    p.add_(d, alpha=-group["lr"])
                i += 1

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self._params():
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad.detach_().zero_()

    def state_dict(self) -> dict:
        groups, start = [], 0
        for group in self.param_groups:
            n = len(group["params"])
            settings = {k: v for k, v in group.items() if k != "params"}
            groups.append({**settings, "params": list(range(start, start + n))})
            start += n
        return {
            "state": {i: {"momentum_buffer": b} for i, b in self.buffers.items()},
            "param_groups": groups,
        }

    def load_state_dict(self, state: dict) -> None:
        if [len(g["params"]) for g in state["param_groups"]] != [
            len(g["params"]) for g in self.param_groups
        ]:
            raise ValueError("the optimiser state belongs to a different set of parameters")
        params = self._params()
        for group, saved in zip(self.param_groups, state["param_groups"], strict=True):
            group.update(
                {k: saved[k] for k in ("lr", "momentum", "dampening", "weight_decay", "nesterov")}
            )
        self.buffers = {
            int(i): s["momentum_buffer"].to(params[int(i)].device).clone()
            for i, s in state["state"].items()
            if s.get("momentum_buffer") is not None
        }
