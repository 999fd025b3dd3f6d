"""The training processes' optimizer: torch's, minus the import of its compiler."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from tiny_training import raw_params

from pipeline.optimizers import make_optimizer
from pipeline.params import parse_params


def _model(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))


def _train(model: torch.nn.Module, optimizer: torch.optim.Optimizer, steps: int) -> None:
    data = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x = torch.randn(16, 6, generator=data)
        y = torch.randint(0, 3, (16,), generator=data)
        optimizer.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()


@pytest.mark.parametrize("name", ["adam", "adamw", "sgd"])
def test_the_eager_optimizer_steps_exactly_like_torchs(name):
    raw = raw_params()
    raw["train"]["optimizer"] |= {"name": name, "weight_decay": 0.01}
    params = parse_params(raw).train
    opt = params.optimizer
    ours_model, stock_model = _model(0), _model(0)
    ours = make_optimizer(ours_model, params)
    if name == "sgd":
        stock = torch.optim.SGD(stock_model.parameters(), lr=opt.lr, momentum=opt.momentum, weight_decay=0.01)
    else:
        cls = torch.optim.Adam if name == "adam" else torch.optim.AdamW
        stock = cls(stock_model.parameters(), lr=opt.lr, weight_decay=0.01)
    assert isinstance(ours, type(stock)) and type(ours) is not type(stock)

    _train(ours_model, ours, 5)
    _train(stock_model, stock, 5)
    for a, b in zip(ours_model.parameters(), stock_model.parameters(), strict=True):
        assert torch.equal(a, b)
        assert a.grad is not None and not a.grad.requires_grad  # the step ran without autograd
    state, stock_state = ours.state_dict(), stock.state_dict()
    assert state["param_groups"] == stock_state["param_groups"]
    for key, values in stock_state["state"].items():
        for field, value in values.items():
            assert torch.equal(torch.as_tensor(state["state"][key][field]), torch.as_tensor(value)), field

    # a resumed optimizer (load_state_dict) continues exactly like the stock one
    resumed_model = _model(0)
    resumed_model.load_state_dict(ours_model.state_dict())
    resumed = make_optimizer(resumed_model, params)
    resumed.load_state_dict(state)
    _train(resumed_model, resumed, 2)
    _train(stock_model, stock, 2)
    for a, b in zip(resumed_model.parameters(), stock_model.parameters(), strict=True):
        assert torch.equal(a, b)


def test_training_does_not_import_torch_dynamo():
    """torch's optimizer wrappers import torch._dynamo (1.2-1.6 s) in every training process, for a
    compiler the stages never run; a fit of the tiny model must not load it."""
    code = """
import sys
sys.path.insert(0, "tests")
import numpy as np
from tiny_training import tiny_params
from pipeline.models import config_for
from pipeline.rows import Rows
from pipeline.training import fit
params = tiny_params(epochs=2)
rng = np.random.default_rng(0)
x = rng.integers(0, 17, size=(60, 64)).astype(np.uint8)
y = rng.integers(0, 10, size=60)
fit(config_for(params.train.model, params.data, 64), Rows(x[:40], y[:40]), Rows(x[40:], y[40:]), params.train, params.data)
print(sorted(m for m in sys.modules if m.startswith(("torch._dynamo", "torch._inductor"))))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"
