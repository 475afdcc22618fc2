"""Experiment configs: TOML files, checked strictly before anything runs.

A config has the sections [circuit], [conductances], [dataset], [training], [sweep] and
[backend] (`SCHEMA`). Every key has a default, a type, a range and a meaning; an unknown key or a
bad value is a one-line `ConfigError` that names the file, the key and what to do.

Checked before anything is built, written or touched: every number finite and inside its key's
window (a physically sensible one, stated in the key's doc and so in `hil keys`); ranges that
cannot be empty (g_min < g_max, the initial draw inside them); sizes under stated caps, counted
from the config before the network is built (`LIMITS`); the work a simulator would do before its
first answer (`twin_cost`); the circuit's shape against the data set's. An empty file, an
unknown key or section (with the nearest known name), a bench config naming a bench config are
refused too.

A bench config (one with a [bench] table, see `drivers.benchconfig`) loads as the experiment it
names, run on that bench; its tables travel with the experiment and are checked by the package
that drives benches (the `eqprop_hil.bench_check` entry point), still inside `load`.
"""

from __future__ import annotations

import difflib
import math
import re
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import tomli_w

from hil import builders, datasets, eqprop, optimisers
from hil.eqprop import METHODS
from hil.network import Network
from hil.train import Hyper


class ConfigError(ValueError):
    """A config that cannot be used, with the reason and the fix in one line."""


def show(value: Any, width: int = 48) -> str:
    """A value as an error line quotes it: its repr (newlines escaped), shortened."""
    text = repr(value)
    return text if len(text) <= width else text[: width - 1] + "…"


def name_of(name: str) -> str:
    """A key or section name as an error line quotes it: bare when plain, else its repr."""
    return name if re.fullmatch(r"[A-Za-z0-9_.\-]{1,48}", name) else show(name)


def nearest(name: str, known: Sequence[str]) -> str | None:
    """The known name a typo most likely meant, if any is close."""
    by_case = {k.lower(): k for k in known}
    close = difflib.get_close_matches(str(name).lower(), list(by_case), n=1, cutoff=0.6)
    return by_case[close[0]] if close else None


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
        # NaN passes no comparison and inf passes some: no number of any key may be either.
        finite = not isinstance(value, float) or math.isfinite(value)
        if ok_type and finite and self.check(value):
            return None
        if self.rule:
            return self.rule
        return "true or false" if self.kind is bool else getattr(self.kind, "__name__", "a number")


class _Required:
    """The default of a key that has none: the config must give it."""

    def __repr__(self) -> str:
        return "required"


REQUIRED: Any = _Required()


@dataclass(frozen=True)
class SameAs:
    """The default of a key that follows another key of its table (given before it)."""

    key: str

    def __repr__(self) -> str:
        return self.key


NUMBER = (int, float)


def _figure(x: float) -> str:
    if isinstance(x, int):
        return str(x)
    return f"{x:g}".replace("e+0", "e").replace("e+", "e").replace("e-0", "e-")


def _window(low: float, high: float, unit: str = "") -> str:
    return f"from {_figure(low)} to {_figure(high)}{' ' + unit if unit else ''}"


def number(
    default: Any,
    low: float,
    high: float,
    unit: str,
    doc: str,
    note: str = "",
    rule: str | None = None,
    kind: Any = NUMBER,
) -> Key:
    """A number in [low, high]: the rule states the window and so does the doc (hence `hil keys`),
    with `note` after it."""
    window = _window(low, high, unit)
    noun = "an integer" if kind is int else "a number"
    shown = f"{doc} ({window}{'; ' + note if note else ''})"
    return Key(default, kind, lambda v: low <= v <= high, rule or f"{noun} {window}", shown)


def _layers_ok(v: list[Any]) -> bool:
    return 1 <= len(v) <= LIMITS["hidden_layers"] and all(
        type(h) is int and 1 <= h <= LIMITS["width"] for h in v
    )


def _gains_ok(low: float, high: float) -> Callable[[Any], bool]:
    """A number in [low, high], or a list of 1 to `hidden_layers` of them (one per hidden layer)."""

    def ok(v: Any) -> bool:
        values = v if isinstance(v, list) else [v]
        return 1 <= len(values) <= LIMITS["hidden_layers"] and all(
            type(x) in (int, float) and low <= x <= high for x in values
        )

    return ok


def _feedback_ok(v: Any) -> bool:
    return v == "reciprocal" or (not isinstance(v, str) and _gains_ok(*FEEDBACK_RANGE)(v))


def _skips_ok(v: Any) -> bool:
    if isinstance(v, int):
        return v == 0 or 2 <= v <= LIMITS["hidden_layers"] + 1
    return 1 <= len(v) <= 64 and all(
        isinstance(p, list) and len(p) == 2 and all(type(k) is int and 0 <= k <= 64 for k in p) for p in v
    )


def _multipliers_ok(v: dict[str, Any]) -> bool:
    return all(
        re.fullmatch(r"[0-9]{1,3}", k) and type(x) in (int, float) and 1e-15 <= x <= 1e6 for k, x in v.items()
    )


def _rates_ok(v: dict[str, Any]) -> bool:
    return all(k in METHODS and type(x) in (int, float) and 1e-15 <= x <= 1e3 for k, x in v.items())


def _methods_ok(v: list[Any]) -> bool:
    return all(isinstance(m, str) and m in METHODS for m in v) and len(set(v)) == len(v)


BUILDERS = ("seed-xor", "xor", "layered", "complete")
SIZED = ("layered", "complete")  # the builders that take sizes (the keys of LAYERED_ONLY)
# How start n of `hil sweep starts` seeds its conductance draw: [conductances] seed + n, or the
# seed's start-condition script (np.random.seed(n + 3n² + 5), whatever the config's seed).
SEED_FORMULAS = ("seed+n", "n+3n^2+5")
BACKENDS = ("spice", "numeric", "bench")
# The SMU error models of `sim.noise` (datasheet figures), by name; "none" reads exactly.
NOISE_MODELS = ("none", "keithley-2450", "keithley-2602b", "keysight-b2902a")
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
    "feedback_gain",
    "skips",
)
STAGED = ("feedback_gain", "skips")  # `layered` only: they need layers of amplifiers
GAIN_RANGE = (0.1, 100.0)
# Backward current gain b: the layer's compensation grows as a/b, which the compensation cap bounds.
FEEDBACK_RANGE = (1e-6, 1e6)

