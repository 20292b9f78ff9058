"""The user's data files: .csv with a header row, .npz archives (also in MNIST's layout).

Messages leave out the file name (the DataModule puts it in front) and never quote the file's
content (a header, a cell): a path can come from a checkpoint, and an error must not print
another file's first line. They say where instead: the column's number, the line, the row.
"""

import csv
import errno
import math
import os
import stat
import zipfile
from pathlib import Path

import numpy as np

from mlp_torch.data.base import DataError
from mlp_torch.limits import check_fits_in_memory, format_bytes


def read_csv(path: str | Path, target: str) -> tuple[np.ndarray, np.ndarray]:
    """Read a CSV file with a header row: column ``target`` is the target, the rest inputs.

    Returns:
        ``x`` ``(n, d)`` float64 and the raw targets ``(n,)``: int64 if every value is an
        integer that fits in 64 bits (read exactly, not through a float), float64 if every value
        is a number, else text (``str``; integers beyond 64 bits are kept as their digits).
    """
    rows = _csv_rows(path)
    if not rows:
        raise DataError("is empty; it needs a header row naming the columns, then the data")
    header = [name.strip() for name in rows[0][1]]
    if target not in header:
        raise DataError(
            f"has no column {target!r} among the {len(header)} columns of its header row (line 1); "
            "pass the name of the target column as target"
        )
    for j, name in enumerate(header):
        if header.index(name) != j:
            raise DataError(
                f"its header row names two columns alike (columns {header.index(name) + 1} and {j + 1}); "
                "give every column its own name"
            )
    if len(header) == 1:
        raise DataError(f"has no input columns besides the target {target!r}")
    if len(rows) == 1:
        raise DataError("has a header row but no data rows")
    t = header.index(target)
    columns = [j + 1 for j in range(len(header)) if j != t]  # each input's column number, from 1
    x = np.empty((len(rows) - 1, len(columns)))  # (n, d)
    targets = []
    for i, (line, row) in enumerate(rows[1:]):
        if len(row) != len(header):
            raise DataError(
                f"line {line} has {len(row)} fields but the header has {len(header)}; fix that row"
            )
        for j, (column, text) in enumerate(zip(columns, row[:t] + row[t + 1 :], strict=True)):
            x[i, j] = _parse_input(text, column, len(header), line)
        if not row[t].strip():
            raise DataError(f"target column {target!r} is empty on line {line}; fill or drop it")
        targets.append(row[t].strip())
    return x, _parse_targets(targets, target, [line for line, _ in rows[1:]])


def _parse_targets(texts: list[str], target: str, lines: list[int]) -> np.ndarray:
    """A CSV file's target column: exact integers, else numbers, else text."""
    try:
        integers = [int(text) for text in texts]
    except ValueError:
        integers = None
    if integers is not None:
        if all(-(2**63) <= v < 2**63 for v in integers):
            return np.array(integers, dtype=np.int64)
        return np.array(texts)  # beyond 64 bits: class labels by their digits, never rounded
    try:
        y = np.array([float(text) for text in texts])
    except ValueError:
        return np.array(texts)  # text labels
    bad = np.flatnonzero(~np.isfinite(y))
    if bad.size:
        raise DataError(
            f"target column {target!r} has a non-finite value on line {lines[bad[0]]}; "
            "fill in or drop that row"
        )
    return y


def _parse_input(text: str, column: int, n_columns: int, line: int) -> float:
    """One input cell of a CSV file as a finite float."""
    try:
        value = float(text)
    except ValueError:
        raise DataError(
            f"column {column} of {n_columns} is not numeric on line {line}; convert it or drop it"
        ) from None
    if not math.isfinite(value):
        raise DataError(
            f"column {column} of {n_columns} has a non-finite value on line {line}; fill in or drop that row"
        )
    return value


