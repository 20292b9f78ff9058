"""mlp_torch: the textbook sigmoid multilayer perceptron, with every backprop equation written
out, checked against autograd and finite differences, and trained with the notes' optimizers."""

from mlp_torch.backprop import autograd_gradients, manual_gradients, objective
from mlp_torch.costs import COSTS
from mlp_torch.gradcheck import GradientCheckReport, gradient_check
from mlp_torch.network import INITS, SigmoidMLP

__all__ = [
    "COSTS",
    "INITS",
    "GradientCheckReport",
    "SigmoidMLP",
    "autograd_gradients",
    "gradient_check",
    "manual_gradients",
    "objective",
]
__version__ = "0.1.0"