# Caps on what a config may ask for, each stated in the doc of its key (and so in `hil keys`).
# MNIST-sized networks stay inside: 784-200-10 with every signal doubled is 322,040 conductances
# (362 MB peak and 0.55 ms per training sample in the twin, `make bench`).
LIMITS: dict[str, float] = {
    "inputs": 1024,
    "width": 4096,  # nodes of one hidden layer
    "hidden_layers": 16,
    "outputs": 256,
    "conductances": 400_000,
    # Layer 1's signal reaches the output scaled by 1/A² per amplifier on the way: beyond 1e12 it
    # sinks under a double's 1e-16 relative precision (and any instrument's noise) with no margin.
    "compensation": 1e12,
    # The twin (`numeric`) keeps dense matrices over its unknowns, the free nodes: free² entries,
    # free × nodes twice (what sources push in, what driven nodes deliver), and about 40 per
    # conductance to scatter them (8 bytes each: 1 GB at the cap; 784-100-10 needs 55 MB). Its
    # Newton step is at worst a dense LU over the free nodes, free³/3 multiply-adds (3e11: about
    # a minute on one core) when nothing can be eliminated; a layered network eliminates every
    # other layer. Sparse ngspice needs no such cap.
    "twin_memory": 1.25e8,
    "twin_work": 3e11,
}

