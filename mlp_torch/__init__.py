"""mlp_torch: the textbook sigmoid multilayer perceptron, with every backprop equation written
out, checked against autograd and finite differences, and trained with the notes' optimizers.

Train from Python as ``mlp-torch fit`` does (any of its options by name; runs go to
``lightning_logs/``)::

    import mlp_torch
    run = mlp_torch.fit(dataset="iris", max_epochs=30)   # or fit("notes"): a shipped config
    run.test                       # {"test/acc": ..., "test/J": ...}, the best checkpoint's
    run.history["val/J"]           # per epoch, to plot J
    run.module, run.log_dir        # the trained MLPModule (run.module.net: the SigmoidMLP)
    mlp_torch.sweep({"lr": [0.3, 1, 3]}, dataset="iris").rows   # a grid at once, best first

The equations one by one: ``SigmoidMLP`` (forward pass), ``objective`` (J), ``manual_gradients``
(backpropagation), ``gradient_check`` (against autograd and finite differences),
``mlp_torch.optim`` (``GradientDescent``, the notes' damped ``Momentum``).

The classes: ``SigmoidMLP`` (the network, an ``nn.Module``), ``MLPModule`` (the LightningModule that
trains it), ``MLPDataModule`` (the data); ``help(mlp_torch.MLPModule)`` for each. The names are
imported on first use (PEP 562), so that ``mlp-torch --help`` does not pay for importing PyTorch.
"""

import importlib

_HOMES = {  # public name -> the module that defines it
    "COSTS": "mlp_torch.model.costs",
    "FitResult": "mlp_torch.cli.api",
    "INITS": "mlp_torch.model.network",
    "MLPDataModule": "mlp_torch.data",
    "MLPModule": "mlp_torch.train.module",
    "GradientCheckReport": "mlp_torch.model.gradcheck",
    "SigmoidMLP": "mlp_torch.model.network",
    "SweepResult": "mlp_torch.cli.api",
    "autograd_gradients": "mlp_torch.model.backprop",
    "fit": "mlp_torch.cli.api",
    "gradient_check": "mlp_torch.model.gradcheck",
    "manual_gradients": "mlp_torch.model.backprop",
    "objective": "mlp_torch.model.backprop",
    "sweep": "mlp_torch.cli.api",
}
# help(mlp_torch) shows these; the classes built on nn.Module and Lightning (SigmoidMLP, MLPModule,
# MLPDataModule) are left out of it, where their inherited methods would fill thousands of lines
__all__ = sorted(set(_HOMES) - {"SigmoidMLP", "MLPModule", "MLPDataModule"})
__version__ = "0.1.0"


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module 'mlp_torch' has no attribute {name!r}")
    return getattr(importlib.import_module(_HOMES[name]), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *_HOMES])
