"""Data sets as input voltages and target voltages.

Two kinds, judged differently:
- truth tables (`xor`, `case1`, `gates`): every output is a bit, right when it is nearer its own
  target level than the other; the table is both what is trained on and what is tested.
- classification (`iris`, `digits`, and user files: `npz`, `csv`, `idx`): one output per class
  (a doubled output pair on the layered builder), target_high for the sample's class and
  target_low for the others; the answer is the output nearest target_high (argmax). A fixed,
  seeded, stratified train/test split unless the files bring their own test set.

Inputs are voltages: bits map to input_low/input_high; a feature's smallest and largest value
in the training split map to input_low and input_high (test samples are clipped into that range,
so no source is ever asked for more than the training split asked for). One column per feature:
a circuit that takes both polarities makes −x itself (`builders.layered`'s duplicated inputs).

A file is read and checked completely before anything runs (exists, parses, shapes, labels,
finite values); a problem is one `DatasetError` line naming the file and the fix.
"""

from __future__ import annotations

import csv
import gzip
import importlib.util
import io
import math
import os
import struct
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np


class DatasetError(ValueError):
    """A data set that cannot be used, with the reason and the fix in one line."""


# ---------------------------------------------------------------------------------------- the data
@dataclass(frozen=True)
class Confusion:
    """How a test set's answers fall, counted.

    Classification: `counts` [classes, classes], row the true class, column the answer.
    Truth tables: `counts` [outputs, 2, 2], per output (named in `outputs`) row the true bit and
    column the answered bit."""

    counts: np.ndarray
    classes: tuple[str, ...]
    outputs: tuple[str, ...] = ()


@dataclass(frozen=True)
class Dataset:
    """Training samples (`inputs`, `targets`), how they are judged, and the test set.

    `labels` (the class of every sample) makes it a classification data set, judged by argmax;
    without it every output is judged against its own target level. `test_split` None: the data
    set is its own test set (a truth table)."""

    name: str
    inputs: np.ndarray  # [samples, inputs], V
    targets: np.ndarray  # [samples, outputs], V
    target_levels: tuple[float, float]  # (false, true) output levels, V
    labels: np.ndarray | None = None  # [samples] class index, classification only
    output_names: tuple[str, ...] = ()  # what each output stands for (a class, a gate)
    test_split: Dataset | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.inputs)

    @property
    def classification(self) -> bool:
        return self.labels is not None

    @property
    def names(self) -> tuple[str, ...]:
        return self.output_names or tuple(f"y{k}" for k in range(self.targets.shape[1]))

    def test(self) -> Dataset:
        """The samples accuracy is tested on: the held-out split, or the data set itself."""
        return self if self.test_split is None else self.test_split

    def correct(self, y: np.ndarray, index: int) -> bool:
        """Whether sample `index` is answered right by outputs `y`."""
        return bool(self.right(np.asarray(y, dtype=float)[None, :], np.array([index]))[0])

    def right(self, y: np.ndarray, index: np.ndarray | None = None) -> np.ndarray:
        """Per sample, whether outputs `y` [samples, outputs] answer it right (samples `index`,
        default all): the class nearest target_high, or every output nearer its own level."""
        index = np.arange(len(self)) if index is None else index
        if self.labels is not None:
            return self.answers(y) == self.labels[index]
        half = abs(self.target_levels[1] - self.target_levels[0]) / 2
        return np.all(np.abs(y - self.targets[index]) < half, axis=1)

    def answers(self, y: np.ndarray) -> np.ndarray:
        """Classification: the answered class per sample. Truth tables: the answered bits."""
        low, high = self.target_levels
        toward_true = (np.asarray(y, dtype=float) - low) / (high - low)
        if self.labels is not None:
            return np.argmax(toward_true, axis=1)
        return (toward_true > 0.5).astype(int)

    def accuracy(self, y: np.ndarray) -> float:
        """The fraction of samples answered right by outputs `y` [samples, outputs]."""
        return float(np.mean(self.right(y))) if len(self) else math.nan

    def confusion(self, y: np.ndarray) -> Confusion:
        """Counts of (truth, answer) over every sample, for outputs `y` [samples, outputs]."""
        answers = self.answers(y)
        if self.labels is not None:
            k = self.targets.shape[1]
            counts = np.zeros((k, k), dtype=np.int64)
            np.add.at(counts, (self.labels, answers), 1)
            return Confusion(counts, self.names)
        truth = self.answers(self.targets)
        n_out = self.targets.shape[1]
        counts = np.zeros((n_out, 2, 2), dtype=np.int64)
        np.add.at(counts, (np.broadcast_to(np.arange(n_out), truth.shape), truth, answers), 1)
        return Confusion(counts, ("0", "1"), self.names)


