"""Experiment configs: TOML files, checked strictly before anything runs.

A config has the sections [circuit], [conductances], [dataset], [training] and [backend]. Every
key has a default, a type and a range; an unknown key or a bad value is a one-line
`ConfigError` that names the file, the key and what to do.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from dataclasses import dataclass
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
    default: Any
    kind: type | tuple[type, ...]
    check: Callable[[Any], bool] = lambda v: True
    rule: str = ""


def _positive(v: float) -> bool:
    return v > 0


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
        "builder": Key("xor", str, lambda v: v in BUILDERS, f"one of {', '.join(BUILDERS)}"),
        "amplifier_gain": Key(4.0, (int, float), _positive, "> 0"),
        "seed_pairing": Key(True, bool),
        "inputs": Key(2, int, _positive, ">= 1"),
        "hidden": Key(
            [2],
            list,
            lambda v: len(v) > 0 and all(isinstance(h, int) and h > 0 for h in v),
            "a non-empty list of positive integers",
        ),
        "outputs": Key(1, int, _positive, ">= 1"),
        "duplicate_inputs": Key(True, bool),
        "duplicate_hidden": Key(True, bool),
        "doubled_outputs": Key(True, bool),
        "bias_volts": Key(1.0, (int, float)),
        "output_load": Key(0.0, (int, float), lambda v: v >= 0, ">= 0 S"),
        "clamp_volts": Key(0.3, (int, float), _positive, "> 0 V"),
        "temperature": Key(27.0, (int, float), lambda v: -273.15 < v < 500, "a temperature in °C"),
    },
    "conductances": {
        "g_min": Key(1e-4, (int, float), _positive, "> 0 S"),
        "g_max": Key(0.1, (int, float), _positive, "> 0 S"),
        "init_low": Key(1e-4, (int, float), _positive, "> 0 S"),
        "init_high": Key(0.1, (int, float), _positive, "> 0 S"),
        "generator": Key(
            "numpy",
            str,
            lambda v: v in ("numpy", "numpy-legacy"),
            "'numpy' (PCG64) or 'numpy-legacy' (np.random.seed, as the seed code)",
        ),
        "seed": Key(0, int, lambda v: v >= 0, ">= 0"),
        "skip": Key(0, int, lambda v: v >= 0, ">= 0 draws"),
    },
    "dataset": {
        "name": Key("xor", str, lambda v: v in datasets.DATASETS, f"one of {', '.join(datasets.DATASETS)}"),
        "input_low": Key(-2.0, (int, float)),
        "input_high": Key(2.0, (int, float)),
        "target_low": Key(0.0, (int, float)),
        "target_high": Key(1.0, (int, float)),
    },
    "training": {
        "method": Key("vdm-centered", str, lambda v: v in METHODS, f"one of {', '.join(METHODS)}"),
        "beta": Key(1e-6, (int, float), _positive, "> 0 A/V"),
        "learning_rate": Key(2e-4, (int, float), _positive, "> 0"),
        "layer_learning_rates": Key(
            {},
            dict,
            lambda v: all(k.isdigit() and isinstance(x, int | float) and x > 0 for k, x in v.items()),
            'a table of layer = multiplier > 0, e.g. { "1" = 0.5 }',
        ),
        "epochs": Key(50, int, lambda v: 1 <= v <= 1_000_000, "from 1 to 1000000"),
        "batch_size": Key(1, int, _positive, ">= 1 (1 = online)"),
        "shuffle": Key(False, bool),
        "seed": Key(0, int, lambda v: v >= 0, ">= 0"),
        "pcm_perturbation": Key(0.01, (int, float), lambda v: 0 < v < 1, "in (0, 1)"),
        "success_db": Key(-9.0, (int, float)),
    },
    "sweep": {
        "seed_formula": Key(
            "seed+n",
            str,
            lambda v: v in SEED_FORMULAS,
            "'seed+n' (start n draws with [conductances] seed + n) or 'n+3n^2+5' (the seed's script)",
        ),
        "methods": Key(
            [],
            list,
            lambda v: all(m in METHODS for m in v) and len(set(v)) == len(v),
            f"a list of distinct methods from {', '.join(METHODS)} ([] = [training] method)",
        ),
        "learning_rates": Key(
            {},
            dict,
            lambda v: all(
                k in METHODS and isinstance(x, int | float) and not isinstance(x, bool) and x > 0
                for k, x in v.items()
            ),
            "a table of method = learning rate > 0, e.g. { pcm = 1e-2 }",
        ),
    },
    "backend": {
        "name": Key("spice", str, lambda v: v in BACKENDS, f"one of {', '.join(BACKENDS)}"),
        "reltol": Key(1e-9, (int, float), lambda v: 0 < v <= 1e-2, "in (0, 1e-2]"),
        "vntol": Key(1e-12, (int, float), lambda v: 0 < v <= 1e-3, "in (0, 1e-3] V"),
        "abstol": Key(1e-15, (int, float), lambda v: 0 < v <= 1e-6, "in (0, 1e-6] A"),
        "gmin": Key(1e-12, (int, float), lambda v: 0 < v <= 1e-6, "in (0, 1e-6] S"),
        "bench": Key("", str, rule="the path of a bench config (set by loading one)"),
    },
}


@dataclass(frozen=True)
class Experiment:
    """A checked config: every key present, defaults filled in."""

    path: Path
    values: dict[str, dict[str, Any]]

    def __getitem__(self, section: str) -> dict[str, Any]:
        return self.values[section]

    def to_toml(self) -> str:
        return tomli_w.dumps(self.values)

    def network(self) -> Network:
        c = self["circuit"]
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

    def dataset(self) -> datasets.Dataset:
        d = self["dataset"]
        return datasets.DATASETS[d["name"]](
            d["input_low"], d["input_high"], d["target_low"], d["target_high"]
        )

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

    def hyper(self) -> Hyper:
        t, c = self["training"], self["conductances"]
        return Hyper(
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


def load(path: str | Path, overrides: dict[str, dict[str, Any]] | None = None) -> Experiment:
    """Read and check a config; `overrides` (from the command line) replace file values."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} not found: give the path to a .toml experiment config")
    try:
        raw = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: malformed TOML ({exc}): fix the syntax at that line") from exc
    if isinstance(raw.get("bench"), dict):  # a bench config: train its experiment on its bench
        experiment_file = raw["bench"].get("experiment")
        if not isinstance(experiment_file, str):
            raise ConfigError(
                f'{path}: [bench] experiment must name an experiment config, e.g. "xor-bench.toml"'
            )
        merged = {section: dict(values) for section, values in (overrides or {}).items()}
        merged.setdefault("backend", {}).update({"name": "bench", "bench": str(path.resolve())})
        return load(path.parent / experiment_file, merged)
    for section, values in (overrides or {}).items():
        raw.setdefault(section, {}).update(values)
    experiment = Experiment(path, _check(path, raw))
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


