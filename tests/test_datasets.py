"""Data sets: truth tables, the bundled iris and digits, user files (npz, CSV, IDX), the seeded
stratified split, scaling to volts from the training split, argmax and threshold judging, the
confusion matrix, the checks a config's data set gets before anything runs, and what a training
records (training and test accuracy per epoch, the final confusion in the run log)."""

from __future__ import annotations

import re
import struct
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import write_idx

import hil
from hil import builders, datasets, train
from hil.config import ConfigError
from hil.datasets import DatasetError, Levels
from hil.interface import settle_each
from sim.twin import TwinBackend

ROOT = Path(__file__).resolve().parent.parent
ROWS = [(0, 0), (0, 1), (1, 0), (1, 1)]
TRUTH = {
    "and": lambda a, b: a and b,
    "or": lambda a, b: a or b,
    "nand": lambda a, b: not (a and b),
    "nor": lambda a, b: not (a or b),
    "xor": lambda a, b: a != b,
    "xnor": lambda a, b: a == b,
}


# ---------------------------------------------------------------------------------------- truth tables
def test_xor_and_case1_are_the_seeds_rows_exactly():
    data = datasets.xor()
    np.testing.assert_array_equal(data.inputs, [[-2, -2], [-2, 2], [2, -2], [2, 2]])
    np.testing.assert_array_equal(data.targets, [[0], [1], [1], [0]])
    assert data.test() is data and not data.classification
    one = datasets.case1()
    np.testing.assert_array_equal(one.inputs, [[-2, 2]])
    np.testing.assert_array_equal(one.targets, [[1]])


def test_every_gate_is_its_truth_table_and_the_table_is_the_test_set():
    data = datasets.gates(list(TRUTH), -1.0, 3.0, 0.0, 0.5)
    assert data.output_names == tuple(TRUTH) and data.test() is data
    for row, (a, b) in enumerate(ROWS):
        np.testing.assert_array_equal(data.inputs[row], [-1.0 + 4.0 * a, -1.0 + 4.0 * b])
        expected = [0.5 if f(bool(a), bool(b)) else 0.0 for f in TRUTH.values()]
        np.testing.assert_array_equal(data.targets[row], expected)
    np.testing.assert_array_equal(datasets.gates(["xor"]).targets, datasets.xor().targets)


@pytest.mark.parametrize("names", [[], ["and", "and"], ["nimply"]])
def test_a_wrong_gate_list_is_refused(names):
    with pytest.raises(DatasetError, match="name each gate once"):
        datasets.gates(names)


def test_truth_tables_are_judged_per_output_and_counted_per_output():
    data = datasets.gates(["and", "xor"])
    y = data.targets.copy()
    y[3, 0] = 0.4  # AND of (1, 1) answered 0: that row is wrong
    y[1, 1] = 0.6  # XOR of (0, 1) still nearer 1: right
    np.testing.assert_array_equal(data.right(y), [True, True, True, False])
    assert data.accuracy(y) == 0.75
    confusion = data.confusion(y)
    assert confusion.outputs == ("and", "xor") and confusion.classes == ("0", "1")
    np.testing.assert_array_equal(confusion.counts[0], [[3, 0], [1, 0]])  # true 1 answered 0
    np.testing.assert_array_equal(confusion.counts[1], [[2, 0], [0, 2]])


# ---------------------------------------------------------------------------------------- splitting
def test_the_split_is_stratified_disjoint_complete_and_seeded():
    labels = np.repeat([0, 1, 2], [50, 30, 20])
    train_idx, test_idx = datasets.split(labels, 0.2, seed=7)
    assert len(test_idx) == 20 and len(train_idx) == 80
    assert sorted(np.concatenate([train_idx, test_idx]).tolist()) == list(range(100))
    np.testing.assert_array_equal(np.bincount(labels[test_idx]), [10, 6, 4])
    again = datasets.split(labels, 0.2, seed=7)
    np.testing.assert_array_equal(again[0], train_idx)
    np.testing.assert_array_equal(again[1], test_idx)
    assert not np.array_equal(datasets.split(labels, 0.2, seed=8)[1], test_idx)
    # Online training without shuffling must not see one class after another.
    assert len(set(labels[train_idx[:10]].tolist())) > 1