# ---------------------------------------------------------------------------------------- truth tables
_BITS = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=int)
GATES: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "and": lambda a, b: a & b,
    "or": lambda a, b: a | b,
    "nand": lambda a, b: 1 - (a & b),
    "nor": lambda a, b: 1 - (a | b),
    "xor": lambda a, b: a ^ b,
    "xnor": lambda a, b: 1 - (a ^ b),
}


def xor(
    input_low: float = -2.0, input_high: float = 2.0, target_low: float = 0.0, target_high: float = 1.0
) -> Dataset:
    """XOR rows in the seed's order (0,0), (0,1), (1,0), (1,1); bit b maps to low + b·(high − low)."""
    bits = _BITS.astype(float)
    out = np.array([[0], [1], [1], [0]], dtype=float)
    return Dataset(
        "xor",
        input_low + bits * (input_high - input_low),
        target_low + out * (target_high - target_low),
        (target_low, target_high),
    )


def case1(
    input_low: float = -2.0, input_high: float = 2.0, target_low: float = 0.0, target_high: float = 1.0
) -> Dataset:
    """Case 1 of the 2023 paper: one sample, V0 = input_low and V1 = input_high (−2 V, 2 V), target
    target_high (1 V); target_low only sets the level a wrong answer is judged against."""
    return Dataset(
        "case1",
        np.array([[input_low, input_high]], dtype=float),
        np.array([[target_high]], dtype=float),
        (target_low, target_high),
    )


def gates(
    names: Sequence[str],
    input_low: float = -2.0,
    input_high: float = 2.0,
    target_low: float = 0.0,
    target_high: float = 1.0,
) -> Dataset:
    """Two-input logic gates, one output each (in the order named), on XOR's four rows."""
    unknown = [n for n in names if n not in GATES]
    if not names or unknown or len(set(names)) != len(names):
        raise DatasetError(
            f'gates = {list(names)!r}: name each gate once, from {", ".join(GATES)} (e.g. ["and", "xor"])'
        )
    a, b = _BITS[:, 0], _BITS[:, 1]
    out = np.stack([GATES[n](a, b) for n in names], axis=1).astype(float)
    return Dataset(
        "gates",
        input_low + _BITS.astype(float) * (input_high - input_low),
        target_low + out * (target_high - target_low),
        (target_low, target_high),
        output_names=tuple(names),
    )


