import pytest
import torch

from mlp_torch.train.threads import choose_num_threads

CUDA = pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"))
DEVICES = ["cpu", CUDA]

# The suite's largest network trained in-process is the default 64-100-10 at batch 16: by the rule
# of mlp_torch.train.threads that is one thread (the fits and the CLI runs choose by the same rule).
torch.set_num_threads(choose_num_threads([64, 100, 10], 16))

# The browser check's outcome, said in one line at the end of the run (CI's log shows it ran).
BROWSER_TEST = "test_scalars_dashboard_draws_every_members_train_J_in_chromium"
_browser_outcomes: dict[str, str] = {}


def pytest_runtest_logreport(report):
    if BROWSER_TEST in report.nodeid and (report.when == "call" or report.outcome != "passed"):
        _browser_outcomes[report.nodeid] = report.outcome


def pytest_terminal_summary(terminalreporter):
    for nodeid, outcome in _browser_outcomes.items():
        terminalreporter.write_line(
            f"browser check (headless Chromium, TensorBoard's dashboard): {outcome}: {nodeid}"
        )
