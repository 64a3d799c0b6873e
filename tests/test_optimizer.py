"""oodrepro.optimizer.SGD against torch.optim.SGD: the same parameters after every step, and
state dicts that load in either direction (resume states written before the switch still load)."""

import copy

import pytest
import torch

from oodrepro import models
from oodrepro.optimizer import SGD


def _steps(model, opt, n, seed=0):
    gen = torch.Generator().manual_seed(seed)
    for _ in range(n):
        x = torch.rand(6, 3, 32, 32, generator=gen)
        y = torch.randint(0, 4, (6,), generator=gen)
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()


@pytest.mark.parametrize(
    "options",
    [
        {"momentum": 0.9, "weight_decay": 5e-4},
        {"momentum": 0.9, "weight_decay": 5e-4, "nesterov": True},
        {"momentum": 0.0, "weight_decay": 0.0},
        {"momentum": 0.5, "weight_decay": 1e-4, "dampening": 0.1},
    ],
)
def test_same_parameters_as_torch_sgd_after_every_step(options):
    torch.manual_seed(0)
    ours = models.build("resnet18", num_classes=4, width=0.125, normalization="half")
    theirs = copy.deepcopy(ours)
    opt_ours, opt_theirs = (
        SGD(ours.parameters(), lr=0.05, **options),
        torch.optim.SGD(theirs.parameters(), lr=0.05, **options),
    )
    for step in range(4):
        _steps(ours, opt_ours, 1, seed=step)
        _steps(theirs, opt_theirs, 1, seed=step)
        for (name, a), b in zip(
            ours.state_dict().items(), theirs.state_dict().values(), strict=True
        ):
            assert torch.equal(a, b), (step, name)


def test_state_dicts_load_across_implementations():
    torch.manual_seed(1)
    start = models.build("resnet18", num_classes=4, width=0.125, normalization="half")
    a, b = copy.deepcopy(start), copy.deepcopy(start)
    torch_opt = torch.optim.SGD(a.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    _steps(a, torch_opt, 2)
    b.load_state_dict(a.state_dict())
    ours = SGD(b.parameters(), lr=0.3, momentum=0.9, weight_decay=5e-4)
    ours.load_state_dict(torch_opt.state_dict())  # a torch resume state, continued here
    assert ours.param_groups[0]["lr"] == pytest.approx(0.1)
    _steps(a, torch_opt, 2, seed=5)
    _steps(b, ours, 2, seed=5)
    assert all(
        torch.equal(x, y)
        for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    )
    back = torch.optim.SGD(copy.deepcopy(b).parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    back.load_state_dict(ours.state_dict())  # and the other way round
    assert len(back.state_dict()["state"]) == len(ours.state_dict()["state"]) > 0


def test_a_state_for_other_parameters_is_refused():
    small = models.build("resnet18", num_classes=4, width=0.125)
    opt = SGD(list(small.parameters())[:3], lr=0.1, momentum=0.9)
    with pytest.raises(ValueError, match="different set of parameters"):
        opt.load_state_dict(SGD(small.parameters(), lr=0.1).state_dict())


def test_using_it_does_not_import_dynamo():
    import subprocess
    import sys

    code = (
        "import sys, torch; from oodrepro.optimizer import SGD; m = torch.nn.Linear(3, 2); "
        "o = SGD(m.parameters(), lr=0.1, momentum=0.9); m(torch.ones(1, 3)).sum().backward(); "
        "o.step(); "
        "print('torch._dynamo' in sys.modules)"
    )
    assert (
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip()
        == "False"
    )