# ---------------------------------------------------------------------------------------- splitting
def stratified_take(labels: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """`count` sample indices drawn so that every class keeps its share (largest remainders),
    in a random order."""
    classes, members = np.unique(labels, return_inverse=True)
    sizes = np.bincount(members, minlength=len(classes))
    share = sizes * count / len(labels)
    quota = np.floor(share).astype(int)
    for k in np.argsort(-(share - quota), kind="stable")[: count - int(quota.sum())]:
        quota[k] += 1
    taken = [rng.permutation(np.flatnonzero(members == k))[: quota[k]] for k in range(len(classes))]
    return rng.permutation(np.concatenate(taken)) if taken else np.zeros(0, dtype=int)


def split(labels: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) indices: a stratified split, the same for the same labels and seed. The
    training indices come in a seeded random order (classes interleaved, so online training
    without shuffling does not see one class after another); the test indices sorted."""
    rng = np.random.default_rng(seed)
    test = np.sort(stratified_take(labels, round(test_fraction * len(labels)), rng))
    rest = np.setdiff1d(np.arange(len(labels)), test)
    return rng.permutation(rest), test


def scale(train: np.ndarray, test: np.ndarray, low: float, high: float) -> tuple[np.ndarray, np.ndarray]:
    """Features to volts: each feature's training minimum to `low`, maximum to `high` (test values
    clipped into that range); a feature constant in training sits at `low`."""
    lo, hi = train.min(axis=0), train.max(axis=0)
    span = hi - lo
    if not np.any(span > 0):
        raise DatasetError("every feature is constant in the training split: there is nothing to learn")
    varies = span > 0
    safe = np.where(varies, span, 1.0)

    def unit(x: np.ndarray) -> np.ndarray:
        return np.where(varies, np.clip((x - lo) / safe, 0.0, 1.0), 0.0)

    return low + unit(train) * (high - low), low + unit(test) * (high - low)


@dataclass(frozen=True)
class Levels:
    """Voltages and split of a classification data set (the [dataset] keys)."""

    input_low: float = -2.0
    input_high: float = 2.0
    target_low: float = 0.0
    target_high: float = 1.0
    test_fraction: float = 0.2
    split_seed: int = 0
    train_samples: int = 0  # 0: all
    test_samples: int = 0


def classification(
    name: str,
    features: np.ndarray,
    labels: np.ndarray,
    classes: Sequence[str],
    levels: Levels,
    test: tuple[np.ndarray, np.ndarray] | None = None,
) -> Dataset:
    """A classification data set from raw features [samples, features] and class indices: split
    (unless `test` brings its own), subsets taken, scaled to volts, one target per class."""
    if test is None:
        train_idx, test_idx = split(labels, levels.test_fraction, levels.split_seed)
        if len(train_idx) == 0 or len(test_idx) == 0:
            raise DatasetError(
                f"{len(labels)} samples split at test_fraction = {levels.test_fraction:g} leave an empty "
                "split: give more samples or another test_fraction"
            )
        x_test, y_test = features[test_idx], labels[test_idx]
        x_train, y_train = features[train_idx], labels[train_idx]
    else:
        x_test, y_test = test
        order = np.random.default_rng(levels.split_seed).permutation(len(labels))
        x_train, y_train = features[order], labels[order]
    rng = np.random.default_rng([levels.split_seed, 1])
    for which, count in (("train", levels.train_samples), ("test", levels.test_samples)):
        have = len(y_train) if which == "train" else len(y_test)
        if count > have:
            raise DatasetError(
                f"{which}_samples = {count} but the {which} split holds {have}: give at most {have} (0 = all)"
            )
        if 0 < count < have:
            pick = stratified_take(y_train if which == "train" else y_test, count, rng)
            if which == "train":
                x_train, y_train = x_train[pick], y_train[pick]
            else:
                pick = np.sort(pick)
                x_test, y_test = x_test[pick], y_test[pick]
    v_train, v_test = scale(x_train, x_test, levels.input_low, levels.input_high)
    low, high = levels.target_low, levels.target_high
    k = len(classes)

    def targets(y: np.ndarray) -> np.ndarray:
        return np.where(np.arange(k)[None, :] == y[:, None], high, low).astype(float)

    held_out = Dataset(name, v_test, targets(y_test), (low, high), y_test, tuple(classes))
    return Dataset(name, v_train, targets(y_train), (low, high), y_train, tuple(classes), held_out)


def _bundled(name: str) -> Path | None:
    """A data file scikit-learn ships (sklearn/datasets/data/NAME), found without importing
    scikit-learn, whose import takes seconds; None when it is not where it has always been."""
    spec = importlib.util.find_spec("sklearn")
    for folder in (spec.submodule_search_locations or []) if spec is not None else []:
        path = Path(folder) / "datasets" / "data" / name
        if path.is_file():
            return path
    return None


def _load_iris() -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    path = _bundled("iris.csv")
    if path is None:
        from sklearn.datasets import load_iris

        bunch = load_iris()
        return bunch.data, bunch.target, tuple(str(n) for n in bunch.target_names)
    # Its first row: samples, features, then the class names; then features and class per row.
    header, *rows = path.read_text().splitlines()
    names = tuple(header.split(",")[2:])
    table = np.array([r.split(",") for r in rows if r], dtype=float)
    return table[:, :-1], table[:, -1].astype(int), names


def _load_digits() -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    path = _bundled("digits.csv.gz")
    if path is None:
        from sklearn.datasets import load_digits

        bunch = load_digits()
        return bunch.data, bunch.target, tuple(str(n) for n in bunch.target_names)
    table = np.loadtxt(path, delimiter=",")  # 64 pixels (0–16), then the digit, per row
    return table[:, :-1], table[:, -1].astype(int), tuple(str(k) for k in range(10))


def iris(levels: Levels = Levels()) -> Dataset:
    """Fisher's iris (scikit-learn's bundled copy): 150 samples, 4 features, 3 classes."""
    x, y, names = _load_iris()
    return classification("iris", x.astype(float), y.astype(int), names, levels)


def digits(levels: Levels = Levels()) -> Dataset:
    """scikit-learn's bundled 8×8 handwritten digits: 1797 samples, 64 pixels (0–16), 10 classes."""
    x, y, names = _load_digits()
    return classification("digits", x.astype(float), y.astype(int), names, levels)