def read_npz(path: str | Path, target: str = "y") -> tuple[np.ndarray, np.ndarray]:
    """Read a NumPy ``.npz`` archive with inputs ``x`` ``(n, d)`` and targets ``target``.

    Returns:
        ``x`` ``(n, d)`` float64 and the raw targets, ``(n,)`` or ``(n, k)``, numbers or text.
    """
    arrays = _read_arrays(path)
    missing = [name for name in ("x", target) if name not in arrays]
    if missing:
        raise DataError(
            f"has no array {missing[0]!r}; available arrays: {', '.join(arrays)}; "
            "save the inputs as 'x' and pass the targets' name as target"
        )
    x, y = arrays["x"], arrays[target]
    if x.ndim != 2 or x.shape[1] == 0 or x.dtype.kind not in "biuf":
        raise DataError(
            f"array 'x' must hold numbers in shape (n, d) with d >= 1, "
            f"got dtype {x.dtype} and shape {x.shape}"
        )
    if len(x) == 0:
        raise DataError("has no examples: its array 'x' has 0 rows")
    if y.ndim not in (1, 2) or len(y) != len(x) or y.dtype.kind not in "biufU":
        raise DataError(
            f"array {target!r} must hold numbers or text in shape ({len(x)},) or ({len(x)}, k), "
            f"got dtype {y.dtype} and shape {y.shape}"
        )
    for name, values in (("x", x), (target, y)):
        if values.dtype.kind == "f" and not np.isfinite(values).all():
            row = np.argwhere(~np.isfinite(values))[0][0]
            raise DataError(f"array {name!r} has a non-finite value in row {row}; fill in or drop that row")
    return x.astype(np.float64), (y.astype(np.int64) if y.dtype.kind == "b" else y)


SPLIT_ARRAYS = ("x_train", "y_train", "x_test", "y_test")  # MNIST's common .npz layout


def read_npz_splits(path: str | Path) -> tuple[np.ndarray, np.ndarray, int] | None:
    """Read a ``.npz`` archive in MNIST's common layout, ``x_train``, ``y_train``, ``x_test``,
    ``y_test`` (inputs of any shape per example, flattened; class labels or targets), keeping the
    file's own test split; ``None`` if the archive does not have these four arrays.

    Returns:
        ``x`` ``(n_train + n_test, d)`` float64, the raw targets, training rows first, and
        ``n_test``: the last ``n_test`` rows are the file's test split.
    """
    arrays = _read_arrays(path)
    if not all(name in arrays for name in SPLIT_ARRAYS):
        return None
    xs, ys = [], []
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if x.ndim < 2 or x.dtype.kind not in "biuf" or 0 in x.shape:
            raise DataError(
                f"array 'x_{split}' must hold numbers, one example per row, got {x.dtype} {x.shape}"
            )
        if y.ndim not in (1, 2) or len(y) != len(x) or y.dtype.kind not in "biufU":
            raise DataError(
                f"array 'y_{split}' must hold numbers or text in shape ({len(x)},) or ({len(x)}, k), "
                f"got dtype {y.dtype} and shape {y.shape}"
            )
        for name, values in ((f"x_{split}", x), (f"y_{split}", y)):
            if values.dtype.kind == "f" and not np.isfinite(values).all():
                row = np.argwhere(~np.isfinite(values))[0][0]
                raise DataError(
                    f"array {name!r} has a non-finite value in row {row}; fill in or drop that example"
                )
        xs.append(x.reshape(len(x), -1))  # (n, d): images flattened
        ys.append(y)
    train, test = arrays["x_train"].shape[1:], arrays["x_test"].shape[1:]
    if train != test:
        raise DataError(
            f"training examples ('x_train') have shape {train} but test examples ('x_test') {test}; "
            "they must match"
        )
    if ys[0].shape[1:] != ys[1].shape[1:]:
        raise DataError(
            f"training targets ('y_train') have shape {ys[0].shape[1:]} per example but test targets "
            f"('y_test') {ys[1].shape[1:]}; they must match"
        )
    if (ys[0].dtype.kind == "U") != (ys[1].dtype.kind == "U"):
        kinds = ["text" if t.dtype.kind == "U" else "numbers" for t in ys]
        raise DataError(
            f"'y_train' holds {kinds[0]} but 'y_test' {kinds[1]}; give both the same kind of labels"
        )
    x, y = np.concatenate(xs), np.concatenate(ys)
    return x.astype(np.float64), (y.astype(np.int64) if y.dtype.kind == "b" else y), len(xs[1])


