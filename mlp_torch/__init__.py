"""mlp_torch: the textbook sigmoid multilayer perceptron, with every backprop equation written
out, checked against autograd and finite differences, and trained with the notes' optimizers.

The names below are imported on first use (PEP 562), so that ``mlp-torch --help`` does not pay
for importing PyTorch.
"""

import importlib

_HOMES = {  # public name -> the module that defines it
    "COSTS": "mlp_torch.model.costs",
    "INITS": "mlp_torch.model.network",
    "MLPDataModule": "mlp_torch.data",
    "MLPModule": "mlp_torch.train.module",
    "GradientCheckReport": "mlp_torch.model.gradcheck",
    "SigmoidMLP": "mlp_torch.model.network",
    "autograd_gradients": "mlp_torch.model.backprop",
    "gradient_check": "mlp_torch.model.gradcheck",
    "manual_gradients": "mlp_torch.model.backprop",
    "objective": "mlp_torch.model.backprop",
}
__all__ = sorted(_HOMES)
__version__ = "0.1.0"


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module 'mlp_torch' has no attribute {name!r}")
    return getattr(importlib.import_module(_HOMES[name]), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *_HOMES])
