"""The `mlp-torch` front: its hand-written help, the dispatch to the subcommands, and what
`--help` and `gradcheck` import (not Lightning: they start in a fraction of its import time)."""

import json
import subprocess
import sys

import pytest

from mlp_torch.cli.command import SUBCOMMANDS, main

HEAVY = ("lightning", "lightning_fabric", "pytorch_lightning", "torchmetrics", "sklearn", "tensorboard")


def imported_after(*argv):
    """The top-level packages imported by a fresh interpreter running `mlp-torch ARGV`."""
    code = (
        "import json, sys\n"
        "from mlp_torch.cli.command import main\n"
        f"code = main({list(argv)!r})\n"
        "print(json.dumps([code, sorted({m.split('.')[0] for m in sys.modules})]))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    code, modules = json.loads(proc.stdout.strip().splitlines()[-1])
    assert code == 0
    return set(modules)


def test_help_imports_neither_lightning_nor_torch():
    modules = imported_after("--help")
    assert not modules & {"torch", "jsonargparse", *HEAVY}, sorted(modules)


def test_gradcheck_imports_torch_but_not_lightning():
    modules = imported_after("gradcheck", "--sizes", "[3, 4, 2]")
    assert "torch" in modules and not modules & set(HEAVY), sorted(modules)


def test_help_lists_every_subcommand_in_whole_lines(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in ("fit", "validate", "test", "predict", "gradcheck"):
        line = next(line for line in out.splitlines() if line.startswith(f"  {name} "))
        assert line.split(maxsplit=1)[1] == SUBCOMMANDS[name]
    assert all(len(line) <= 100 for line in out.splitlines())


def test_gradcheck_help_shows_choices_and_no_docstring_args_block(capsys):
    assert main(["gradcheck", "--help"]) == 0
    out = capsys.readouterr().out
    assert "Args:" not in out and out.count("layer sizes [n_in, ..., n_out]") == 1
    assert "--cost {quadratic,cross_entropy}" in out and "--dtype {float32,float64}" in out


@pytest.mark.parametrize(
    "args, expected",
    [
        ([], "give a subcommand: fit, validate, test, predict, gradcheck"),
        (["fitt"], "unknown subcommand 'fitt'"),
    ],
)
def test_missing_or_unknown_subcommand_is_one_line_exit_2(args, expected, capsys):
    assert main(args) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("mlp-torch:")]
    assert len(errors) == 1 and expected in errors[0]


def test_subcommand_help_still_comes_from_lightning_cli(capsys):
    assert main(["fit", "--help"]) == 0
    assert "--model.hidden_sizes" in capsys.readouterr().out


def test_configs_lists_every_shipped_config_in_one_line_each(capsys):
    from mlp_torch.cli.command import shipped_configs

    assert main(["configs"]) == 0
    lines = capsys.readouterr().out.splitlines()[1:]
    assert [line.split()[0] for line in lines] == list(shipped_configs()) and len(lines) >= 9
    assert all(len(line.split(maxsplit=1)[1]) > 10 and len(line) <= 110 for line in lines)
    assert main(["configs", "extra"]) == 2


def test_a_shipped_config_by_name_runs_from_an_empty_folder_in_a_non_editable_install(tmp_path):
    """The package built as a wheel and unpacked (no editable link to this checkout): `fit
    --config xor` finds the YAML in the package; an unknown name is one line, exit 2."""
    import shutil
    import zipfile
    from pathlib import Path

    root, source = Path(__file__).resolve().parents[1], tmp_path / "source"  # a copy: builds leave build/
    shutil.copytree(root / "mlp_torch", source / "mlp_torch", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(root / name, source / name)
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                            "-w", str(tmp_path / "wheel"), str(source)], capture_output=True, text=True,
                           timeout=300)  # fmt: skip
    assert build.returncode == 0, build.stderr[-2000:]
    (wheel,) = (tmp_path / "wheel").glob("mlp_torch-*.whl")
    zipfile.ZipFile(wheel).extractall(tmp_path / "site")
    empty = tmp_path / "empty"
    empty.mkdir()
    code = (
        "import sys, mlp_torch\n"
        f"assert mlp_torch.__file__.startswith({str(tmp_path / 'site')!r}), mlp_torch.__file__\n"
        "from mlp_torch.cli.command import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    env = {**__import__("os").environ, "PYTHONPATH": str(tmp_path / "site")}
    run = [sys.executable, "-c", code, "fit", "--config", "xor", "--trainer.max_epochs", "2",
           "--trainer.enable_progress_bar", "false"]  # fmt: skip
    proc = subprocess.run(run, cwd=empty, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "mlp-torch fit: done" in proc.stdout and (empty / "lightning_logs" / "version_0").is_dir()
    proc = subprocess.run([*run[:5], "nope"], cwd=empty, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "shipped: batch, default" in proc.stderr