# ---------------------------------------------------------------------------------------- user files
MAX_FILE_BYTES = 1 << 30  # decompressed; MNIST's largest file is 47 MB
MAX_SAMPLES = 1_000_000


def _shown(path: Path) -> str:
    return str(path) if str(path).isprintable() else repr(str(path))


def _read_bytes(path: Path, what: str, fix: str) -> bytes:
    """A file's bytes, gunzipped when it is gzip (by its magic, whatever its name), at most
    MAX_FILE_BYTES of them. A name ending in .gz finds the file without it, and the reverse: MNIST
    comes gzip'ed and is as often kept unpacked under the same name."""
    if not path.is_file():
        other = path.with_suffix("") if path.suffix == ".gz" else path.with_name(path.name + ".gz")
        if not other.is_file():
            raise DatasetError(f"{what} {_shown(path)} not found (nor {_shown(Path(other.name))}): {fix}")
        path = other
    try:
        with open(path, "rb") as handle:
            head = handle.read(2)
            handle.seek(0)
            stream: io.BufferedIOBase | gzip.GzipFile = (
                gzip.GzipFile(fileobj=handle) if head == b"\x1f\x8b" else handle
            )
            data = stream.read(MAX_FILE_BYTES + 1)
    except (OSError, EOFError) as exc:  # gzip's BadGzipFile is an OSError; a cut gzip an EOFError
        reason = getattr(exc, "strerror", None) or exc or "cut short"
        raise DatasetError(f"{what} {_shown(path)} cannot be read ({reason}): {fix}") from exc
    if len(data) > MAX_FILE_BYTES:
        raise DatasetError(f"{what} {_shown(path)} holds more than {MAX_FILE_BYTES:,} bytes: {fix}")
    return data


def _labels(raw: np.ndarray, where: str) -> tuple[np.ndarray, tuple[str, ...]]:
    """Class indices and class names from a label column: integers 0, 1, … (names "0", "1", …)
    or text (classes in sorted order)."""
    raw = np.asarray(raw)
    if raw.ndim != 1:
        raise DatasetError(f"{where}: labels must be one per sample (a 1-D array), not shape {raw.shape}")
    if raw.dtype.kind in "USO":
        text = raw.astype(str)
        names, index = np.unique(text, return_inverse=True)
        return index.astype(int), tuple(str(n) for n in names)
    if raw.dtype.kind not in "iuf" or raw.size == 0:
        raise DatasetError(f"{where}: labels must be class numbers 0, 1, 2, … or class names")
    values = raw.astype(float)
    bad = np.flatnonzero(~np.isfinite(values) | (values < 0) | (values != np.round(values)))
    if len(bad):
        raise DatasetError(
            f"{where}: label {raw[bad[0]].item()!r} (sample {bad[0]}) is not a class number: labels must be "
            "0, 1, 2, … (one per class)"
        )
    index = values.astype(int)
    return index, tuple(str(k) for k in range(int(index.max()) + 1))