def _check(path: Path, raw: dict[str, Any]) -> dict[str, dict[str, Any]]:
    unknown = sorted(set(raw) - set(SCHEMA))
    if unknown:
        raise ConfigError(
            f"{path}: unknown section [{unknown[0]}]: known sections are "
            f"{', '.join(f'[{s}]' for s in SCHEMA)}"
        )
    out: dict[str, dict[str, Any]] = {}
    for section, keys in SCHEMA.items():
        given = raw.get(section, {})
        if not isinstance(given, dict):
            raise ConfigError(f"{path}: {section} must be a table [{section}]")
        extra = sorted(set(given) - set(keys))
        if extra:
            raise ConfigError(f"{path}: unknown key [{section}] {extra[0]}: known keys are {', '.join(keys)}")
        out[section] = {}
        for name, key in keys.items():
            value = given.get(name, key.default)
            ok_type = isinstance(value, key.kind) and not (isinstance(value, bool) and key.kind is not bool)
            if not ok_type or not key.check(value):
                want = key.rule or (key.kind.__name__ if isinstance(key.kind, type) else "a number")
                raise ConfigError(f"{path}: [{section}] {name} = {value!r} is invalid: it must be {want}")
            out[section][name] = value
    circuit = out["circuit"]
    if circuit["builder"] != "layered":
        misplaced = [k for k in LAYERED_ONLY if k in raw.get("circuit", {})]
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