SCHEMA: dict[str, dict[str, Key]] = {
    "circuit": {
        "builder": Key(
            "xor",
            str,
            lambda v: v in BUILDERS,
            f"one of {', '.join(BUILDERS)}",
            "the circuit: `xor` (the seed topology, corrected), `seed-xor` (the seed circuit exactly, "
            "flaws included), `layered` (any sizes; the keys below) or `complete` (seed 001's complete "
            "graph: every pair of nodes joined; layers 1 inputs → hidden, 2 hidden ↔ hidden, 3 hidden → "
            "outputs, 4 inputs → outputs, 5 outputs ↔ outputs)",
        ),
        "amplifier_gain": Key(
            4.0,
            (int, float, list),
            _gains_ok(*GAIN_RANGE),
            f"a number from {_figure(GAIN_RANGE[0])} to {_figure(GAIN_RANGE[1])}, or (`layered`) a list of "
            "them, one per hidden layer",
            f"forward gain A of every amplifier; `layered`: one for all or a list, one per hidden layer "
            f"(seed 004's feedforward α_i), e.g. [4, 2]; `complete`: the free nodes' amplifiers, whose "
            f"backward gain equals it (from {_figure(GAIN_RANGE[0])} to {_figure(GAIN_RANGE[1])}; layer 1's "
            f"compensation Π A/b from 1/{_figure(LIMITS['compensation'])} to "
            f"{_figure(LIMITS['compensation'])})",
        ),
        "feedback_gain": Key(
            "reciprocal",
            (str, int, float, list),
            _feedback_ok,
            f'"reciprocal", a number from {_figure(FEEDBACK_RANGE[0])} to {_figure(FEEDBACK_RANGE[1])}, or a '
            "list of them, one per hidden layer",
            "`layered`: backward current gain b of each hidden layer's amplifiers (seed 004's feedback β_i; "
            "the CCCS draws b × the output's current), one for all or a list; `reciprocal`: b = 1/A. Each "
            "layer's estimate is compensated by Π A/b over the amplifiers to the output, exact for any b "
            f"> 0 (from {_figure(FEEDBACK_RANGE[0])} to {_figure(FEEDBACK_RANGE[1])})",
        ),
        "skips": Key(
            0,
            (int, list),
            _skips_ok,
            "0, an integer k from 2 to the layers, or a list of [from, to] layer pairs",
            "`layered`: skip connections (seed 004's residuals), layers numbered 0 (inputs) to hidden "
            "layers + 1 (outputs): k joins every layer l to l + k, or a list such as [[0, 2], [1, 3]]; "
            "conductances from layer `from`'s signals (the hidden nodes through their own amplifiers) into "
            "every node of layer `to`, trained as layer `to`; 0: none",
        ),
        "seed_pairing": Key(
            True,
            bool,
            doc="`seed-xor` only: update conductances with the seed's mis-paired voltage drops",
        ),
        "inputs": number(2, 1, LIMITS["inputs"], "", "`layered`, `complete`: number of inputs", kind=int),
        "hidden": Key(
            [2],
            list,
            _layers_ok,
            f"a list of 1 to {_figure(LIMITS['hidden_layers'])} layer widths, each an integer from 1 to "
            f"{_figure(LIMITS['width'])}",
            f"`layered`: width of each hidden layer, e.g. [4, 4] (1 to {_figure(LIMITS['hidden_layers'])} "
            f"layers of 1 to {_figure(LIMITS['width'])}; at most {LIMITS['conductances']:,.0f} conductances "
            f"in all; numeric backend: free nodes² + 2 × free nodes × nodes + 40 × conductances ≤ "
            f"{_figure(LIMITS['twin_memory'])} and free nodes³/3 ≤ {_figure(LIMITS['twin_work'])}); "
            "`complete`: [n], its n hidden nodes",
        ),
        "outputs": number(1, 1, LIMITS["outputs"], "", "`layered`, `complete`: number of outputs", kind=int),
        "duplicate_inputs": Key(
            True, bool, doc="`layered`, `complete`: every input (and bias) also as its negative"
        ),
        "duplicate_hidden": Key(
            True,
            bool,
            doc="`layered`: each hidden node drives a +A and a −A amplifier; `complete`: each hidden and "
            "output node also sends −A (negative couplings)",
        ),
        "doubled_outputs": Key(True, bool, doc="`layered`, `complete`: each output is y = V+ − V−"),
        "bias_volts": number(1.0, -200.0, 200.0, "V", "`layered`, `complete`: bias source level, V"),
        "output_load": number(0.0, 0.0, 1e3, "S", "`layered`, `complete`: load on each output, S", "0: none"),
        "clamp_volts": number(0.3, 1e-3, 100.0, "V", "`layered`, `complete`: diode clamp offset, V"),
        "temperature": number(27.0, -55.0, 150.0, "°C", "`layered`, `complete`: circuit temperature, °C"),
    },
    "conductances": {
        "g_min": number(1e-4, 1e-12, 1e3, "S", "device range: smallest |g|, S", "below g_max"),
        "g_max": number(0.1, 1e-12, 1e3, "S", "device range: largest |g|, S"),
        "init_low": number(
            SameAs("g_min"), 1e-12, 1e3, "S", "initial draw: lower end, S", "g_min to init_high"
        ),
        "init_high": number(SameAs("g_max"), 1e-12, 1e3, "S", "initial draw: upper end, S", "at most g_max"),
        "generator": Key(
            "numpy",
            str,
            lambda v: v in ("numpy", "numpy-legacy"),
            "'numpy' (PCG64) or 'numpy-legacy' (np.random.seed, as the seed code)",
            "random generator of the initial draw: `numpy` (PCG64) or `numpy-legacy` (the seed's)",
        ),
        "seed": number(0, 0, 2**32 - 1, "", "seed of the initial draw", kind=int),
        "skip": number(0, 0, 1_000_000, "", "draws to discard first", "the seed's code skips 1", kind=int),
    },
    "dataset": {
        "name": Key(
            "xor",
            str,
            lambda v: v in datasets.NAMES,
            f"one of {', '.join(datasets.NAMES)}",
            "the data set: `xor` (4 rows), `case1` (the 2023 paper's single sample), `gates` (logic gates, "
            "one output each), `iris` or `digits` (scikit-learn's bundled copies), or a file: `npz`, `csv` "
            "(`path`), `idx` (MNIST-format files); classification sets have one output per class",
        ),
        "input_low": number(
            -2.0, -200.0, 200.0, "V", "input level for bit 0, or every feature's training-split minimum, V"
        ),
        "input_high": number(
            2.0, -200.0, 200.0, "V", "input level for bit 1, or every feature's training-split maximum, V"
        ),
        "target_low": number(
            0.0, -200.0, 200.0, "V", "target level for 0 (or for a class not the sample's), V"
        ),
        "target_high": number(1.0, -200.0, 200.0, "V", "target level for 1 (or for the sample's class), V"),
        "gates": Key(
            list(datasets.GATES),
            list,
            lambda v: (
                1 <= len(v) <= len(datasets.GATES)
                and all(isinstance(g, str) and g in datasets.GATES for g in v)
                and len(set(v)) == len(v)
            ),
            f"a list of distinct gates from {', '.join(datasets.GATES)}",
            "`gates`: the gates, one output each in this order, from "
            f"{', '.join(f'`{g}`' for g in datasets.GATES)}; the test set is the truth table",
        ),
        "test_fraction": number(
            0.2,
            0.01,
            0.9,
            "",
            "classification: share of the samples held out for testing (stratified, seeded)",
            "unused when the files bring a test set",
        ),
        "split_seed": number(0, 0, 2**32 - 1, "", "classification: seed of the train/test split", kind=int),
        "train_samples": number(
            0,
            0,
            datasets.MAX_SAMPLES,
            "",
            "classification: train on a stratified subset of this many samples",
            "0: all",
            kind=int,
        ),
        "test_samples": number(
            0,
            0,
            datasets.MAX_SAMPLES,
            "",
            "classification: test on a stratified subset of this many samples",
            "0: all",
            kind=int,
        ),
        "path": Key(
            "",
            str,
            rule="the path of the data file",
            doc="`npz` (arrays `X`, `y`, optionally `X_test`, `y_test`) or `csv` (a row per sample): the "
            "file, relative to the config",
        ),
        "label_column": Key(
            -1,
            (str, int),
            lambda v: not isinstance(v, int) or -1024 <= v <= 1024,
            "a column's header name, or its number (from 0; -1 the last)",
            "`csv`: the label column, by header name or number (from 0; -1 the last); labels are class "
            "numbers 0, 1, … or class names",
        ),
        "train_images": Key(
            "",
            str,
            rule="the path of an IDX file",
            doc="`idx`: training images, an MNIST-format IDX file (gzip'ed or not), relative to the config",
        ),
        "train_labels": Key("", str, rule="the path of an IDX file", doc="`idx`: training labels (IDX)"),
        "test_images": Key(
            "",
            str,
            rule="the path of an IDX file",
            doc="`idx`: test images (IDX; none: split the training files)",
        ),
        "test_labels": Key("", str, rule="the path of an IDX file", doc="`idx`: test labels (IDX)"),
    },
    "training": {
        "method": Key(
            "vdm-centered",
            str,
            lambda v: v in METHODS,
            f"one of {', '.join(METHODS)}",
            "estimator: `vdm`, `vdm-centered` or `pcm` (the seed's, biased)",
        ),
        # Below 1e-15 A/V the nudge moves no node by more than a double resolves.
        "beta": number(
            1e-6, 1e-15, 1.0, "A/V", "nudge strength β, A/V", rule="> 0 A/V (from 1e-15 to 1 A/V)"
        ),
        # A bench's nudge channel sources at most 0.1 A (drivers.benchconfig's hard limit); below
        # 1e-15 A no node moves by more than a double resolves.
        "nudge_current": Key(
            0.0,
            NUMBER,
            lambda v: v == 0 or 1e-15 <= v <= 0.1,
            "0 (nudge with beta) or a current from 1e-15 to 0.1 A",
            "constant-current nudge I0, A: each sample's β = I0/‖t − y‖, so every nudge's current "
            "vector has norm I0, instead of `beta` (0: nudge with `beta`; else from 1e-15 to 0.1 A)",
        ),
        "learning_rate": number(2e-4, 1e-15, 1e3, "", "η in g ← g − η·∂L/∂g"),
        "layer_learning_rates": Key(
            {},
            dict,
            _multipliers_ok,
            'a table of layer = multiplier from 1e-15 to 1e6, e.g. { "1" = 0.5 }',
            'per-layer multipliers of η, e.g. { "1" = 0.5 } (layers of the circuit; from 1e-15 to 1e6)',
        ),
        "epochs": number(50, 1, 1_000_000, "", "passes over the data", kind=int),
        "batch_size": number(
            1, 1, 1_000_000, "", "samples per update", "1 = online; at most the data set's samples", kind=int
        ),
        "shuffle": Key(False, bool, doc="shuffle the samples every epoch (false: the data set's order)"),
        "seed": number(0, 0, 2**32 - 1, "", "seed of the shuffling", kind=int),
        "pcm_perturbation": number(0.01, 1e-6, 0.5, "", "`pcm`: relative step of each |g|"),
        "success_db": number(
            -9.0,
            -400.0,
            100.0,
            "dB",
            "a run succeeds when its final error is at or below this (sweeps, reports), dB",
        ),
        # How an estimate becomes a step (hil.optimisers); the defaults are the plain SGD of before.
        "optimiser": Key(
            "sgd",
            str,
            lambda v: v in optimisers.OPTIMISERS,
            f"one of {', '.join(optimisers.OPTIMISERS)}",
            "`sgd` (η in S²/V², optionally with momentum) or `adam` (η is then the step, S: ~1e-3)",
        ),
        "momentum": number(0.0, 0.0, 0.999, "", "`sgd`: momentum μ (v ← μ·v + ∇)", "0: none"),
        "nesterov": Key(False, bool, doc="`sgd`: Nesterov's momentum (needs momentum > 0)"),
        "adam_beta1": number(0.9, 0.0, 0.999999, "", "`adam`: decay of the first moment"),
        "adam_beta2": number(0.999, 0.0, 0.999999, "", "`adam`: decay of the second moment"),
        "adam_epsilon": number(1e-8, 1e-30, 1e3, "V²/S", "`adam`: ε added to √v̂, V²/S"),
        "lr_schedule": Key(
            "constant",
            str,
            lambda v: v in optimisers.SCHEDULES,
            f"one of {', '.join(optimisers.SCHEDULES)}",
            "η per epoch: `constant`, `step` (× lr_decay every lr_step_epochs), `exponential` "
            "(× lr_decay every epoch) or `cosine` (down to lr_floor·η at the last epoch)",
        ),
        "lr_decay": number(0.5, 1e-6, 1.0, "", "`step`, `exponential`: factor of η per decay"),
        "lr_step_epochs": number(10, 1, 1_000_000, "", "`step`: epochs between decays", kind=int),
        "lr_floor": number(0.0, 0.0, 1.0, "", "`cosine`: η's last factor"),
        "clip_norm": number(
            0.0, 0.0, 1e15, "V²/S", "clip each update's gradient to this Euclidean norm, V²/S", "0: none"
        ),
        "clip_value": number(0.0, 0.0, 1e15, "V²/S", "clip each gradient element to ±this, V²/S", "0: none"),
        "l1": number(
            0.0,
            0.0,
            1.0,
            "S",
            "L1 regularisation: each update moves every |g| this far (× the η schedule's factor) toward 0, "
            "down to g_min, S",
            "seed 001's reg_W; 0: none",
        ),
        "prune_below": number(
            0.0,
            0.0,
            1e3,
            "S",
            "stochastic pruning: at each epoch's end an edge with |g| below this may open (programmed "
            "as 0 S from then on), S",
            "above g_min; 0: no pruning",
        ),
        "prune_temperature": number(
            1.0,
            1e-12,
            1e3,
            "S",
            "pruning: T of the Boltzmann choice exp(−|g|/T) among the edges into a node, S",
            "large: all equally likely, as the seed's",
        ),
        "prune_from": number(
            1, 1, 1_000_000, "", "pruning: the first epoch after which edges may open", kind=int
        ),
        "prune_until": number(
            0,
            0,
            1_000_000,
            "",
            "pruning: the last epoch after which edges may open",
            "0: the run's last",
            kind=int,
        ),
        "prune_regrow": Key(
            False,
            bool,
            doc="pruning: an open edge whose |g| (still trained) climbs back to prune_below closes again",
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
            _methods_ok,
            f"a list of distinct methods from {', '.join(METHODS)} ([] = [training] method)",
            "methods a sweep compares ([] = the [training] method)",
        ),
        "learning_rates": Key(
            {},
            dict,
            _rates_ok,
            "a table of method = learning rate from 1e-15 to 1e3, e.g. { pcm = 1e-2 }",
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
        # Smaller tolerances ask for more than double precision gives (and GMIN below 1e-15 S
        # leaves a junction's matrix row singular in all but name).
        "reltol": number(1e-9, 1e-14, 1e-2, "", "ngspice RELTOL"),
        "vntol": number(1e-12, 1e-15, 1e-3, "V", "ngspice VNTOL, V"),
        "abstol": number(1e-15, 1e-18, 1e-6, "A", "ngspice ABSTOL, A"),
        "gmin": number(
            1e-12,
            1e-15,
            1e-6,
            "S",
            "shunt conductance of every junction, S",
            "ngspice GMIN; the twin uses it too",
        ),
        "bench": Key("", str, rule="the path of a bench config", doc="set by loading a bench config"),
        "noise": Key(
            "none",
            str,
            lambda v: v in NOISE_MODELS,
            f"one of {', '.join(NOISE_MODELS)}",
            "read the simulator through an SMU model's datasheet errors (source noise, reading noise, "
            "resolution, gain and offset per channel; seeded by [training] seed), or `none`: exact",
        ),
        "nplc": number(
            1.0,
            0.01,
            10.0,
            "PLC",
            "with noise: integration time of every reading, PLC",
            "the reading noise falls with it",
        ),
        "averages": number(1, 1, 1000, "", "with noise: readings averaged per node and phase", kind=int),
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
            self._built["dataset"] = datasets.build(self["dataset"])
        data: datasets.Dataset = self._built["dataset"]
        return data

    def hyper(self) -> Hyper:
        if "hyper" not in self._built:
            t, c = self["training"], self["conductances"]
            self._built["hyper"] = Hyper(
                method=t["method"],
                beta=float(t["beta"]),
                nudge_current=float(t["nudge_current"]),
                learning_rate=float(t["learning_rate"]),
                layer_learning_rates={int(k): float(v) for k, v in t["layer_learning_rates"].items()},
                epochs=t["epochs"],
                batch_size=t["batch_size"],
                g_min=float(c["g_min"]),
                g_max=float(c["g_max"]),
                pcm_perturbation=float(t["pcm_perturbation"]),
                shuffle=t["shuffle"],
                seed=t["seed"],
                **_optimisation(t),
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


def _optimisation(t: dict[str, Any]) -> dict[str, Any]:
    """The `Hyper` fields of a checked [training] table that say how an estimate becomes a step."""
    return dict(
        optimiser=optimisers.optimiser(
            t["optimiser"],
            momentum=float(t["momentum"]),
            nesterov=t["nesterov"],
            beta1=float(t["adam_beta1"]),
            beta2=float(t["adam_beta2"]),
            epsilon=float(t["adam_epsilon"]),
        ),
        schedule=optimisers.Schedule(
            t["lr_schedule"], float(t["lr_decay"]), t["lr_step_epochs"], float(t["lr_floor"])
        ),
        clip=optimisers.Clip(float(t["clip_norm"]), float(t["clip_value"])),
        l1=float(t["l1"]),
        pruning=(
            optimisers.Pruning(
                float(t["prune_below"]),
                float(t["prune_temperature"]),
                t["prune_from"],
                t["prune_until"],
                t["prune_regrow"],
            )
            if t["prune_below"] > 0
            else None
        ),
    )


def _build_network(c: dict[str, Any]) -> Network:
    if c["builder"] == "seed-xor":
        return builders.seed_xor(float(c["amplifier_gain"]), pairing=c["seed_pairing"])
    if c["builder"] == "xor":
        return builders.xor(float(c["amplifier_gain"]))
    common = dict(
        duplicate_inputs=c["duplicate_inputs"],
        duplicate_hidden=c["duplicate_hidden"],
        doubled_outputs=c["doubled_outputs"],
        bias_volts=float(c["bias_volts"]),
        output_load=float(c["output_load"]),
        clamp_volts=float(c["clamp_volts"]),
        temperature=float(c["temperature"]),
    )
    if c["builder"] == "complete":
        return builders.complete(
            c["inputs"], c["hidden"][0], c["outputs"], float(c["amplifier_gain"]), **common
        )
    return builders.layered(
        c["inputs"],
        c["hidden"],
        c["outputs"],
        c["amplifier_gain"],
        feedback_gain=None if c["feedback_gain"] == "reciprocal" else c["feedback_gain"],
        skips=c["skips"],
        **common,
    )


# ---------------------------------------------------------------------------------------- sizes
@dataclass(frozen=True)
class Size:
    """What a circuit section asks for, counted without building it."""

    conductances: int
    nodes: int
    free_nodes: int  # nodes no source or amplifier drives: the unknowns of the twin
    layers: int  # trainable layers (hidden layers + the output layer)
    inputs: int
    outputs: int


XOR_SIZE = Size(conductances=8, nodes=11, free_nodes=3, layers=2, inputs=2, outputs=1)


def circuit_size(c: dict[str, Any]) -> Size:
    """The size of the network a checked [circuit] table builds (`builders.layered`'s and
    `builders.complete`'s counts)."""
    if c["builder"] not in SIZED:
        return XOR_SIZE
    sign_in = 2 if c["duplicate_inputs"] else 1
    sign_hidden = 2 if c["duplicate_hidden"] else 1
    per_output = 2 if c["doubled_outputs"] else 1
    hidden: list[int] = c["hidden"]
    if c["builder"] == "complete":
        sources = (c["inputs"] + 1) * sign_in  # the inputs and one bias
        free = hidden[0] + c["outputs"] * per_output
        amplifiers = (c["amplifier_gain"] != 1) + (sign_hidden - 1)  # +A (a wire when A = 1), −A
        couplings = free * (free - 1) // 2 * sign_hidden  # each pair of free nodes, ± each
        size = sources * free + couplings, sources + free * (1 + amplifiers), free
        return Size(*size, len(builders.COMPLETE_LAYERS), c["inputs"], c["outputs"])
    fan_in = [c["inputs"] * sign_in] + [h * sign_hidden for h in hidden]  # signals into each layer
    fan_out = [*hidden, c["outputs"] * per_output]
    conductances = sum((n + sign_in) * m for n, m in zip(fan_in, fan_out, strict=True))  # + its bias
    sources = c["inputs"] * sign_in + sign_in * len(fan_out)
    free = sum(hidden) + c["outputs"] * per_output
    nodes = sources + sum(hidden) * sign_hidden + free
    for f, t in builders.skip_pairs(c["skips"], len(hidden)):
        conductances += fan_in[f] * fan_out[t - 1]
        nodes += fan_in[f] if f > 0 else 0  # a hidden layer's own skip amplifiers
    return Size(conductances, nodes, free, len(fan_out), c["inputs"], c["outputs"])


def twin_cost(size: Size) -> tuple[float, float]:
    """(matrix entries, multiply-adds of a Newton step at worst) of the twin on this circuit."""
    free = float(size.free_nodes)
    return free * free + 2.0 * free * size.nodes + 40.0 * size.conductances, free**3 / 3.0


# ---------------------------------------------------------------------------------------- bench check
# A bench config's own tables are checked by the package that drives benches, which the method
# must not import: it registers the check under this entry-point group (pyproject.toml), and `load`
# runs it. So no command reaches a run log or an instrument with an unchecked bench config.
BENCH_CHECK_GROUP = "eqprop_hil.bench_check"


def _check_bench(experiment: Experiment) -> dict[str, Any]:
    """Runs every registered check; returns the [conductances] values a check narrowed (a
    calibrated bench's pots realise less than the experiment's device range)."""
    checks = list(metadata.entry_points(group=BENCH_CHECK_GROUP))
    if not checks:
        raise ConfigError(
            f"{experiment.bench.path if experiment.bench else experiment.path}: no bench backend is "
            "installed to check this bench config: install eqprop-hil with `pip install -e .`"
        )
    narrowed: dict[str, Any] = {}
    for entry in checks:
        narrowed.update(entry.load()(experiment) or {})
    return narrowed


# ---------------------------------------------------------------------------------------- reading
MAX_FILE_BYTES = 1 << 20  # a config is a page of text; more is a wrong file, read for nothing


def _read_toml(path: Path, what: str, fix: str) -> dict[str, Any]:
    shown = str(path) if str(path).isprintable() else show(str(path), 200)
    shown = shown if len(shown) <= 200 else shown[:199] + "…"
    try:
        if not path.is_file():
            raise ConfigError(f"{what} {shown} not found: {fix}")
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise ConfigError(
                f"{what} {shown} is {size:,} bytes, not a config (at most {MAX_FILE_BYTES:,}): {fix}"
            )
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{what} {shown} cannot be read ({exc.strerror or exc}): {fix}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}): save it as UTF-8"
        ) from exc
    return _parse_toml(text, path)


def _parse_toml(text: str, path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: malformed TOML ({exc}): fix the syntax at that line") from exc
    except RecursionError as exc:
        raise ConfigError(
            f"{path}: malformed TOML (nested too deeply): fix the file; a config nests a few levels at most"
        ) from exc


def _sets_nothing(raw: dict[str, Any]) -> bool:
    return all(isinstance(v, dict) and not v for v in raw.values())


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
    if _sets_nothing(raw):
        raise ConfigError(
            f"{path}: the config is empty: it sets no key and would run on defaults alone: give at least "
            '[circuit] builder (e.g. builder = "xor"), or start from configs/xor.toml'
        )
    given_backend = raw.get("backend")
    if bench is None and isinstance(given_backend, dict) and given_backend.get("bench", "") != "":
        raise ConfigError(
            f"{path}: [backend] bench = {show(given_backend['bench'])} is set by loading a bench config: "
            "remove it and run hil on the bench config, which names this experiment"
        )
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
    except (tomllib.TOMLDecodeError, RecursionError) as exc:
        raise ConfigError(f"{path}: its config is malformed TOML ({exc})") from exc
    for section, values in (overrides or {}).items():
        if not isinstance(raw.setdefault(section, {}), dict):
            raise ConfigError(f"{path}: {section} must be a table [{section}]")
        raw[section].update(values)
    return _experiment(path, raw, bench)


def _experiment(path: Path, raw: dict[str, Any], bench: BenchFile | None) -> Experiment:
    experiment = Experiment(path, _check(path, raw), bench)
    try:
        experiment.network()
    except ValueError as exc:
        raise ConfigError(f"{path}: [circuit] {exc}") from exc
    if bench is not None:
        narrowed = _check_bench(experiment)
        if narrowed:
            # The trainer clips to what the bench's pots realise; the run log keeps these values.
            values = {**experiment.values, "conductances": {**experiment["conductances"], **narrowed}}
            experiment = Experiment(path, values, bench)
            _check_bench(experiment)
    return experiment


def _bench_experiment(path: Path, raw: dict[str, Any]) -> tuple[dict[str, Any], Path]:
    """The experiment a bench config names: (its raw tables, its path). It must be an experiment:
    a bench config naming a bench config (itself, or one naming it back) is refused, so loading
    never recurses."""
    table = raw["bench"]
    experiment_file = table.get("experiment") if isinstance(table, dict) else None
    if not isinstance(experiment_file, str) or not experiment_file.strip():
        raise ConfigError(f'{path}: [bench] experiment must name an experiment config, e.g. "xor-bench.toml"')
    experiment_path = path.parent / experiment_file
    fix = "name an experiment config, relative to the bench config"
    experiment = _read_toml(experiment_path, f"{path}: [bench] experiment", fix)
    if "bench" in experiment:
        raise ConfigError(
            f"{path}: [bench] experiment = {show(experiment_file)} is itself a bench config: "
            "name an experiment config (with [circuit], [training], ...)"
        )
    return experiment, experiment_path


# ---------------------------------------------------------------------------------------- checking
def _unknown_key(path: Path, section: str, name: str, keys: dict[str, Key], elsewhere: str | None) -> str:
    line = f"{path}: unknown key [{section}] {name_of(name)}"
    guess = nearest(name, list(keys))
    if guess is not None:
        return f"{line}: did you mean {guess}?"
    if elsewhere is not None:
        return f"{line}: it belongs in [{elsewhere}]; move it there"
    return f"{line}: remove it (known keys: {', '.join(keys)})"


def check_table(
    path: Path, section: str, given: Any, keys: dict[str, Key], homes: dict[str, str] | None = None
) -> dict[str, Any]:
    """One table of a config checked against its keys: every key known, every required key
    given, every value valid; defaults filled in. `homes`: the section each key of the other
    tables lives in, for a key written in the wrong one."""
    if not isinstance(given, dict):
        raise ConfigError(f"{path}: {section} = {show(given)} must be a table: write it as [{section}]")
    extra = sorted(set(given) - set(keys))
    if extra:
        raise ConfigError(_unknown_key(path, section, extra[0], keys, (homes or {}).get(extra[0])))
    out: dict[str, Any] = {}
    for name, key in keys.items():
        if name not in given and key.default is REQUIRED:
            raise ConfigError(f"{path}: [{section}] {name} is missing: give it, {key.rule}")
        if name in given:
            value = given[name]
        elif isinstance(key.default, SameAs):
            value = out[key.default.key]
        else:
            value = key.default
        want = key.refusal(value)
        if want is not None:
            raise ConfigError(f"{path}: [{section}] {name} = {show(value)} is invalid: it must be {want}")
        out[name] = value
    return out


def _homes(schema: dict[str, dict[str, Key]]) -> dict[str, str]:
    """The section of each key, for a key written in the wrong one (first section wins)."""
    homes: dict[str, str] = {}
    for section, keys in schema.items():
        for name in keys:
            homes.setdefault(name, section)
    return homes


def _unknown_section(path: Path, name: str, value: Any) -> str:
    homes = _homes(SCHEMA)
    if not isinstance(value, dict):
        if name in homes:
            where = homes[name]
            return f"{path}: {name_of(name)} = {show(value)} is outside any section: put it under [{where}]"
        return (
            f"{path}: {name_of(name)} = {show(value)} is outside any section: remove it (a config holds "
            f"the sections {', '.join(f'[{s}]' for s in SCHEMA)})"
        )
    guess = nearest(name, list(SCHEMA))
    if guess is not None:
        return f"{path}: unknown section [{name_of(name)}]: did you mean [{guess}]?"
    return (
        f"{path}: unknown section [{name_of(name)}]: known sections are {', '.join(f'[{s}]' for s in SCHEMA)}"
    )


def _check(path: Path, raw: dict[str, Any]) -> dict[str, dict[str, Any]]:
    unknown = sorted(set(raw) - set(SCHEMA))
    if unknown:
        raise ConfigError(_unknown_section(path, unknown[0], raw[unknown[0]]))
    homes = _homes(SCHEMA)
    out = {
        section: check_table(
            path, section, raw.get(section, {}), keys, {k: s for k, s in homes.items() if s != section}
        )
        for section, keys in SCHEMA.items()
    }
    _check_circuit(path, out["circuit"], raw.get("circuit", {}), out["backend"]["name"])
    _check_ranges(path, out["conductances"], out["dataset"])
    _check_optimisation(path, out["training"], raw.get("training", {}), out["conductances"])
    _check_against_data(path, out)
    return out


def _check_circuit(path: Path, circuit: dict[str, Any], given: dict[str, Any], backend: str) -> None:
    """Keys that mean nothing for the builder, then the sizes, before anything is built."""
    # A resolved config (a run log's) carries every key at its default: only a set value misleads.
    builder = circuit["builder"]
    misplaced = [
        k
        for k in LAYERED_ONLY
        if k in given
        and given[k] != SCHEMA["circuit"][k].default
        and (builder not in SIZED or (k in STAGED and builder != "layered"))
    ]
    if misplaced:
        users = '"layered"' if misplaced[0] in STAGED else '"layered" or "complete"'
        raise ConfigError(
            f"{path}: [circuit] {misplaced[0]} applies only to builder = {users}: remove it or set builder "
            f"= {users.split(' or ')[0]}"
        )
    if builder != "seed-xor" and given.get("seed_pairing", True) is not True:
        raise ConfigError(f'{path}: [circuit] seed_pairing applies only to builder = "seed-xor": remove it')
    compensation = _check_stages(path, circuit)
    size = circuit_size(circuit)
    cap = LIMITS["conductances"]
    if size.conductances > cap:
        raise ConfigError(
            f"{path}: [circuit] inputs = {circuit['inputs']}, hidden = {show(circuit['hidden'])}, outputs = "
            f"{circuit['outputs']} make {size.conductances:,} conductances, above the cap of {cap:,.0f}: "
            "make the layers narrower"
        )
    limit = LIMITS["compensation"]
    if not 1 / limit <= compensation <= limit:
        gains = f"amplifier_gain = {show(circuit['amplifier_gain'])}"
        if builder == "layered" and circuit["feedback_gain"] != "reciprocal":
            gains += f", feedback_gain = {show(circuit['feedback_gain'])}"
        raise ConfigError(
            f"{path}: [circuit] {gains} through {size.layers - 1} hidden layers scale layer 1's signal by "
            f"1/{compensation:.3g} (its compensation Π A/b), beyond {_figure(limit)} either way: bring A/b "
            "nearer 1 (raise feedback_gain or lower amplifier_gain, or the reverse) or use fewer layers"
        )
    memory, work = twin_cost(size)
    if backend == "numeric" and (memory > LIMITS["twin_memory"] or work > LIMITS["twin_work"]):
        raise ConfigError(
            f"{path}: [circuit] hidden = {show(circuit['hidden'])} makes {size.conductances:,} conductances "
            f"on {size.nodes:,} nodes ({size.free_nodes:,} free), too big for the numeric twin "
            f"({8 * memory / 1e9:.1f} GB of matrices, up to {work:.1e} multiply-adds a Newton step): set "
            '[backend] name = "spice" or make the layers narrower'
        )


def _check_stages(path: Path, c: dict[str, Any]) -> float:
    """Per-layer gains, feedback gains and skips against the hidden layers; the compensation of
    layer 1 (Π A/b over the amplifiers to the output)."""
    builder, gain, hidden = c["builder"], c["amplifier_gain"], c["hidden"]
    if isinstance(gain, list) and builder != "layered":
        raise ConfigError(
            f"{path}: [circuit] amplifier_gain = {show(gain)} is a list (one gain per hidden layer), which "
            'only builder = "layered" takes: give one number'
        )
    if builder == "complete":
        if len(hidden) != 1:
            raise ConfigError(
                f'{path}: [circuit] hidden = {show(hidden)}: builder = "complete" has no layers of hidden '
                "nodes; give hidden = [n], its n hidden nodes"
            )
        return 1.0  # every amplifier at ratio 1 (builders.complete)
    if builder != "layered":
        return float(gain) ** 2  # the xor circuits: one hidden layer, reciprocal
    for key in ("amplifier_gain", "feedback_gain"):
        if isinstance(c[key], list) and len(c[key]) != len(hidden):
            raise ConfigError(
                f"{path}: [circuit] {key} = {show(c[key])} gives {len(c[key])} value(s) for the "
                f"{len(hidden)} hidden layers of hidden = {show(hidden)}: give one per hidden layer, or one "
                "number for all"
            )
    feedback = None if c["feedback_gain"] == "reciprocal" else c["feedback_gain"]
    try:
        builders.skip_pairs(c["skips"], len(hidden))
        forward, backward = builders.stage_gains(len(hidden), gain, feedback)
    except ValueError as exc:
        raise ConfigError(f"{path}: [circuit] {exc} (hidden = {show(hidden)})") from exc
    return builders.layer_compensation(forward, backward)[1]


# [training] keys that mean something only with another key's value: (key, needs, the value it needs)
_OPTIMISATION_NEEDS: tuple[tuple[str, str, tuple[Any, ...]], ...] = (
    ("momentum", "optimiser", ("sgd",)),
    ("nesterov", "optimiser", ("sgd",)),
    ("adam_beta1", "optimiser", ("adam",)),
    ("adam_beta2", "optimiser", ("adam",)),
    ("adam_epsilon", "optimiser", ("adam",)),
    ("lr_decay", "lr_schedule", ("step", "exponential")),
    ("lr_step_epochs", "lr_schedule", ("step",)),
    ("lr_floor", "lr_schedule", ("cosine",)),
)
_PRUNING_ONLY = ("prune_temperature", "prune_from", "prune_until", "prune_regrow")


def _check_optimisation(path: Path, t: dict[str, Any], given: Any, c: dict[str, Any]) -> None:
    """Optimiser, schedule and pruning keys that would do nothing, or nothing sensible."""
    given = given if isinstance(given, dict) else {}
    keys = SCHEMA["training"]

    def set_(name: str) -> bool:  # a resolved config (a run log's) carries every key at its default
        return name in given and given[name] != keys[name].default

    for name, needs, values in _OPTIMISATION_NEEDS:
        if set_(name) and t[needs] not in values:
            want = " or ".join(f'"{v}"' for v in values)
            raise ConfigError(
                f'{path}: [training] {name} applies only to {needs} = {want}, not "{t[needs]}": remove it '
                f"or set {needs} = {want.split(' or ')[0]}"
            )
    if t["nudge_current"] > 0 and set_("beta"):
        raise ConfigError(
            f"{path}: [training] beta = {t['beta']} and nudge_current = {t['nudge_current']} both set the "
            "nudge: nudge_current chooses β per sample (I0/‖t − y‖); remove one of them"
        )
    if t["nesterov"] and t["momentum"] == 0:
        raise ConfigError(f"{path}: [training] nesterov = true needs momentum > 0: give momentum (e.g. 0.9)")
    if t["prune_below"] == 0:
        stray = [name for name in _PRUNING_ONLY if set_(name)]
        if stray:
            raise ConfigError(
                f"{path}: [training] {stray[0]} applies only to pruning: set prune_below (S, above g_min) "
                "or remove it"
            )
    elif t["prune_below"] <= c["g_min"]:
        raise ConfigError(
            f"{path}: [training] prune_below = {t['prune_below']} S is not above g_min = {c['g_min']} S: no "
            "conductance is ever below it; raise it above g_min (or 0: no pruning)"
        )
    elif t["prune_until"] != 0 and t["prune_until"] < t["prune_from"]:
        raise ConfigError(
            f"{path}: [training] prune_until = {t['prune_until']} is before prune_from = {t['prune_from']}: "
            "give a later epoch, or 0 (to the run's last)"
        )


def _check_ranges(path: Path, c: dict[str, Any], d: dict[str, Any]) -> None:
    if c["g_min"] >= c["g_max"]:
        raise ConfigError(
            f"{path}: [conductances] g_min = {c['g_min']} must be below g_max = {c['g_max']}: lower g_min "
            "or raise g_max"
        )
    if c["init_low"] >= c["init_high"]:
        raise ConfigError(
            f"{path}: [conductances] init_low = {c['init_low']} must be below init_high = {c['init_high']}"
        )
    # A draw outside the device range would be clipped to its ends: not the draw the config states.
    if c["init_low"] < c["g_min"]:
        raise ConfigError(
            f"{path}: [conductances] init_low = {c['init_low']} is below g_min = {c['g_min']}: draw inside "
            "the device range (init_low ≥ g_min), or leave init_low out to start at g_min"
        )
    if c["init_high"] > c["g_max"]:
        raise ConfigError(
            f"{path}: [conductances] init_high = {c['init_high']} is above g_max = {c['g_max']}: draw "
            "inside the device range (init_high ≤ g_max), or leave init_high out to end at g_max"
        )
    if d["input_low"] == d["input_high"]:
        raise ConfigError(
            f"{path}: [dataset] input_low = input_high = {d['input_low']}: the bits would be the same level: "
            "make them differ"
        )
    if d["target_low"] == d["target_high"]:
        raise ConfigError(
            f"{path}: [dataset] target_low = target_high = {d['target_low']}: every answer would be right: "
            "make them differ"
        )


# The [dataset] keys that mean something only for some data sets, and the data sets they serve.
_SPLIT = ("iris", "digits", "npz", "csv", "idx")
DATASET_ONLY: dict[str, tuple[str, ...]] = {
    "gates": ("gates",),
    "test_fraction": _SPLIT,
    "split_seed": _SPLIT,
    "train_samples": _SPLIT,
    "test_samples": _SPLIT,
    "path": ("npz", "csv"),
    "label_column": ("csv",),
    "train_images": ("idx",),
    "train_labels": ("idx",),
    "test_images": ("idx",),
    "test_labels": ("idx",),
}


def _check_dataset(path: Path, d: dict[str, Any]) -> None:
    """Keys that mean nothing for the data set, the files it needs; file paths made absolute
    (relative to the config), so a run log's copy of the config finds them from anywhere."""
    name = d["name"]
    # A resolved config (a run log's) carries every key at its default: only a set value misleads.
    for key, users in DATASET_ONLY.items():
        if name not in users and d[key] != SCHEMA["dataset"][key].default:
            which = " or ".join(f'"{u}"' for u in users)
            raise ConfigError(f"{path}: [dataset] {key} applies only to name = {which}: remove it")
    for key in datasets.FILES.get(name, ()):
        if not d[key]:
            raise ConfigError(f'{path}: [dataset] name = "{name}" needs {key}: give the file\'s path')
    if name == "idx" and bool(d["test_images"]) != bool(d["test_labels"]):
        raise ConfigError(
            f"{path}: [dataset] give both test_images and test_labels, or neither (a split of the training "
            "files by test_fraction)"
        )
    for key in datasets.FILE_KEYS:
        if d[key]:
            d[key] = str((path.parent / Path(d[key]).expanduser()).resolve())


def _check_against_data(path: Path, out: dict[str, dict[str, Any]]) -> None:
    """The circuit against its data set, and the training keys that count layers or samples."""
    size = circuit_size(out["circuit"])
    _check_dataset(path, out["dataset"])
    try:
        data = datasets.build(out["dataset"])
    except datasets.DatasetError as exc:
        raise ConfigError(f"{path}: [dataset] {exc}") from exc
    n_in, n_out = data.inputs.shape[1], data.targets.shape[1]
    if n_in != size.inputs or n_out != size.outputs:
        per_class = " (one per class)" if data.classification else ""
        fix = (
            f"set [circuit] inputs = {n_in}, outputs = {n_out}"
            if out["circuit"]["builder"] in SIZED
            else f'use [circuit] builder = "layered" with inputs = {n_in}, outputs = {n_out}'
        )
        raise ConfigError(
            f"{path}: dataset '{data.name}' has {n_in} inputs and {n_out} outputs{per_class} but the circuit "
            f"has {size.inputs} and {size.outputs}: {fix}"
        )
    t = out["training"]
    if t["batch_size"] > len(data):
        raise ConfigError(
            f"{path}: [training] batch_size = {t['batch_size']} is more than the {len(data)} samples of "
            f"dataset '{data.name}': give at most {len(data)} ({len(data)} = one update per epoch)"
        )
    layers = [k for k in t["layer_learning_rates"] if not 1 <= int(k) <= size.layers]
    if layers:
        raise ConfigError(
            f'{path}: [training] layer_learning_rates names layer "{layers[0]}", which the circuit does not '
            f'have: use layers "1" to "{size.layers}"'
        )