def test_features_scale_by_the_training_split_alone():
    x_train = np.array([[0.0, 5.0, 1.0], [10.0, 5.0, 3.0], [5.0, 5.0, 2.0]])
    x_test = np.array([[20.0, 9.0, 2.0], [-10.0, 5.0, 1.5]])
    v_train, v_test = datasets.scale(x_train, x_test, -2.0, 2.0)
    np.testing.assert_allclose(v_train, [[-2, -2, -2], [2, -2, 2], [0, -2, 0]])
    # Beyond the training range: clipped; a feature constant in training sits at the low level.
    np.testing.assert_allclose(v_test, [[2, -2, 0], [-2, -2, -1]])
    with pytest.raises(DatasetError, match="every feature is constant"):
        datasets.scale(np.ones((3, 2)), np.ones((1, 2)), -1.0, 1.0)


def _blobs(n_per_class=(6, 6, 6), features=3, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(len(n_per_class)), n_per_class)
    x = rng.normal(size=(len(labels), features)) + 3 * labels[:, None]
    return x, labels


def test_a_classification_set_has_one_target_per_class_and_is_judged_by_argmax():
    x, labels = _blobs()
    data = datasets.classification("blobs", x, labels, ("a", "b", "c"), Levels(-1.0, 1.0, 0.1, 0.9))
    assert data.classification and data.test() is not data and len(data.test()) == 4
    for d in (data, data.test()):
        assert d.labels is not None
        np.testing.assert_array_equal(np.argmax(d.targets, axis=1), d.labels)
        assert set(np.unique(d.targets)) == {0.1, 0.9}
        assert np.all(np.sum(d.targets == 0.9, axis=1) == 1)
    test = data.test()
    y = np.full((4, 3), 0.2)
    y[np.arange(4), test.labels] = 0.3  # the true class highest, though nowhere near 0.9: right
    y[0] = [0.0, 0.0, 0.0]
    y[0, (test.labels[0] + 1) % 3] = 0.5  # sample 0 answered the next class
    assert test.accuracy(y) == 0.75
    counts = test.confusion(y).counts
    assert counts.shape == (3, 3) and counts.sum() == 4 and np.trace(counts) == 3
    assert counts[test.labels[0], (test.labels[0] + 1) % 3] == 1


def test_inverted_target_levels_answer_the_class_nearest_target_high():
    x, labels = _blobs()
    data = datasets.classification(
        "blobs", x, labels, ("a", "b", "c"), Levels(target_low=1.0, target_high=0.0)
    )
    assert data.accuracy(data.targets) == 1.0
    assert data.accuracy(1.0 - data.targets) < 1.0


def test_subsets_are_stratified_and_too_many_is_refused():
    x, labels = _blobs((20, 20, 20))
    data = datasets.classification("b", x, labels, ("a", "b", "c"), Levels(train_samples=9, test_samples=6))
    assert len(data) == 9 and len(data.test()) == 6
    np.testing.assert_array_equal(np.bincount(data.labels), [3, 3, 3])
    with pytest.raises(DatasetError, match="train_samples = 49 but the train split holds 48"):
        datasets.classification("b", x, labels, ("a", "b", "c"), Levels(train_samples=49))


