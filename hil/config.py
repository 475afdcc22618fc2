"""Experiment configs: TOML files, checked strictly before anything runs.

A config has the sections [circuit], [conductances], [dataset], [training], [sweep] and
[backend] (`SCHEMA`). Every key has a default, a type, a range and a meaning; an unknown key or a
bad value is a one-line `ConfigError` that names the file, the key and what to do.

A bench config (one with a [bench] table, see `drivers.benchconfig`) loads as the experiment it
names, run on that bench; its tables travel with the experiment unread here, for the bench
backend to check.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import tomli_w

from hil import builders, datasets, eqprop
from hil.eqprop import METHODS
from hil.network import Network
from hil.train import Hyper


class ConfigError(ValueError):
    """A config that cannot be used, with the reason and the fix in one line."""


@dataclass(frozen=True)
class Key:
    """One config key: its default, type, check, the rule an error message states, and what it
    means (the reference table in the README is generated from these)."""

    default: Any
    kind: type | tuple[type, ...]
    check: Callable[[Any], bool] = lambda v: True
    rule: str = ""
    doc: str = ""

    def refusal(self, value: Any) -> str | None:
        """Why `value` is not acceptable, or None when it is."""
        ok_type = isinstance(value, self.kind) and not (isinstance(value, bool) and self.kind is not bool)
        if ok_type and self.check(value):
            return None
        return self.rule or (self.kind.__name__ if isinstance(self.kind, type) else "a number")


class _Required:
    """The default of a key that has none: the config must give it."""

    def __repr__(self) -> str:
        return "required"


REQUIRED: Any = _Required()


def _positive(v: float) -> bool:
    return v > 0


def _finite(v: float) -> bool:
    return math.isfinite(v)


def _positive_finite(v: float) -> bool:
    return 0 < v < math.inf


BUILDERS = ("seed-xor", "xor", "layered")
# How start n of `hil sweep starts` seeds its conductance draw: [conductances] seed + n, or the
# seed's start-condition script (np.random.seed(n + 3n² + 5), whatever the config's seed).
SEED_FORMULAS = ("seed+n", "n+3n^2+5")
BACKENDS = ("spice", "numeric", "bench")
LAYERED_ONLY = (
    "inputs",
    "hidden",
    "outputs",
    "duplicate_inputs",
    "duplicate_hidden",
    "doubled_outputs",
    "bias_volts",
    "output_load",
    "clamp_volts",
    "temperature",
)

SCHEMA: dict[str, dict[str, Key]] = {
    "circuit": {
        "builder": Key(
            "xor",
            str,
            lambda v: v in BUILDERS,
            f"one of {', '.join(BUILDERS)}",
            "the circuit: `xor` (the seed topology, corrected), `seed-xor` (the seed circuit exactly, "
            "flaws included) or `layered` (any sizes; the keys below)",
        ),
        "amplifier_gain": Key(4.0, (int, float), _positive_finite, "> 0", "gain A of every amplifier"),
        "seed_pairing": Key(
            True,
            bool,
            doc="`seed-xor` only: update conductances with the seed's mis-paired voltage drops",
        ),
        "inputs": Key(2, int, _positive, ">= 1", "`layered`: number of inputs"),
        "hidden": Key(
            [2],
            list,
            lambda v: len(v) > 0 and all(isinstance(h, int) and h > 0 for h in v),
            "a non-empty list of positive integers",
            "`layered`: width of each hidden layer, e.g. [4, 4]",
        ),
        "outputs": Key(1, int, _positive, ">= 1", "`layered`: number of outputs"),
        "duplicate_inputs": Key(True, bool, doc="`layered`: every input (and bias) also as its negative"),
        "duplicate_hidden": Key(True, bool, doc="`layered`: each hidden node drives a +A and a −A amplifier"),
        "doubled_outputs": Key(True, bool, doc="`layered`: each output is y = V+ − V−"),
        "bias_volts": Key(1.0, (int, float), _finite, "a number of volts", "`layered`: bias source level, V"),
        "output_load": Key(
            0.0, (int, float), lambda v: 0 <= v < math.inf, ">= 0 S", "`layered`: load on each output, S"
        ),
        "clamp_volts": Key(0.3, (int, float), _positive_finite, "> 0 V", "`layered`: diode clamp offset, V"),
        "temperature": Key(
            27.0,
            (int, float),
            lambda v: -273.15 < v < 500,
            "a temperature in °C",
            "`layered`: circuit temperature, °C",
        ),
    },
    "conductances": {
        "g_min": Key(1e-4, (int, float), _positive_finite, "> 0 S", "device range: smallest |g|, S"),
        "g_max": Key(0.1, (int, float), _positive_finite, "> 0 S", "device range: largest |g|, S"),
        "init_low": Key(1e-4, (int, float), _positive_finite, "> 0 S", "initial draw: lower end, S"),
        "init_high": Key(0.1, (int, float), _positive_finite, "> 0 S", "initial draw: upper end, S"),
        "generator": Key(
            "numpy",
            str,
            lambda v: v in ("numpy", "numpy-legacy"),
            "'numpy' (PCG64) or 'numpy-legacy' (np.random.seed, as the seed code)",
            "random generator of the initial draw: `numpy` (PCG64) or `numpy-legacy` (the seed's)",
        ),
        "seed": Key(0, int, lambda v: 0 <= v < 2**32, "an integer in [0, 2**32)", "seed of the initial draw"),
        "skip": Key(
            0,
            int,
            lambda v: 0 <= v <= 1_000_000,
            "from 0 to 1000000 draws",
            "draws to discard first (the seed's code skips 1)",
        ),
    },
    "dataset": {
        "name": Key(
            "xor",
            str,
            lambda v: v in datasets.DATASETS,
            f"one of {', '.join(datasets.DATASETS)}",
            "the data set: `xor` (4 rows) or `case1` (the 2023 paper's single sample)",
        ),
        "input_low": Key(-2.0, (int, float), _finite, "a number of volts", "input level for bit 0, V"),
        "input_high": Key(2.0, (int, float), _finite, "a number of volts", "input level for bit 1, V"),
        "target_low": Key(0.0, (int, float), _finite, "a number of volts", "target level for 0, V"),
        "target_high": Key(1.0, (int, float), _finite, "a number of volts", "target level for 1, V"),
    },
    "training": {
        "method": Key(
            "vdm-centered",
            str,
            lambda v: v in METHODS,
            f"one of {', '.join(METHODS)}",
            "estimator: `vdm`, `vdm-centered` or `pcm` (the seed's, biased)",
        ),
        "beta": Key(1e-6, (int, float), _positive_finite, "> 0 A/V", "nudge strength β, A/V"),
        "learning_rate": Key(2e-4, (int, float), _positive_finite, "> 0", "η in g ← g − η·∂L/∂g"),
        "layer_learning_rates": Key(
            {},
            dict,
            lambda v: all(
                k.isdigit() and isinstance(x, int | float) and 0 < x < math.inf for k, x in v.items()
            ),
            'a table of layer = multiplier > 0, e.g. { "1" = 0.5 }',
            'per-layer multipliers of η, e.g. { "1" = 0.5 }',
        ),
        "epochs": Key(50, int, lambda v: 1 <= v <= 1_000_000, "from 1 to 1000000", "passes over the data"),
        "batch_size": Key(1, int, _positive, ">= 1 (1 = online)", "samples per update (1 = online)"),
        "shuffle": Key(False, bool, doc="shuffle the samples every epoch (false: the data set's order)"),
        "seed": Key(0, int, lambda v: 0 <= v < 2**32, "an integer in [0, 2**32)", "seed of the shuffling"),
        "pcm_perturbation": Key(
            0.01, (int, float), lambda v: 0 < v < 1, "in (0, 1)", "`pcm`: relative step of each |g|"
        ),
        "success_db": Key(
            -9.0,
            (int, float),
            _finite,
            "a number of dB",
            "a run succeeds when its final error is at or below this (sweeps, reports), dB",
        ),
    },
    "sweep": {
        "seed_formula": Key(
            "seed+n",
            str,
            lambda v: v in SEED_FORMULAS,
            "'seed+n' (start n draws with [conductances] seed + n) or 'n+3n^2+5' (the seed's script)",
            "`hil sweep starts`: seed of start n, `seed+n` or the seed script's `n+3n^2+5`",
        ),
        "methods": Key(
            [],
            list,
            lambda v: all(m in METHODS for m in v) and len(set(v)) == len(v),
            f"a list of distinct methods from {', '.join(METHODS)} ([] = [training] method)",
            "methods a sweep compares ([] = the [training] method)",
        ),
        "learning_rates": Key(
            {},
            dict,
            lambda v: all(
                k in METHODS and isinstance(x, int | float) and not isinstance(x, bool) and 0 < x < math.inf
                for k, x in v.items()
            ),
            "a table of method = learning rate > 0, e.g. { pcm = 1e-2 }",
            "per-method η in a sweep, e.g. { pcm = 1e-2 } (else [training] learning_rate)",
        ),
    },
    "backend": {
        "name": Key(
            "spice",
            str,
            lambda v: v in BACKENDS,
            f"one of {', '.join(BACKENDS)}",
            "`spice` (ngspice), `numeric` (the twin); `bench` is set by loading a bench config",
        ),
        "reltol": Key(1e-9, (int, float), lambda v: 0 < v <= 1e-2, "in (0, 1e-2]", "ngspice RELTOL"),
        "vntol": Key(1e-12, (int, float), lambda v: 0 < v <= 1e-3, "in (0, 1e-3] V", "ngspice VNTOL, V"),
        "abstol": Key(1e-15, (int, float), lambda v: 0 < v <= 1e-6, "in (0, 1e-6] A", "ngspice ABSTOL, A"),
        "gmin": Key(
            1e-12,
            (int, float),
            lambda v: 0 < v <= 1e-6,
            "in (0, 1e-6] S",
            "shunt conductance of every junction, S (ngspice GMIN; the twin uses it too)",
        ),
        "bench": Key("", str, rule="the path of a bench config", doc="set by loading a bench config"),
    },
}


@dataclass(frozen=True)
class BenchFile:
    """A bench config as read, not yet checked: `drivers.benchconfig` knows its tables."""

    path: Path
    tables: dict[str, Any]


@dataclass(frozen=True)
class Experiment:
    """A checked config: every key present, defaults filled in. Its network, data set and
    hyper-parameters are built once and shared (none of them is ever mutated)."""

    path: Path
    values: dict[str, dict[str, Any]]
    # The bench config the experiment was loaded through (for the bench backend to check and
    # use); None for a plain experiment.
    bench: BenchFile | None = field(default=None, compare=False)
    _built: dict[str, Any] = field(default_factory=dict, init=False, compare=False, repr=False)

    def __getitem__(self, section: str) -> dict[str, Any]:
        return self.values[section]

    def to_toml(self) -> str:
        return tomli_w.dumps(self.values)

    @property
    def dry_run(self) -> bool:
        """A bench config run on a simulator instead of its instruments (`--backend`)."""
        return self.bench is not None and self["backend"]["name"] != "bench"

    def network(self) -> Network:
        if "network" not in self._built:
            self._built["network"] = _build_network(self["circuit"])
        network: Network = self._built["network"]
        return network

    def dataset(self) -> datasets.Dataset:
        if "dataset" not in self._built:
            d = self["dataset"]
            self._built["dataset"] = datasets.DATASETS[d["name"]](
                d["input_low"], d["input_high"], d["target_low"], d["target_high"]
            )
        data: datasets.Dataset = self._built["dataset"]
        return data

    def hyper(self) -> Hyper:
        if "hyper" not in self._built:
            t, c = self["training"], self["conductances"]
            self._built["hyper"] = Hyper(
                method=t["method"],
                beta=float(t["beta"]),
                learning_rate=float(t["learning_rate"]),
                layer_learning_rates={int(k): float(v) for k, v in t["layer_learning_rates"].items()},
                epochs=t["epochs"],
                batch_size=t["batch_size"],
                g_min=float(c["g_min"]),
                g_max=float(c["g_max"]),
                pcm_perturbation=float(t["pcm_perturbation"]),
                shuffle=t["shuffle"],
                seed=t["seed"],
            )
        hyper: Hyper = self._built["hyper"]
        return hyper

    def initial_conductances(self, count: int) -> np.ndarray:
        c = self["conductances"]
        size = c["skip"] + count
        if c["generator"] == "numpy-legacy":
            draws = np.random.RandomState(c["seed"]).uniform(c["init_low"], c["init_high"], size)
        else:
            draws = np.random.default_rng(c["seed"]).uniform(c["init_low"], c["init_high"], size)
        return draws[c["skip"] :]

    def start_conductances(self) -> np.ndarray:
        """The initial draw, clipped to the device range as the trainer will clip it."""
        network, hyper = self.network(), self.hyper()
        return eqprop.clip_conductances(
            self.initial_conductances(len(network.conductances)), network.signed, hyper.g_min, hyper.g_max
        )


def _build_network(c: dict[str, Any]) -> Network:
    if c["builder"] == "seed-xor":
        return builders.seed_xor(float(c["amplifier_gain"]), pairing=c["seed_pairing"])
    if c["builder"] == "xor":
        return builders.xor(float(c["amplifier_gain"]))
    return builders.layered(
        c["inputs"],
        c["hidden"],
        c["outputs"],
        float(c["amplifier_gain"]),
        duplicate_inputs=c["duplicate_inputs"],
        duplicate_hidden=c["duplicate_hidden"],
        doubled_outputs=c["doubled_outputs"],
        bias_volts=float(c["bias_volts"]),
        output_load=float(c["output_load"]),
        clamp_volts=float(c["clamp_volts"]),
        temperature=float(c["temperature"]),
    )


def _read_toml(path: Path, what: str, fix: str) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"{what} {path} not found: {fix}")
    try:
        return tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: malformed TOML ({exc}): fix the syntax at that line") from exc


def load(path: str | Path, overrides: dict[str, dict[str, Any]] | None = None) -> Experiment:
    """Read and check a config; `overrides` (from the command line) replace file values.

    A bench config loads as its experiment on its bench; with a backend override (`--backend
    numeric`) it is a dry run of the same experiment on that simulator, never silently either."""
    path = Path(path)
    raw = _read_toml(path, "config file", "give the path to a .toml experiment config")
    bench: BenchFile | None = None
    if "bench" in raw:
        bench = BenchFile(path.resolve(), raw)
        raw, path = _bench_experiment(path, raw)
    for section, values in (overrides or {}).items():
        if not isinstance(raw.setdefault(section, {}), dict):
            raise ConfigError(f"{path}: {section} must be a table [{section}]")
        raw[section].update(values)
    if bench is not None:
        backend = raw.setdefault("backend", {})
        if not isinstance(backend, dict):
            raise ConfigError(f"{path}: backend must be a table [backend]")
        backend["bench"] = str(bench.path)
        if "name" not in (overrides or {}).get("backend", {}):
            backend["name"] = "bench"
    elif isinstance(raw.get("backend"), dict) and raw["backend"].get("name") == "bench":
        raise ConfigError(
            f'{path}: [backend] name = "bench" needs a bench config: run hil on the bench\'s .toml, '
            "which names this experiment"
        )
    return _experiment(path, raw, bench)


def loads(
    text: str,
    path: Path,
    bench: BenchFile | None = None,
    overrides: dict[str, dict[str, Any]] | None = None,
) -> Experiment:
    """An experiment from resolved TOML text (what a run log keeps), checked like a file."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: its config is malformed TOML ({exc})") from exc
    for section, values in (overrides or {}).items():
        raw.setdefault(section, {}).update(values)
    return _experiment(path, raw, bench)


