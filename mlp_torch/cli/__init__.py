"""The ``mlp-torch`` command: :mod:`~mlp_torch.cli.command` (help, dispatch, ``gradcheck``,
one-line errors; no Lightning), :mod:`~mlp_torch.cli.fit` (``fit/validate/test/predict``, a
LightningCLI), :mod:`~mlp_torch.cli.sweep` (``sweep``), :mod:`~mlp_torch.cli.report` (what a run
prints and leaves behind). ``main`` and ``make_cli`` are imported on first use, so that
``mlp-torch --help`` does not pay for importing Lightning."""

import importlib

PROG = "mlp-torch"  # the command's name, as its messages and help give it
_HOMES = {"main": "mlp_torch.cli.command", "make_cli": "mlp_torch.cli.fit"}
__all__ = ["PROG", *sorted(_HOMES)]


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module 'mlp_torch.cli' has no attribute {name!r}")
    return getattr(importlib.import_module(_HOMES[name]), name)