# ---------------------------------------------------------------------------------------- bundled
def test_iris_and_digits_are_scikit_learns_bundled_sets_split_and_scaled():
    from sklearn.datasets import load_digits, load_iris

    for loader, reference in ((datasets._load_iris, load_iris()), (datasets._load_digits, load_digits())):
        x, y, names = loader()
        np.testing.assert_array_equal(x, reference.data)
        np.testing.assert_array_equal(y, reference.target)
        assert names == tuple(str(n) for n in reference.target_names)
    iris = datasets.iris(Levels(-2.0, 2.0))
    assert iris.inputs.shape == (120, 4) and iris.test().inputs.shape == (30, 4)
    assert iris.output_names == ("setosa", "versicolor", "virginica")
    np.testing.assert_array_equal(np.bincount(iris.test().labels), [10, 10, 10])
    np.testing.assert_allclose(iris.inputs.min(axis=0), -2.0)
    np.testing.assert_allclose(iris.inputs.max(axis=0), 2.0)
    digits = datasets.digits(Levels(test_fraction=0.2))
    assert digits.inputs.shape[1] == 64 and digits.targets.shape[1] == 10
    assert len(digits) + len(digits.test()) == 1797 and len(digits.test()) == 359


# ---------------------------------------------------------------------------------------- user files
def _images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 3
    images = rng.integers(0, 50, size=(n, 4, 5)).astype(np.uint8)
    images[:, 0, 0] += (80 * labels).astype(np.uint8)  # a pixel that tells the class
    return images, labels.astype(np.uint8)


def test_idx_files_read_back_as_written_gzipped_or_not(tmp_path):
    images, _ = _images(7, 0)
    for compress in (False, True):
        path = write_idx(tmp_path / f"i{compress}", images, compress=compress)
        got = datasets.read_idx(path)
        assert got.shape == (7, 4, 5) and got.dtype == np.uint8
        np.testing.assert_array_equal(got, images)
    floats = np.linspace(-1, 1, 12).reshape(3, 4)
    np.testing.assert_array_equal(
        datasets.read_idx(write_idx(tmp_path / "f", floats, 0x0D)), floats.astype(">f4")
    )


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"", "is not an IDX file"),
        (b"PK\x03\x04 not idx", "is not an IDX file"),
        (
            bytes([0, 0, 8, 3]) + struct.pack(">3I", 2, 2, 2) + bytes(7),
            "7 bytes of values, its header announces",
        ),
        (bytes([0, 0, 8, 3]) + struct.pack(">2I", 2, 2), "cut short inside its header"),
        (b"\x1f\x8b\x08\x00garbage", "cannot be read"),
    ],
)
def test_a_broken_idx_file_is_one_line_naming_it(tmp_path, content, expected):
    path = tmp_path / "bad-idx"
    path.write_bytes(content)
    with pytest.raises(DatasetError, match=expected) as caught:
        datasets.read_idx(path)
    assert str(path) in str(caught.value) and "\n" not in str(caught.value)