def _experiment(path: Path, raw: dict[str, Any], bench: BenchFile | None) -> Experiment:
    experiment = Experiment(path, _check(path, raw), bench)
    try:
        network = experiment.network()
    except ValueError as exc:
        raise ConfigError(f"{path}: [circuit] {exc}") from exc
    data = experiment.dataset()
    if data.inputs.shape[1] != network.n_inputs or data.targets.shape[1] != len(network.outputs):
        raise ConfigError(
            f"{path}: dataset '{data.name}' has {data.inputs.shape[1]} inputs and {data.targets.shape[1]} "
            f"outputs but the circuit has {network.n_inputs} and {len(network.outputs)}: set [circuit] "
            "inputs/outputs to match"
        )
    return experiment


def _bench_experiment(path: Path, raw: dict[str, Any]) -> tuple[dict[str, Any], Path]:
    """The experiment a bench config names: (its raw tables, its path)."""
    table = raw["bench"]
    experiment_file = table.get("experiment") if isinstance(table, dict) else None
    if not isinstance(experiment_file, str):
        raise ConfigError(f'{path}: [bench] experiment must name an experiment config, e.g. "xor-bench.toml"')
    experiment_path = path.parent / experiment_file
    fix = "name an experiment config, relative to the bench config"
    experiment = _read_toml(experiment_path, f"{path}: [bench] experiment", fix)
    if "bench" in experiment:
        raise ConfigError(
            f"{path}: [bench] experiment = {experiment_file!r} is itself a bench config: "
            "name an experiment config (with [circuit], [training], ...)"
        )
    return experiment, experiment_path


