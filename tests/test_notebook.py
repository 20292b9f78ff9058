"""docs/tutorial.ipynb runs top to bottom, its figures hold, and it is committed with its outputs.

The notebook is executed with nbclient in a temporary folder, by a kernel of the interpreter
running the tests (a kernelspec written for the test, so no installed kernelspec is needed). After
its last cell the test runs one more, which prints the figures below from the notebook's own
variables as JSON. The bounds leave room for any CPU's float rounding (e.g.
``ATEN_CPU_CAPABILITY=avx2``): float64 agreement to 1e-12 (1e-9 for steps read off the weights),
finite differences to 1e-8.

To regenerate the committed outputs, run the notebook top to bottom and save it (Jupyter's "Restart
kernel and run all"), or ``jupyter execute --inplace docs/tutorial.ipynb`` (nbclient's command).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat", reason="running the tutorial needs nbformat")
nbclient = pytest.importorskip("nbclient", reason="running the tutorial needs nbclient")
pytest.importorskip("ipykernel", reason="running the tutorial needs ipykernel (pip install ipykernel)")
pytest.importorskip("matplotlib", reason="the tutorial plots with matplotlib")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "docs" / "tutorial.ipynb"
KERNEL = "mlp-torch-test-python"  # the kernelspec written for the test: this interpreter

FACTS = """
import json
print(json.dumps({
    "forward": (a2 - y_hat).abs().max().item(),
    "diffs": diffs,
    "gradient_check_passed": report.passed,
    "alpha": alpha,
    "ratio": [ratio.min().item(), ratio.max().item()],
    "first_step_vs_formula": ((ours - expected).abs().max() / expected.abs().max()).item(),
    "zero_buffer_gap": gap,
    "spread": spread,
    "test": run.test,
    "epochs": run.epochs,
    "history": {name: len(values) for name, values in run.history.items()},
    "log_dir": str(run.log_dir),
    "runs": runs,
    "sweep": {str(lr): r.test["test/acc"] for lr, r in sweep.items()},
}))
"""


def _kernel_manager(folder: Path):
    """A kernel manager whose one kernelspec runs ``sys.executable -m ipykernel_launcher``, with
    this checkout first on the kernel's path and its temporary files (the notebook's runs) under
    ``folder``."""
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager

    spec_dir = folder / "kernels" / KERNEL
    spec_dir.mkdir(parents=True)
    (folder / "tmp").mkdir()
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python (tests)",
        "language": "python",
        "env": {"PYTHONPATH": path, "TMPDIR": str(folder / "tmp")},
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    specs = KernelSpecManager(kernel_dirs=[str(spec_dir.parent)])
    return KernelManager(kernel_name=KERNEL, kernel_spec_manager=specs)


def _text(cell) -> str:
    """Everything a code cell printed (streams and the plain-text form of its results)."""
    parts = []
    for out in cell.get("outputs", []):
        if out["output_type"] == "stream":
            parts.append(out["text"])
        elif "data" in out:
            parts.append(out["data"].get("text/plain", ""))
    return "".join(parts)


def _shows_a_plot(cell) -> bool:
    return "plt.show()" in cell.source


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    """The notebook run top to bottom in a temporary folder, the facts cell appended: (notebook,
    facts, the test's folder)."""
    tmp = tmp_path_factory.mktemp("tutorial")
    work = tmp / "work"
    work.mkdir()
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(FACTS))
    client = nbclient.NotebookClient(
        nb,
        km=_kernel_manager(tmp),
        timeout=120,
        startup_timeout=120,
        record_timing=False,
        resources={"metadata": {"path": str(work)}},
    )
    client.execute()  # raises CellExecutionError, naming the cell, if any cell fails
    facts = json.loads(_text(nb.cells[-1]).strip().splitlines()[-1])
    return nb, facts, tmp


def test_notebook_runs_top_to_bottom(executed):
    nb, facts, tmp = executed
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert not [o for o in cell.outputs if o["output_type"] == "error"], cell.source
            if _shows_a_plot(cell):
                assert any("image/png" in o.get("data", {}) for o in cell.outputs), cell.source

    # 1. the forward pass by hand is SigmoidMLP's
    assert facts["forward"] < 1e-12
    # 2. backprop by hand = manual_gradients = autograd (rounding), = finite differences (their error)
    d = facts["diffs"]
    assert d["by hand vs manual_gradients"] < 1e-12
    assert d["manual_gradients vs autograd"] < 1e-12
    assert d["manual_gradients vs finite differences"] < 1e-8
    assert d["autograd vs finite differences"] < 1e-8
    assert facts["gradient_check_passed"]
    # 3. SGD(momentum=a, dampening=a)'s first step is 1/(1-a) times the notes' (1-a)(-lr g) ...
    expected = 1 / (1 - facts["alpha"])
    assert facts["ratio"] == pytest.approx([expected, expected], rel=1e-9)
    assert facts["first_step_vs_formula"] < 1e-9  # weight differences: w ~ 1, steps ~ 1e-4
    # ... and with its buffer started at zero, the two are one rule
    assert facts["zero_buffer_gap"] < 1e-12
    # 4. from zeros the hidden units stay identical; from scaled random weights they differ
    assert facts["spread"]["zeros"] < 1e-12
    assert facts["spread"]["scaled_normal"] > 0.1
    # 5-7. digits from Python: a sane accuracy, a history per epoch, runs in the notebook's temp folder
    assert facts["test"]["test/acc"] > 0.9
    assert facts["epochs"] == 30
    assert facts["history"]["epoch"] == facts["history"]["train/J"] == facts["history"]["val/J"] == 30
    assert Path(facts["runs"]).parent == tmp / "tmp"  # tempfile.mkdtemp(), under the test's folder
    assert Path(facts["log_dir"]).is_relative_to(facts["runs"])
    assert len(facts["sweep"]) == 4
    assert all(acc > 0.8 for acc in facts["sweep"].values()), facts["sweep"]
    assert not (tmp / "work" / "lightning_logs").exists()


def test_committed_notebook_has_its_outputs():
    """Every code cell was run, once, in order, and left no error; plots are in the file; nothing
    printed names a machine's temporary folder."""
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert len(code) >= 10
    assert [cell.execution_count for cell in code] == list(range(1, len(code) + 1)), (
        "docs/tutorial.ipynb must be committed run top to bottom in one kernel (restart and run all)"
    )
    for cell in code:
        assert not [o for o in cell.outputs if o["output_type"] == "error"], cell.source
        assert "mlp-torch-tutorial-" not in _text(cell), cell.source
        if _shows_a_plot(cell):
            assert any("image/png" in o.get("data", {}) for o in cell.outputs), cell.source
    printed = "".join(_text(cell) for cell in code)
    assert "PASS" in printed and "FAIL" not in printed  # gradient_check's table
    assert sum(_shows_a_plot(cell) for cell in code) >= 3
