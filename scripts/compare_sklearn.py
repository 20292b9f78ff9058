"""scikit-learn's MLPClassifier on exactly the splits `mlp-torch fit` uses, for comparison.

    .venv/bin/python scripts/compare_sklearn.py                          # digits, seeds 0 1 2
    .venv/bin/python scripts/compare_sklearn.py --folds 5 --seeds 0 1 2 3 4   # as scripts/cv.py

Same data module (same stratified split and min-max scaling by seed); scikit-learn trains on the
training split with its own early stopping off and is scored on the test split. With ``--folds k``
it is cross-validated instead, on exactly the folds of ``scripts/cv.py`` (the test split unused):
trained on k - 1 folds of the non-test examples, scored on the held-out one.
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
    parser.add_argument("--folds", type=int, default=0, help="cross-validate on k folds (0: test split)")
    args = parser.parse_args()
    for name, kw in SETUPS.items():
        accs = []
        for seed in args.seeds:
            for fold in range(max(args.folds, 1)):
                dm = MLPDataModule(args.dataset, seed=seed, cv_folds=args.folds, cv_fold=fold)
                clf = MLPClassifier(random_state=seed, max_iter=500, **kw)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", ConvergenceWarning)
                    clf.fit(dm.x_train.numpy(), dm.labels_train.numpy())
                x, labels = (dm.x_val, dm.labels_val) if args.folds else (dm.x_test, dm.labels_test)
                accs.append(clf.score(x.numpy(), labels.numpy()))
        if args.folds:
            print(f"{name}: mean held-out acc {statistics.mean(accs):.4f} over {len(accs)} folds")
        else:
            shown = ", ".join(f"{a:.2%}" for a in accs)
            print(f"{name}: test acc {shown}; median {statistics.median(accs):.2%}")


if __name__ == "__main__":
    main()