def test_mnist_format_files_train_and_test_through_a_config(tmp_path):
    """What configs/mnist.toml does, on small files the test writes: paths relative to the
    config, gzip'ed files and unpacked ones under the config's .gz names, own test files, one
    output per class, and a run log's copy of the config still finds the files from elsewhere."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    train_images, train_labels = _images(30, 1)
    test_images, test_labels = _images(9, 2)
    write_idx(data_dir / "train-images-idx3-ubyte.gz", train_images, compress=True)
    write_idx(data_dir / "train-labels-idx1-ubyte.gz", train_labels, compress=True)
    write_idx(data_dir / "t10k-images-idx3-ubyte", test_images)
    write_idx(data_dir / "t10k-labels-idx1-ubyte", test_labels)
    text = (ROOT / "configs/mnist.toml").read_text()
    text = text.replace("inputs = 784", "inputs = 20").replace("outputs = 10", "outputs = 3")
    text = re.sub(r"(?m)^hidden = \[\d+\]", "hidden = [4]", text)
    # The test files unpacked, the config still naming them .gz: the name without .gz is found.
    text = text.replace("../data/", "data/")
    (tmp_path / "mnist.toml").write_text(text)
    experiment = hil.load(tmp_path / "mnist.toml", {"backend": {"name": "numeric"}})
    data = experiment.dataset()
    assert len(data) == 30 and len(data.test()) == 9 and data.targets.shape == (30, 3)
    np.testing.assert_array_equal(np.sort(data.labels), np.sort(train_labels))
    np.testing.assert_array_equal(data.test().labels, test_labels)  # the files' own order
    assert experiment["dataset"]["train_images"] == str(data_dir / "train-images-idx3-ubyte.gz")
    elsewhere = hil.config.loads(experiment.to_toml(), tmp_path / "runs" / "log.h5")
    np.testing.assert_array_equal(elsewhere.dataset().inputs, data.inputs)


def test_mnist_files_that_do_not_fit_the_circuit_or_each_other_are_refused(tmp_path):
    images, labels = _images(12, 3)
    write_idx(tmp_path / "x", images)
    write_idx(tmp_path / "y", labels)
    write_idx(tmp_path / "y11", labels[:11])
    write_idx(tmp_path / "y9", np.where(labels == 2, 9, labels).astype(np.uint8))
    head = '[circuit]\nbuilder = "layered"\ninputs = 20\nhidden = [2]\noutputs = 3\n'
    head += '[backend]\nname = "numeric"\n'

    def refusal(dataset: str) -> str:
        (tmp_path / "c.toml").write_text(head + '[dataset]\nname = "idx"\n' + dataset)
        with pytest.raises(ConfigError) as caught:
            hil.load(tmp_path / "c.toml")
        message = str(caught.value)
        assert "\n" not in message and str(tmp_path / "c.toml") in message
        return message

    assert "12 samples but 11 labels" in refusal('train_images = "x"\ntrain_labels = "y11"\n')
    assert (
        "10 outputs (one per class) but the circuit has 20 and 3: set [circuit] inputs = 20, outputs = 10"
        in refusal('train_images = "x"\ntrain_labels = "y9"\n')
    )
    assert "train_images" in refusal('train_images = "nothing-here"\ntrain_labels = "y"\n')
    assert "nothing-here.gz not found (nor nothing-here): give an MNIST-format IDX file" in refusal(
        'train_images = "nothing-here.gz"\ntrain_labels = "y"\n'
    )
    assert "needs train_labels" in refusal('train_images = "x"\n')
    assert "both test_images and test_labels" in refusal(
        'train_images = "x"\ntrain_labels = "y"\ntest_images = "x"\n'
    )
    assert "test_images has 20" not in refusal(
        'train_images = "x"\ntrain_labels = "y"\ngates = ["and"]\n'
    )  # gates applies to name = "gates" only
    ok = tmp_path / "c.toml"
    ok.write_text(
        head + '[dataset]\nname = "idx"\ntrain_images = "x"\ntrain_labels = "y"\ntest_fraction = 0.25\n'
    )
    data = hil.load(ok).dataset()
    assert len(data) == 9 and len(data.test()) == 3


def test_npz_files_with_or_without_their_own_test_set(tmp_path):
    x, labels = _blobs((10, 10, 10), features=5)
    np.savez(tmp_path / "d.npz", X=x, y=labels)
    data = datasets.npz(tmp_path / "d.npz", Levels(test_fraction=0.3))
    assert len(data) == 21 and len(data.test()) == 9 and data.output_names == ("0", "1", "2")
    names = np.array(["cat", "dog", "eel"])[labels]
    np.savez(tmp_path / "t.npz", X=x[:20], y=names[:20], X_test=x[20:], y_test=names[20:])
    own = datasets.npz(tmp_path / "t.npz")
    assert own.output_names == ("cat", "dog", "eel") and len(own.test()) == 10
    np.testing.assert_array_equal(own.test().labels, labels[20:])


@pytest.mark.parametrize(
    ("arrays", "expected"),
    [
        ({"X": np.ones((3, 2))}, "has no array y"),
        ({"X": np.ones((3, 2)), "y": np.array([0, 1])}, "3 samples but 2 labels"),
        ({"X": np.array([[0.0, np.nan], [1, 2]]), "y": np.array([0, 1])}, "sample 0, feature 1 is nan"),
        ({"X": np.eye(2), "y": np.array([0, -1])}, "label -1 .* is not a class number"),
        ({"X": np.eye(2), "y": np.array([0.0, 1.5])}, "label 1.5 .* is not a class number"),
        ({"X": np.ones(3), "y": np.array([0, 1, 0])}, "features must be"),
        ({"X": np.eye(2), "y": np.array([0, 1]), "X_test": np.eye(2)}, "both X_test and y_test"),
    ],
)
def test_a_bad_npz_file_is_one_line(tmp_path, arrays, expected):
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(DatasetError, match=expected) as caught:
        datasets.npz(tmp_path / "bad.npz")
    assert "\n" not in str(caught.value)


def test_a_file_that_is_not_npz_or_holds_objects_is_refused(tmp_path):
    (tmp_path / "text.npz").write_text("X,y\n1,2\n")
    with pytest.raises(DatasetError, match="does not parse"):
        datasets.npz(tmp_path / "text.npz")
    np.savez(tmp_path / "objects.npz", X=np.array([[1, 2]], dtype=object), y=np.array([0]))
    with pytest.raises(DatasetError, match="does not parse"):
        datasets.npz(tmp_path / "objects.npz")


def test_csv_files_by_header_name_or_column_number(tmp_path):
    x, labels = _blobs((5, 5), features=2)
    rows = "\n".join(
        f"{a},{kind},{b}" for (a, b), kind in zip(x, np.array(["no", "yes"])[labels], strict=True)
    )
    (tmp_path / "h.csv").write_text("width,kind,height\n" + rows + "\n\n")
    data = datasets.csv_file(tmp_path / "h.csv", "kind", Levels(test_fraction=0.2))
    assert data.output_names == ("no", "yes") and data.inputs.shape == (8, 2) and len(data.test()) == 2
    (tmp_path / "n.csv").write_text(
        "\n".join(f"{lab},{a},{b}" for (a, b), lab in zip(x, labels, strict=True))
    )
    numbered = datasets.csv_file(tmp_path / "n.csv", 0, Levels(test_fraction=0.2))
    assert numbered.output_names == ("0", "1")
    np.testing.assert_array_equal(numbered.labels, data.labels)  # the same split of the same classes
    np.testing.assert_allclose(numbered.inputs, data.inputs)


@pytest.mark.parametrize(
    ("text", "column", "expected"),
    [
        ("a,b\n1,0\n2\n", -1, "sample 2 has 1 columns, the header 2"),
        ("a,b\n1,0\nx,1\n", -1, "a feature is not a number"),
        ("a,b\n1,0\n2,1\n", "label", "no column named 'label'"),
        ("1,0\n2,1\n", "label", "it has no header row"),
        ("1,0\n2,1\n", 5, "label_column = 5 must be from -2 to 1"),
        ("a,b\n", -1, "holds no sample"),
    ],
)
def test_a_bad_csv_file_is_one_line(tmp_path, text, column, expected):
    (tmp_path / "bad.csv").write_text(text)
    with pytest.raises(DatasetError, match=expected):
        datasets.csv_file(tmp_path / "bad.csv", column)


# ---------------------------------------------------------------------------------------- configs
@pytest.mark.parametrize(
    ("dataset", "expected"),
    [
        ('name = "iris"\ngates = ["and"]', 'gates applies only to name = "gates"'),
        ('name = "xor"\ntest_fraction = 0.3', "test_fraction applies only to"),
        ('name = "gates"\ngates = ["and", "nimply"]', "gates = ['and', 'nimply'] is invalid"),
        ('name = "npz"', 'name = "npz" needs path'),
        ('name = "iris"\ntest_samples = 31', "test_samples = 31 but the test split holds 30"),
        ('name = "csv"\npath = "none.csv"\nlabel_column = 1.5', "label_column = 1.5 is invalid"),
    ],
)
def test_dataset_keys_are_checked_in_one_line(tmp_path, dataset, expected):
    circuit = '[circuit]\nbuilder = "layered"\ninputs = 4\nhidden = [2]\noutputs = 3\n'
    (tmp_path / "c.toml").write_text(circuit + "[dataset]\n" + dataset + "\n")
    with pytest.raises(ConfigError, match=expected.replace("[", r"\[")) as caught:
        hil.load(tmp_path / "c.toml")
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("name", ["gates.toml", "iris.toml", "digits.toml"])
def test_the_shipped_data_set_configs_load(configs, name):
    experiment = hil.load(configs / name)
    data, network = experiment.dataset(), experiment.network()
    assert data.inputs.shape[1] == network.n_inputs and data.targets.shape[1] == len(network.outputs)
    assert np.all(np.abs(data.test().inputs) <= np.max(np.abs(data.inputs)))  # no source beyond training's


# ---------------------------------------------------------------------------------------- training
class Counting:
    """A twin that counts how it is asked to settle."""

    def __init__(self, backend: TwinBackend) -> None:
        self.inner, self.network = backend, backend.network
        self.batches: list[int] = []
        self.singles = 0

    def program(self, g):
        return self.inner.program(g)

    def settle(self, inputs, nudge_currents=None):
        self.singles += 1
        return self.inner.settle(inputs, nudge_currents)

    def settle_batch(self, inputs, nudges=None):
        self.batches.append(len(inputs))
        return settle_each(self.inner, inputs, nudges)


def test_evaluation_settles_whole_chunks_and_matches_one_sample_at_a_time(monkeypatch):
    data = datasets.iris(Levels(-2.0, 2.0))
    net = builders.layered(4, [3], 3)
    g = np.random.default_rng(0).uniform(1e-3, 1e-2, len(net.conductances))
    counting = Counting(TwinBackend(net))
    monkeypatch.setattr(train, "EVALUATION_CHUNK", 50)
    judged = train.judge(counting, g, data)
    assert counting.batches == [50, 50, 20, 30] and counting.singles == 0
    single = TwinBackend(net)
    single.program(g)
    y = np.array([net.output_voltages(single.settle(x).voltages) for x in data.test().inputs])
    assert judged.test_accuracy == data.test().accuracy(y)
    np.testing.assert_array_equal(judged.confusion.counts, data.test().confusion(y).counts)
    assert judged.confusion.classes == ("setosa", "versicolor", "virginica")


def test_a_run_log_holds_training_and_test_accuracy_and_the_final_confusion(tmp_path, hil):
    config = tmp_path / "iris.toml"
    text = (ROOT / "configs/iris.toml").read_text()
    config.write_text(text.replace("hidden = [", "hidden = [2] #"))
    result = hil(
        "train", str(config), "--epochs", "2", "--out", str(tmp_path / "run.h5"), "--backend", "numeric"
    )
    assert result.returncode == 0, result.stderr
    assert "accuracy " in result.stdout and "/120 (" in result.stdout and ", test accuracy " in result.stdout
    assert "/30 (" in result.stdout
    run = hil_read(tmp_path / "run.h5")
    assert run.test_accuracy.shape == (2,) and np.all((run.test_accuracy >= 0) & (run.test_accuracy <= 1))
    assert run.confusion is not None and run.confusion.counts.shape == (3, 3)
    assert run.confusion.counts.sum() == 30 and run.confusion.classes[0] == "setosa"
    assert np.trace(run.confusion.counts) == round(30 * run.test_accuracy[-1])
    with h5py.File(tmp_path / "run.h5", "r") as f:
        assert f["result/confusion"].attrs["epoch"] == 2


def hil_read(path: Path) -> hil.Run:
    return hil.read_run(path)
