"""What every part of the data package shares: its error and its constants (the readers, the
preparation and the DataModule import this file, never each other's)."""

import torch

FILE_SUFFIXES = (".csv", ".npz")
TASKS = ("auto", "classification", "regression")
DTYPES = {"float32": torch.float32, "float64": torch.float64}
SCALINGS = ("minmax", "standard")
STREAMING = ("auto", "on", "off")
DEFAULT_STREAM_BUDGET_MB = 256  # streaming="on" without a budget, off CUDA

MAX_AUTO_CLASSES = 50  # task="auto": at most this many distinct integer/text targets -> classes
MIN_GENERATED_SAMPLES = 4  # one point per XOR corner
UNIT_LOW, UNIT_HIGH = 0.1, 0.9  # regression targets are mapped into this part of (0, 1)
FRACTION_RULE = "val_fraction and test_fraction must be in [0, 1) with val_fraction + test_fraction < 1"


class DataError(ValueError):
    """A data set that cannot be used as asked; the message says which and what to do."""
