"""``python -m mlp_torch.cli ...``: the ``mlp-torch`` command (as torchrun and tests start it)."""

import sys

from mlp_torch.cli.command import main

sys.exit(main())