def npz_sizes(path: str | Path) -> dict[str, int]:
    """The bytes each array of a .npz archive claims in its header, read without loading it."""
    sizes = {}
    with zipfile.ZipFile(path) as archive:
        for name in archive.namelist():
            if not name.endswith(".npy"):
                continue
            with archive.open(name) as f:
                version = np.lib.format.read_magic(f)
                header = (
                    np.lib.format.read_array_header_1_0
                    if version == (1, 0)
                    else np.lib.format.read_array_header_2_0
                )
                shape, _, dtype = header(f)
            sizes[name.removesuffix(".npy")] = math.prod(shape) * dtype.itemsize
    return sizes


def _read_arrays(path: str | Path) -> dict[str, np.ndarray]:
    """All arrays of a .npz archive by name; refused before loading if they cannot fit in memory."""
    try:
        sizes = npz_sizes(path) if zipfile.is_zipfile(path) else {}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise DataError(
            f"cannot be read as a NumPy .npz archive ({err}); write it with numpy.savez"
        ) from None
    try:
        check_fits_in_memory(
            3 * sum(sizes.values()),  # the arrays, their float64 copy and the tensors
            f"its arrays ({', '.join(f'{k}: {format_bytes(v)}' for k, v in sizes.items())})",
            "is the file corrupt? a data set must fit in memory",
        )
    except ValueError as err:
        raise DataError(str(err)) from None
    try:
        archive = np.load(path, allow_pickle=False)
        if isinstance(archive, np.ndarray):
            raise ValueError("it holds a single .npy array, not named arrays")
        with archive:
            return {name: archive[name] for name in archive.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise DataError(
            f"cannot be read as a NumPy .npz archive ({err}); write it with numpy.savez"
        ) from None


def check_regular_file(dataset: str) -> None:
    """Raise DataError unless ``dataset`` names a regular file (through links that resolve)."""
    what = f"data file {dataset!r}"
    try:
        mode = os.stat(dataset).st_mode
    except FileNotFoundError:
        if os.path.islink(dataset):
            raise DataError(
                f"{what} is a symbolic link to a missing file; fix the link or the path"
            ) from None
        raise DataError(f"{what} does not exist (relative to {Path.cwd()}); check the path") from None
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise DataError(f"{what} is a symbolic link that loops back on itself; fix the link") from None
        raise DataError(f"{what} cannot be opened ({err.strerror}); check the path") from None
    if stat.S_ISDIR(mode):
        raise DataError(f"{what} is a folder, not a file; give the path of the file in it")
    if not stat.S_ISREG(mode):
        kinds = {stat.S_ISFIFO: "a FIFO (named pipe)", stat.S_ISCHR: "a device", stat.S_ISBLK: "a device"}
        kind = next((name for test, name in kinds.items() if test(mode)), "a special file")
        raise DataError(f"{what} is {kind}, not a regular file; give a .csv or .npz file")


def csv_header(path: str | Path) -> list[str]:
    """The names in a CSV file's header row (its first non-blank line), stripped."""
    rows = _csv_rows(path)
    return [name.strip() for name in rows[0][1]] if rows else []


def _csv_rows(path: str | Path) -> list[tuple[int, list[str]]]:
    """A CSV file's non-blank rows with their line numbers; ``DataError`` if it cannot be read."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as file:
            reader = csv.reader(file)
            return [(reader.line_num, row) for row in reader if row]  # blank lines skipped
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        why = err.strerror if isinstance(err, OSError) and err.strerror else type(err).__name__
        raise DataError(f"cannot be read as UTF-8 CSV text ({why})") from None


def read_new_rows(
    path: str | Path, n_features: int, target: str, inputs: list[str] | None
) -> tuple[np.ndarray, list[str | None] | list[list[float] | None]]:
    """Read rows to predict: inputs like the training data's, the target optional.

    A ``.csv`` has a header row. With ``inputs`` (the training file's input columns) each of them
    is found by name, in any order; otherwise every column but ``target`` is an input, in order.
    The column ``target`` may be missing or blank on any row. A ``.npz`` has ``x`` ``(n, ...)``
    (flattened to ``n_features``) and optionally ``target`` ``(n,)`` or ``(n, k)``.

    Returns:
        ``x`` ``(n, n_features)`` float64 and each row's raw target: text (``None`` when blank) for a
        CSV; for a ``.npz`` its values as text (one per row) or a list of numbers (``(n, k)``).
    """
    if str(path).endswith(".npz"):
        return _read_new_npz(path, n_features, target)
    rows = _csv_rows(path)
    if len(rows) < 2:
        raise DataError("needs a header row naming the columns, then at least one row to predict")
    header = [name.strip() for name in rows[0][1]]
    for j, name in enumerate(header):
        if header.index(name) != j:
            raise DataError(
                f"its header row names two columns alike ({name!r}); give every column its own name"
            )
    t = header.index(target) if target in header else None
    if inputs is None:
        picks = [j for j in range(len(header)) if j != t]
        if len(picks) != n_features:
            raise DataError(
                f"has {len(picks)} input columns (besides {target!r}) but the network takes {n_features}; "
                "give the training data's inputs, in its order"
            )
    else:
        missing = [name for name in inputs if name not in header]
        extra = [name for j, name in enumerate(header) if name not in inputs and j != t]
        if missing or extra:
            what = f"lacks the input column {missing[0]!r}" if missing else f"has a column {extra[0]!r}"
            raise DataError(
                f"{what}, and its columns must be the training file's inputs ({', '.join(inputs)}) "
                f"and optionally its target {target!r}"
            )
        picks = [header.index(name) for name in inputs]
    x = np.empty((len(rows) - 1, len(picks)))  # (n, d)
    targets: list[str | None] = []
    for i, (line, row) in enumerate(rows[1:]):
        if len(row) != len(header):
            raise DataError(
                f"line {line} has {len(row)} fields but the header has {len(header)}; fix that row"
            )
        for j, column in enumerate(picks):
            x[i, j] = _parse_input(row[column], column + 1, len(header), line)
        targets.append(row[t].strip() or None if t is not None else None)
    return x, targets


def _read_new_npz(path, n_features: int, target: str):
    arrays = _read_arrays(path)
    if "x" not in arrays:
        raise DataError(f"has no array 'x' (the inputs); available arrays: {', '.join(arrays) or 'none'}")
    x = arrays["x"]
    if x.ndim < 1 or len(x) == 0 or x.dtype.kind not in "biuf" or x[0].size != n_features:
        raise DataError(
            f"array 'x' must hold numbers, one row of {n_features} inputs per example "
            f"(as the network takes), got dtype {x.dtype} and shape {x.shape}"
        )
    x = x.reshape(len(x), -1).astype(np.float64)
    if not np.isfinite(x).all():
        raise DataError(f"array 'x' has a non-finite value in row {np.argwhere(~np.isfinite(x))[0][0]}")
    y = arrays.get(target)
    if y is None:
        return x, [None] * len(x)
    if len(y) != len(x) or y.ndim not in (1, 2) or y.dtype.kind not in "biufU":
        raise DataError(
            f"array {target!r} must hold one target per row of 'x' ({len(x)}), got shape {y.shape}"
        )
    if y.ndim == 2 and y.shape[1] > 1:
        return x, [[float(v) for v in row] for row in y]
    return x, [str(int(v)) if y.dtype.kind == "b" else str(v) for v in y.reshape(len(y))]
