"""scikit-learn's MLPClassifier on exactly the splits `mlp-torch fit` uses, for comparison.

    .venv/bin/python scripts/compare_sklearn.py            # digits, seeds 0 1 2

Same data module (same stratified split and min-max scaling by seed); scikit-learn trains on the
training split with its own early stopping off and is scored on the test split.
"""

from __future__ import annotations

import argparse
import statistics
import warnings

from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier

from mlp_torch.data import MLPDataModule

SETUPS = {
    "logistic, 30 units, SGD momentum 0.9": dict(
        hidden_layer_sizes=(30,), activation="logistic", solver="sgd", momentum=0.9, learning_rate_init=0.1
    ),
    "scikit-learn defaults (relu, 100 units, adam)": dict(),
    "logistic, 100 units, adam": dict(activation="logistic"),
}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    for name, kw in SETUPS.items():
        accs = []
        for seed in args.seeds:
            dm = MLPDataModule(args.dataset, seed=seed)
            clf = MLPClassifier(random_state=seed, max_iter=500, **kw)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                clf.fit(dm.x_train.numpy(), dm.labels_train.numpy())
            accs.append(clf.score(dm.x_test.numpy(), dm.labels_test.numpy()))
        shown = ", ".join(f"{a:.2%}" for a in accs)
        print(f"{name}: test acc {shown}; median {statistics.median(accs):.2%}")


if __name__ == "__main__":
    main()
