"""The ``mlp-torch`` command: its help, its subcommands, ``gradcheck``, and one-line errors.

``fit``, ``validate``, ``test`` and ``predict`` are the LightningCLI of :mod:`mlp_torch.cli`,
imported only when one of them runs: ``mlp-torch --help`` imports nothing heavy and
``mlp-torch gradcheck`` only PyTorch and the math files, so both start in a fraction of the time
Lightning takes to import.

Bad input of any kind ends with one line ``mlp-torch: error: ...`` and exit code 2; a training
run that fails (non-finite J, failed cross-check) ends with one line and exit code 1.
"""

from __future__ import annotations

import os
import re
import sys
import warnings
from argparse import ArgumentError
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from mlp_torch.cli import PROG

__all__ = [
    "HELP",
    "SUBCOMMANDS",
    "gradcheck",
    "main",
    "resolve_configs",
    "run_reporting_errors",
    "shipped_configs",
]

SUBCOMMANDS = {  # name -> what it does, as the top-level help lists it
    "fit": "train a network, test its best checkpoint (lowest val/J), print a summary",
    "validate": "evaluate a checkpoint (--ckpt_path) on the validation split",
    "test": "evaluate a checkpoint (--ckpt_path) on the held-out test split",
    "predict": "write a checkpoint's predictions for the test split to predictions.csv",
    "gradcheck": "check hand-written backprop against autograd and finite differences",
    "sweep": "train a grid of fit settings at once (--grid KEY=[v1, v2, ...]), table sorted by val",
    "configs": "list the shipped configs (--config NAME), one line each",
}
LIGHTNING_SUBCOMMANDS = ("fit", "validate", "test", "predict")
HELP = f"""usage: {PROG} [-h] {{{",".join(SUBCOMMANDS)}}} ...

Train the textbook sigmoid MLP: hand-written backprop checked against autograd, the notes'
optimizers, Lightning training, TensorBoard logs.

subcommands ({PROG} SUBCOMMAND --help shows each one's options):
{chr(10).join(f"  {name:<11}{text}" for name, text in SUBCOMMANDS.items())}

options:
  -h, --help show this help message and exit

examples:
  {PROG} fit                                  train the default network on digits
  {PROG} fit --config notes                   a shipped config by name (see {PROG} configs)
  {PROG} fit --config my.yaml                 a config file of your own
  {PROG} predict --ckpt_path last             predictions of the newest run's last checkpoint
  {PROG} gradcheck --cost cross_entropy       the three-way gradient check
  {PROG} sweep --grid "model.optimizer.lr=[0.3, 1, 3]" --grid "seed_everything=[0, 1]"
"""


def gradcheck(
    sizes: list[int] = [4, 5, 3],  # noqa: B006 (read-only; jsonargparse shows it)
    cost: Literal["quadratic", "cross_entropy"] = "quadratic",
    l1: float = 0.0,
    l2: float = 0.0,
    reduction: Literal["mean", "sum"] = "mean",
    init: Literal["scaled_normal", "scaled_uniform", "standard_normal", "zeros"] = "scaled_normal",
    bias_init: float = 0.0,
    batch_size: int = 8,
    dtype: Literal["float32", "float64"] = "float64",
    device: Literal["cpu", "cuda"] = "cpu",
    seed: int = 0,
) -> bool:
    """Check hand-written backprop against autograd and float64 finite differences.

    Args:
        sizes: layer sizes [n_in, ..., n_out].
        cost: the data term of J.
        l1: L1 penalty weight.
        l2: L2 penalty weight.
        reduction: the cost averaged (mean) or summed (sum) over the batch.
        init: how the weights start.
        bias_init: initial value of every bias.
        batch_size: examples in the random batch.
        dtype: the network's float type (finite differences are always float64).
        device: where the network and the batch live.
        seed: seed of the network and the batch.
    """
    import torch

    from mlp_torch.model.gradcheck import check_gradient_check_size, gradient_check
    from mlp_torch.model.network import SigmoidMLP
    from mlp_torch.train.threads import choose_num_threads

    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' but no CUDA device is available: use --device cpu")
    if isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r} must be an integer >= 1")
    if isinstance(seed, bool) or not 0 <= seed < 2**63:
        raise ValueError(f"seed={seed!r} is out of range: give an integer in [0, 2**63)")
    net = SigmoidMLP(sizes, init=init, bias_init=bias_init, seed=seed)
    check_gradient_check_size(net.sizes, batch_size)
    torch.set_num_threads(choose_num_threads(net.sizes, batch_size))  # the rule fit follows
    float_type = getattr(torch, dtype)
    net = net.to(device=device, dtype=float_type)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch_size, sizes[0], generator=gen, dtype=torch.float64)  # (n, n_in)
    if cost == "cross_entropy":  # one-hot targets, (n, n_out)
        y = torch.eye(sizes[-1], dtype=torch.float64)[torch.randint(sizes[-1], (batch_size,), generator=gen)]
    else:
        y = torch.rand(batch_size, sizes[-1], generator=gen, dtype=torch.float64)  # (n, n_out)
    x, y = x.to(device=device, dtype=float_type), y.to(device=device, dtype=float_type)
    report = gradient_check(net, x, y, cost=cost, l1=l1, l2=l2, reduction=reduction)
    print(
        f"gradient check: sizes {sizes}, {cost} cost, l1={l1:g}, l2={l2:g}, reduction={reduction}, "
        f"batch {batch_size}, {dtype} on {device}"
    )
    print(report)
    for failure in report.failures():
        print(f"FAIL {failure}")
    return report.passed


