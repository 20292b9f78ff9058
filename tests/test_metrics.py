"""The metrics the module reports (accuracy, MSE in the target's units), checked against
torchmetrics' own for one member and for several. The module computes them itself: for K members
at once, and under DDP as sums reduced in the same collective as J (torchmetrics' functional
metrics take one member per call, about 2.5x the time of the module's for one member)."""

import pytest
import torch
from torchmetrics.functional import mean_squared_error
from torchmetrics.functional.classification import multiclass_accuracy

from mlp_torch import MLPModule
from mlp_torch.data import from_unit_range


def _members(k: int, **settings) -> MLPModule:
    modules = [MLPModule(seed=s, dtype="float64", **settings).double() for s in range(k)]
    return modules[0] if k == 1 else MLPModule.of_members(modules, [f"m{s}" for s in range(k)])


@pytest.mark.parametrize("k", [1, 3])
def test_accuracy_equals_torchmetrics(k):
    module = _members(k, hidden_sizes=[7], n_inputs=5, n_outputs=4)
    x = torch.randn(50, 5, dtype=torch.float64)
    y = torch.eye(4, dtype=torch.float64)[
        torch.randint(0, 4, (50,), generator=torch.Generator().manual_seed(0))
    ]
    xs, ys = (x, y) if k == 1 else (x.expand(k, -1, -1), y.expand(k, -1, -1))
    acc = module.evaluate(xs, ys)["acc"].reshape(k)
    y_hat = module.net(xs).reshape(k, 50, 4)
    expected = [multiclass_accuracy(y_hat[m], y.argmax(-1), num_classes=4, average="micro") for m in range(k)]
    assert 0 < max(acc)  # torchmetrics answers in float32: compare the counts of right answers
    assert torch.equal((acc * 50).round(), (torch.stack(expected).double() * 50).round())


@pytest.mark.parametrize("k", [1, 3])
def test_mse_in_the_targets_units_equals_torchmetrics(k):
    low, high = [-2.0, 0.0], [3.0, 10.0]
    module = _members(k, hidden_sizes=[6], n_inputs=3, n_outputs=2, task="regression", target_low=low,
                      target_high=high)  # fmt: skip
    x = torch.randn(40, 3, dtype=torch.float64)
    y01 = 0.1 + 0.8 * torch.rand(40, 2, dtype=torch.float64)
    xs, ys = (x, y01) if k == 1 else (x.expand(k, -1, -1), y01.expand(k, -1, -1))
    mse = module.evaluate(xs, ys)["mse"].reshape(k)
    y_hat = module.net(xs).reshape(k, 40, 2)
    target = from_unit_range(y01, low, high)
    expected = torch.stack(
        [mean_squared_error(from_unit_range(y_hat[m], low, high), target) for m in range(k)]
    )
    torch.testing.assert_close(mse, expected, rtol=1e-12, atol=0)
