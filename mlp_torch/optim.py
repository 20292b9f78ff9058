"""The notes' optimizers under their public name: ``mlp_torch.optim.Momentum`` is what configs and
checkpoints write (``class_path: mlp_torch.optim.Momentum``). They live in
:mod:`mlp_torch.model.optim`, with the rest of the mathematics."""

from mlp_torch.model.optim import GradientDescent, HeavyBall, Momentum

__all__ = ["GradientDescent", "HeavyBall", "Momentum"]
