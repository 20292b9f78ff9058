import pytest
import torch

from mlp_torch.train.threads import choose_num_threads

CUDA = pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"))
DEVICES = ["cpu", CUDA]

# The suite's largest network trained in-process is the default 64-100-10 at batch 16: by the rule
# of mlp_torch.train.threads that is one thread (the fits and the CLI runs choose by the same rule).
torch.set_num_threads(choose_num_threads([64, 100, 10], 16))