def _features(raw: np.ndarray, where: str) -> np.ndarray:
    raw = np.asarray(raw)
    if raw.dtype.kind not in "iuf":
        raise DatasetError(f"{where}: features must be numbers, not {raw.dtype}")
    if raw.ndim < 2 or raw.shape[0] == 0:
        raise DatasetError(
            f"{where}: features must be [samples, features] (or images), not shape {raw.shape}"
        )
    x = raw.reshape(raw.shape[0], -1).astype(float)
    bad = np.argwhere(~np.isfinite(x))
    if len(bad):
        raise DatasetError(
            f"{where}: sample {bad[0][0]}, feature {bad[0][1]} is {x[tuple(bad[0])]}: every feature must "
            "be a finite number"
        )
    if len(x) > MAX_SAMPLES:
        raise DatasetError(f"{where}: {len(x):,} samples, more than {MAX_SAMPLES:,}: take a subset")
    return x


def _pair(x: np.ndarray, y: np.ndarray, where: str) -> None:
    if len(x) != len(y):
        raise DatasetError(f"{where}: {len(x)} samples but {len(y)} labels: give one label per sample")


def _classes(names: tuple[str, ...], other: tuple[str, ...]) -> tuple[str, ...]:
    """Numbered classes of a training and a test set: as many as the larger numbering."""
    return names if len(names) >= len(other) else other


def npz(path: Path, levels: Levels = Levels()) -> Dataset:
    """An .npz file with arrays `X` [samples, features] and `y` [samples] (class numbers or
    names); `X_test` and `y_test` too when the file brings its own test set."""
    fix = "give an .npz file with arrays X [samples, features] and y [samples] (np.savez)"
    data = _read_bytes(path, "npz file", fix)
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
            found = {k: arrays[k] for k in arrays.files}
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
        raise DatasetError(f"npz file {_shown(path)} does not parse ({exc}): {fix}") from exc
    missing = [k for k in ("X", "y") if k not in found]
    if missing:
        raise DatasetError(
            f"npz file {_shown(path)} has no array {missing[0]} (it has {', '.join(found) or 'none'}): {fix}"
        )
    if ("X_test" in found) != ("y_test" in found):
        raise DatasetError(f"npz file {_shown(path)}: give both X_test and y_test, or neither")
    where = f"npz file {_shown(path)}"
    x = _features(found["X"], f"{where}, X")
    y, names = _labels(found["y"], f"{where}, y")
    _pair(x, y, f"{where}, X and y")
    test = None
    if "X_test" in found:
        x_test = _features(found["X_test"], f"{where}, X_test")
        y_test, test_names = _labels(found["y_test"], f"{where}, y_test")
        _pair(x_test, y_test, f"{where}, X_test and y_test")
        if x_test.shape[1] != x.shape[1]:
            raise DatasetError(
                f"{where}: X_test has {x_test.shape[1]} features, X {x.shape[1]}: give both the same features"
            )
        if found["y"].dtype.kind in "USO" or found["y_test"].dtype.kind in "USO":
            names = tuple(sorted(set(found["y"].astype(str)) | set(found["y_test"].astype(str))))
            lookup = {n: k for k, n in enumerate(names)}
            y = np.array([lookup[str(v)] for v in found["y"]], dtype=int)
            y_test = np.array([lookup[str(v)] for v in found["y_test"]], dtype=int)
        else:
            names = _classes(names, test_names)
        test = (x_test, y_test)
    return classification("npz", x, y, names, levels, test)