def _gradcheck_cli(args: list[str]) -> int:
    from jsonargparse import ArgumentParser

    summary = gradcheck.__doc__.split("\n\n")[0]  # the Args block becomes the options' help
    parser = ArgumentParser(prog=f"{PROG} gradcheck", exit_on_error=False, description=summary)
    parser.add_function_arguments(gradcheck, as_positional=False, as_group=False)
    cfg = parser.parse_args(args)
    return 0 if gradcheck(**vars(cfg)) else 1


def _run(args: list[str], from_command_line: bool) -> int:
    if not args or args[0] in ("-h", "--help"):
        print(HELP, end="", file=sys.stdout if args else sys.stderr)
        if not args:
            raise ArgumentError(None, f"give a subcommand: {', '.join(SUBCOMMANDS)}")
        return 0
    if args[0] == "gradcheck":
        return _gradcheck_cli(args[1:])
    if args[0] == "configs":
        return _configs_cli(args[1:])
    args = resolve_configs(args)
    if from_command_line:
        sys.argv[1:] = args  # LightningCLI reads sys.argv itself
    if args[0] == "sweep":
        check_config_files(args)
        from mlp_torch.cli.sweep import sweep_main  # imports Lightning

        return sweep_main(args[1:])
    if args[0] not in LIGHTNING_SUBCOMMANDS and not args[0].startswith("-"):
        raise ArgumentError(
            None, f"unknown subcommand {args[0]!r}: use one of {', '.join(SUBCOMMANDS)} (see {PROG} --help)"
        )
    check_config_files(args)
    from mlp_torch.cli.fit import make_cli  # imports Lightning

    if any(a == "--print_config" or a.startswith("--print_config=") for a in args):
        checked = [a for a in args if a != "--print_config" and not a.startswith("--print_config=")]
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="LightningCLI's args parameter")
            make_cli(checked, dry_run=True)  # a config is printed only if it would run
    try:
        make_cli(None if from_command_line else args)  # LightningCLI reads sys.argv itself
    except SystemExit as err:
        from lightning.pytorch.utilities.exceptions import SIGTERMException

        if isinstance(err, SIGTERMException):
            raise Terminated(
                "terminated by SIGTERM; last.ckpt holds the last completed epoch: "
                "resume with --ckpt_path last"
            ) from None
        raise
    return 0


CONFIGS = Path(__file__).resolve().parents[1] / "configs"  # package data: the shipped YAMLs
_NAME = re.compile(r"[A-Za-z0-9_.-]+")


def shipped_configs() -> dict[str, Path]:
    """The shipped configs by name (``notes`` for ``mlp_torch/configs/notes.yaml``)."""
    return {path.stem: path for path in sorted(CONFIGS.glob("*.yaml"))}


def resolve_configs(args: list[str]) -> list[str]:
    """``args`` with each ``--config NAME`` of a shipped config replaced by its file's path.

    A path that exists is kept as it is (a file of yours wins over a shipped config of the same
    name); a bare name that is neither a file nor a shipped config raises ``ValueError``."""
    out = list(args)
    for i, arg in enumerate(out):
        if arg in ("--config", "-c") and i + 1 < len(out):
            out[i + 1] = _config_path(out[i + 1])
        elif arg.startswith("--config="):
            out[i] = "--config=" + _config_path(arg.partition("=")[2])
    return out


def _config_path(value: str) -> str:
    if os.path.exists(value) or not _NAME.fullmatch(value):
        return value  # a file, or a YAML string
    shipped = shipped_configs()
    name = value.removesuffix(".yaml").removesuffix(".yml")
    if name in shipped:
        return str(shipped[name])
    raise ValueError(
        f"--config {value}: no such file and no shipped config of that name; shipped: "
        f"{', '.join(shipped)} ({PROG} configs describes them)"
    )