def check_table(path: Path, section: str, given: Any, keys: dict[str, Key]) -> dict[str, Any]:
    """One table of a config checked against its keys: every key known, every required key
    given, every value valid; defaults filled in."""
    if not isinstance(given, dict):
        raise ConfigError(f"{path}: {section} must be a table [{section}]")
    extra = sorted(set(given) - set(keys))
    if extra:
        raise ConfigError(f"{path}: unknown key [{section}] {extra[0]}: known keys are {', '.join(keys)}")
    out: dict[str, Any] = {}
    for name, key in keys.items():
        if name not in given and key.default is REQUIRED:
            raise ConfigError(f"{path}: [{section}] {name} is missing: it must be {key.rule}")
        value = given.get(name, key.default)
        want = key.refusal(value)
        if want is not None:
            raise ConfigError(f"{path}: [{section}] {name} = {value!r} is invalid: it must be {want}")
        out[name] = value
    return out


def _check(path: Path, raw: dict[str, Any]) -> dict[str, dict[str, Any]]:
    unknown = sorted(set(raw) - set(SCHEMA))
    if unknown:
        raise ConfigError(
            f"{path}: unknown section [{unknown[0]}]: known sections are "
            f"{', '.join(f'[{s}]' for s in SCHEMA)}"
        )
    out = {
        section: check_table(path, section, raw.get(section, {}), keys) for section, keys in SCHEMA.items()
    }
    circuit = out["circuit"]
    if circuit["builder"] != "layered":
        # A resolved config (a run log's) carries every key at its default: only a set value misleads.
        given = raw.get("circuit", {})
        misplaced = [k for k in LAYERED_ONLY if k in given and given[k] != SCHEMA["circuit"][k].default]
        if misplaced:
            raise ConfigError(f'{path}: [circuit] {misplaced[0]} applies only to builder = "layered"')
    c = out["conductances"]
    if c["g_min"] >= c["g_max"]:
        raise ConfigError(f"{path}: [conductances] g_min = {c['g_min']} must be below g_max = {c['g_max']}")
    if c["init_low"] >= c["init_high"]:
        raise ConfigError(
            f"{path}: [conductances] init_low = {c['init_low']} must be below init_high = {c['init_high']}"
        )
    d = out["dataset"]
    if d["target_low"] == d["target_high"] or d["input_low"] == d["input_high"]:
        raise ConfigError(f"{path}: [dataset] low and high levels must differ")
    return out