def csv_file(path: Path, label_column: str | int = -1, levels: Levels = Levels()) -> Dataset:
    """A CSV file, one sample a row: the label column (a header name, or a column number counted
    from 0, negative from the end) and the features in every other column. A first row that is
    not all numbers is the header."""
    fix = "give a CSV file of numbers, one sample a row, with a label column"
    text = _read_bytes(path, "CSV file", fix)
    try:
        rows = [r for r in csv.reader(io.StringIO(text.decode("utf-8-sig"))) if any(c.strip() for c in r)]
    except (UnicodeDecodeError, csv.Error) as exc:
        raise DatasetError(f"CSV file {_shown(path)} does not parse ({exc}): {fix}") from exc
    where = f"CSV file {_shown(path)}"
    header: list[str] | None = None
    if rows and not all(_is_number(c) for c in rows[0]):
        header, rows = [c.strip() for c in rows[0]], rows[1:]
    if not rows:
        raise DatasetError(f"{where} holds no sample: {fix}")
    width = len(header) if header is not None else len(rows[0])
    ragged = next((i for i, r in enumerate(rows) if len(r) != width), None)
    if ragged is not None:
        raise DatasetError(
            f"{where}: sample {ragged + 1} has {len(rows[ragged])} columns, the "
            f"{'header' if header is not None else 'first row'} {width}: give every row the same columns"
        )
    if width < 2:
        raise DatasetError(f"{where} has {width} column: give features and a label column")
    if isinstance(label_column, str):
        if header is None or label_column not in header:
            known = f"its header has {', '.join(header)}" if header is not None else "it has no header row"
            raise DatasetError(
                f"{where}: no column named {label_column!r} ({known}): set [dataset] label_column to a "
                "column's name or number"
            )
        column = header.index(label_column)
    else:
        if not -width <= label_column < width:
            raise DatasetError(
                f"{where} has {width} columns: label_column = {label_column} must be from {-width} to "
                f"{width - 1}"
            )
        column = label_column % width
    labels_raw = [r[column].strip() for r in rows]
    cells = [[c for j, c in enumerate(r) if j != column] for r in rows]
    try:
        x = np.array(cells, dtype=float)
    except ValueError as exc:
        raise DatasetError(f"{where}: a feature is not a number ({exc}): {fix}") from exc
    numeric = all(_is_number(v) for v in labels_raw)
    y, names = _labels(np.array(labels_raw, dtype=float if numeric else str), f"{where}, labels")
    return classification("csv", _features(x, where), y, names, levels)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


# IDX (MNIST's format): two zero bytes, a type byte, the number of dimensions, each dimension as a
# big-endian uint32, then the values, big-endian.
IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: Path, what: str = "IDX file") -> np.ndarray:
    """An MNIST-format IDX file (gzip'ed or not) as an array of its shape and type."""
    fix = "give an MNIST-format IDX file (such as train-images-idx3-ubyte, gzip'ed or not)"
    data = _read_bytes(path, what, fix)
    where = f"{what} {_shown(path)}"
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in IDX_TYPES or not 1 <= data[3] <= 8:
        raise DatasetError(f"{where} is not an IDX file (it starts {data[:4].hex() or 'empty'}): {fix}")
    ndim = data[3]
    if len(data) < 4 + 4 * ndim:
        raise DatasetError(f"{where} is cut short inside its header: {fix}")
    dims = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    dtype = np.dtype(IDX_TYPES[data[2]])
    expected = math.prod(dims) * dtype.itemsize
    body = len(data) - 4 - 4 * ndim
    if body != expected:
        raise DatasetError(
            f"{where} holds {body:,} bytes of values, its header announces {' × '.join(map(str, dims))} = "
            f"{expected:,}: the file is {'cut short' if body < expected else 'longer than its header'}; {fix}"
        )
    return np.frombuffer(data, dtype=dtype, offset=4 + 4 * ndim).reshape(dims)