def _configs_cli(args: list[str]) -> int:
    if args and args[0] in ("-h", "--help"):
        print(f"usage: {PROG} configs\n\n{SUBCOMMANDS['configs']}: {PROG} fit --config NAME runs one")
        return 0
    if args:
        raise ArgumentError(None, f"{PROG} configs takes no arguments (got {' '.join(args)})")
    shipped = shipped_configs()
    width = max(map(len, shipped))
    print(f"shipped configs ({CONFIGS}); run one with {PROG} fit --config NAME:")
    for name, path in shipped.items():
        with open(path, encoding="utf-8") as f:
            summary = f.readline().removeprefix("#").strip()
        print(f"  {name:<{width}}  {summary}")
    return 0


class Terminated(RuntimeError):
    """The run received SIGTERM and stopped after its epoch (exit code 128 + 15)."""


MAX_CONFIG_VALUES = 100_000  # values in one --config file, YAML aliases expanded
MAX_CONFIG_DEPTH = 64


def check_config_files(args: list[str]) -> None:
    """Raise ``ValueError`` for a ``--config`` file that is not YAML, or whose YAML aliases make a
    cycle (``a: &a [*a]``) or expand beyond :data:`MAX_CONFIG_VALUES` values: jsonargparse would
    recurse until Python gives up, or hang."""
    import yaml

    files = [b for a, b in zip(args, args[1:]) if a in ("--config", "-c")]
    files += [a.partition("=")[2] for a in args if a.startswith("--config=")]
    for name in files:
        if not os.path.isfile(name):
            continue  # a YAML string, or a missing file: jsonargparse says which
        try:
            with open(name, encoding="utf-8") as f:
                data = yaml.safe_load(f)
        except (OSError, UnicodeDecodeError) as err:
            raise ValueError(
                f"--config {name}: cannot be read ({getattr(err, 'strerror', None) or err})"
            ) from None
        except yaml.YAMLError as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ValueError(f"--config {name}: not valid YAML ({first})") from None
        _check_yaml_value(data, name)


def _check_yaml_value(data: object, name: str) -> None:
    count, stack = 0, [(data, ())]  # (value, the ids of the containers above it)
    while stack:
        value, above = stack.pop()
        count += 1
        if count > MAX_CONFIG_VALUES:
            raise ValueError(
                f"--config {name}: expands to more than {MAX_CONFIG_VALUES:,} values (YAML aliases "
                "repeated within aliases?); write the settings out plainly"
            )
        if not isinstance(value, (dict, list)):
            continue
        if id(value) in above:
            raise ValueError(
                f"--config {name}: a YAML alias refers to a value that contains it (a cycle, like "
                "'a: &a [*a]'); remove that alias"
            )
        if len(above) >= MAX_CONFIG_DEPTH:
            raise ValueError(f"--config {name}: nests deeper than {MAX_CONFIG_DEPTH} levels; flatten it")
        children = value.values() if isinstance(value, dict) else value
        stack.extend((child, (*above, id(value))) for child in children)


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return text or type(err).__name__


def _training_failure(err: RuntimeError) -> bool:
    """Whether ``err`` is a failed training run (non-finite J, failed cross-check). Their classes
    live with Lightning code, which is loaded by then if training ran."""
    from mlp_torch.train.callbacks import NonFiniteObjectiveError
    from mlp_torch.train.module import CrossCheckError

    return isinstance(err, (NonFiniteObjectiveError, CrossCheckError))


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``mlp-torch``; returns the exit code. ``MLP_TORCH_DEBUG=1`` shows tracebacks."""
    args = sys.argv[1:] if argv is None else list(argv)
    return run_reporting_errors(lambda: _run(args, argv is None))


def run_reporting_errors(run: Callable[[], int], prog: str = PROG) -> int:
    """``run()``'s exit code; bad input (a config value, a data file, a checkpoint) becomes one
    line ``prog: error: ...`` and 2, a failed training run one line and 1, with no traceback
    unless ``MLP_TORCH_DEBUG=1``."""
    warnings.filterwarnings("ignore", message=".*LeafSpec.*is deprecated")  # inside Lightning itself
    if os.environ.get("MLP_TORCH_DEBUG"):
        return run()
    try:
        return run()
    except Terminated as err:
        print(f"{prog}: training stopped: {_one_line(err)}", file=sys.stderr)
        return 128 + 15
    except RuntimeError as err:
        if not _training_failure(err):
            raise
        print(f"{prog}: training stopped: {_one_line(err)}", file=sys.stderr)
        return 1
    except (ArgumentError, ValueError, TypeError, OSError, KeyError) as err:
        print(f"{prog}: error: {_one_line(err)}", file=sys.stderr)
        return 2
    except SystemExit as err:  # --help and --print_config exit 0; argument errors are handled above
        return err.code if isinstance(err.code, int) else 0