def idx(
    train_images: Path,
    train_labels: Path,
    test_images: Path | None = None,
    test_labels: Path | None = None,
    levels: Levels = Levels(),
) -> Dataset:
    """MNIST-format files (MNIST, Fashion-MNIST, ...): images [samples, rows, cols] and labels
    [samples]; without test files, a split of the training files."""
    x = _features(read_idx(train_images, "train_images"), f"train_images {_shown(train_images)}")
    y, names = _labels(read_idx(train_labels, "train_labels"), f"train_labels {_shown(train_labels)}")
    _pair(x, y, f"train_images {_shown(train_images)} and train_labels {_shown(train_labels)}")
    test = None
    if test_images is not None and test_labels is not None:
        x_test = _features(read_idx(test_images, "test_images"), f"test_images {_shown(test_images)}")
        y_test, test_names = _labels(
            read_idx(test_labels, "test_labels"), f"test_labels {_shown(test_labels)}"
        )
        _pair(x_test, y_test, f"test_images {_shown(test_images)} and test_labels {_shown(test_labels)}")
        if x_test.shape[1] != x.shape[1]:
            raise DatasetError(
                f"test_images {_shown(test_images)} has {x_test.shape[1]} pixels per image, train_images "
                f"{x.shape[1]}: give images of one size"
            )
        names = _classes(names, test_names)
        test = (x_test, y_test)
    elif (test_images is None) != (test_labels is None):
        raise DatasetError(
            "give both test_images and test_labels, or neither (a split of the training files)"
        )
    return classification("idx", x, y, names, levels, test)


# ---------------------------------------------------------------------------------------- by name
NAMES = ("xor", "case1", "gates", "iris", "digits", "npz", "csv", "idx")
TRUTH_TABLES = ("xor", "case1", "gates")
FILES = {"npz": ("path",), "csv": ("path",), "idx": ("train_images", "train_labels")}
FILE_KEYS = ("path", "train_images", "train_labels", "test_images", "test_labels")


def build(table: Mapping[str, Any]) -> Dataset:
    """The data set a checked [dataset] table describes (file paths absolute). The same table
    and unchanged files give the same (shared, read-only) arrays without reading them again."""
    key = tuple(
        (k, tuple(v) if isinstance(v, list) else v, _stamp(v) if k in FILE_KEYS else None)
        for k, v in sorted(table.items())
    )
    return _build(key)


def _stamp(value: Any) -> tuple[int, int] | None:
    try:
        st = os.stat(value) if value else None
    except OSError:
        return None
    return None if st is None else (st.st_mtime_ns, st.st_size)


@lru_cache(maxsize=4)
def _build(key: tuple[tuple[str, Any, Any], ...]) -> Dataset:
    d = {k: v for k, v, _ in key}
    levels = (d["input_low"], d["input_high"], d["target_low"], d["target_high"])
    name = d["name"]
    data: Dataset
    if name == "xor":
        data = xor(*levels)
    elif name == "case1":
        data = case1(*levels)
    elif name == "gates":
        data = gates(list(d["gates"]), *levels)
    else:
        lv = Levels(*levels, d["test_fraction"], d["split_seed"], d["train_samples"], d["test_samples"])
        if name == "iris":
            data = iris(lv)
        elif name == "digits":
            data = digits(lv)
        elif name == "npz":
            data = npz(Path(d["path"]), lv)
        elif name == "csv":
            data = csv_file(Path(d["path"]), d["label_column"], lv)
        elif name == "idx":
            test = [Path(d[k]) if d[k] else None for k in ("test_images", "test_labels")]
            data = idx(Path(d["train_images"]), Path(d["train_labels"]), test[0], test[1], lv)
        else:
            raise DatasetError(f"unknown data set {name!r}: use one of {', '.join(NAMES)}")
    for part in {id(data): data, id(data.test()): data.test()}.values():
        for array in (part.inputs, part.targets, part.labels):
            if array is not None:
                array.setflags(write=False)
    return data


# The loaders of the data sets that need no more than the four levels (kept for scripts).
DATASETS: dict[str, Callable[..., Dataset]] = {"xor": xor, "case1": case1}
