"""Config validation before anything happens: a fuzz of the shipped configs, the cases the issue
named, the caps, and `hil check`.

Every variant is loaded in this process (`hil.config.load`, which runs the bench checks too) and
must end one of two ways, within 2 s: accepted, and then sensible (finite numbers, non-empty
ranges, a network that builds and settles on the twin), or refused with a `ConfigError` of one
line that names the file, the key and what to do. Any other exception is a failure.
"""

from __future__ import annotations

import argparse
import math
import random
import re
import time
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tomli_w

from drivers import benchconfig
from hil import builders, config
from hil.config import LIMITS, SCHEMA, ConfigError

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
# mnist.toml reads the user's MNIST files, which a fresh checkout does not have: it cannot load here.
NEEDS_USER_FILES = {"mnist.toml"}
EXPERIMENTS = sorted(
    p.name
    for p in CONFIGS.glob("*.toml")
    if "bench" not in tomllib.loads(p.read_text()) and p.name not in NEEDS_USER_FILES
)
BENCHES = sorted(p.name for p in CONFIGS.glob("*.toml") if "bench" in tomllib.loads(p.read_text()))
HANG_GUARD = 2.0  # s: not a speed target, a bound that a hang or a huge allocation cannot meet
# Words of a fix: every refusal says what to do.
FIX = re.compile(
    r"\b(must|give|set|remove|rename|did you mean|put it|move it|make|name|add|lower|raise|narrow|"
    r"bring|draw|use|fix|save|start from|split|write it|install|leave)\b"
)


@dataclass
class Variant:
    """One fuzzed config: files to write (the first is the one loaded) and the words a refusal of
    it must contain (any one of them: the key or section it is about)."""

    name: str
    files: dict[str, str | bytes]
    about: tuple[str, ...]
    load: str = ""  # the path to load, when not the first file
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)


def _text(name: str) -> str:
    return (CONFIGS / name).read_text()


def _tables(name: str) -> dict[str, Any]:
    return tomllib.loads(_text(name))


def _with(tables: dict[str, Any], *changes: tuple[str, str, Any]) -> str:
    """The tables with `section.key = value` for each change (value None: the key removed)."""
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in tables.items()}
    for section, key, value in changes:
        target = out.setdefault(section, {})
        if value is None:
            target.pop(key, None)
        else:
            target[key] = value
    return tomli_w.dumps(out)


Change = tuple[str, str, Any]  # section, key, value (None: the key removed)


def _bench(
    bench: str, changes: list[Change], experiment: list[Change] | None = None
) -> dict[str, str | bytes]:
    """Files of a bench config and its experiment, each with changes."""
    tables = _tables(bench)
    name = tables["bench"]["experiment"]
    return {"bench.toml": _with(tables, *changes), name: _with(_tables(name), *(experiment or []))}


NAN, INF = float("nan"), float("inf")
BAD_NUMBERS: list[Any] = [
    NAN,
    INF,
    -INF,
    1e300,
    -1e300,
    1e-300,
    -1.0,
    0,
    0.0,
    2**62,
    2**64,
    "x",
    "",
    True,
    [1],
]
BAD_STRINGS: list[Any] = ["", "nonsense", 5, 1.5, NAN, True, ["xor"], {"a": 1}, "x" * 5000]
BAD_BOOLS: list[Any] = ["true", 1, 0.0, NAN, [True], ""]
BAD_LISTS: list[Any] = [5, "4", [], ["4"], [True], [1.5], [[1]], [0], [-1], [NAN], [{"a": 1}], {"a": 1}]
BAD_TABLES: list[Any] = [
    5,
    "x",
    [1],
    {"1": True},
    {"x": 1},
    {"²": 1},
    {"1": NAN},
    {"1": INF},
    {"pcm": {"a": 1}},
]


def _kind_pool(key: config.Key) -> list[Any]:
    if key.kind is bool:
        return BAD_BOOLS
    if key.kind is str:
        return BAD_STRINGS
    if key.kind is list:
        return BAD_LISTS
    if key.kind is dict:
        return BAD_TABLES
    return BAD_NUMBERS


def _typo(name: str, rng: random.Random) -> str:
    """A plausible misspelling: two letters swapped, one dropped or one doubled."""
    i = rng.randrange(len(name) - 1)
    kind = rng.choice(("swap", "drop", "double"))
    if kind == "swap":
        typo = name[:i] + name[i + 1] + name[i] + name[i + 2 :]
    elif kind == "drop":
        typo = name[:i] + name[i + 1 :]
    else:
        typo = name[:i] + name[i] + name[i:]
    return typo if typo != name else name + "s"


def variants() -> list[Variant]:
    """Every fuzzed config, in a fixed order (the random ones from a fixed seed)."""
    rng = random.Random(20240611)
    base = _tables("xor.toml")
    layered = tomllib.loads(_with(base, ("circuit", "builder", "layered"), ("backend", "name", "numeric")))
    out: list[Variant] = []

    # Every key of the experiment schema given every kind of bad value.
    for section, keys in SCHEMA.items():
        for key, spec in keys.items():
            start = layered if key in config.LAYERED_ONLY else base
            for k, value in enumerate(_kind_pool(spec)):
                out.append(
                    Variant(f"{section}.{key}#{k}", {"x.toml": _with(start, (section, key, value))}, (key,))
                )

    # Typos of every key and section: refused with the nearest name.
    for section, keys in SCHEMA.items():
        for key in keys:
            typo = _typo(key, rng)
            if typo not in keys:
                text = _with(base, (section, typo, 1))
                out.append(Variant(f"typo [{section}] {typo}", {"x.toml": text}, (typo,)))
        typo = _typo(section, rng)
        text = _text("xor.toml").replace(f"[{section}]", f"[{typo}]")
        if f"[{typo}]" in text:
            out.append(Variant(f"typo [{typo}]", {"x.toml": text}, (typo,)))

    # Files that are not configs, or empty ones.
    xor = _text("xor.toml")
    files: dict[str, str | bytes] = {
        "empty": "",
        "comments only": "# nothing\n# at all\n",
        "empty tables": "[training]\n[circuit]\n",
        "blank lines": "\n\n   \n",
        "unclosed table": "[training\nbeta = 1",
        "duplicated table": xor + "\n[training]\nepochs = 3\n",
        "duplicated key": xor.replace("epochs = 50", "epochs = 50\nepochs = 60"),
        "deep nesting": "a = " + "[" * 20000 + "]" * 20000 + "\n",
        "not utf-8": b"[training]\nbeta = \xff\xfe\n",
        "binary": bytes(range(256)) * 4,
        "huge": "# " + "x" * (2 << 20) + "\n",
        "stray key at top": "beta = 1e-6\n" + xor,
        "stray unknown at top": "colour = 'blue'\n" + xor,
        "key in the wrong section": xor.replace("epochs = 50", "epochs = 50\ng_min = 1e-3"),
        "section is a value": "training = 5\n",
        "newline in a key": xor.replace("epochs = 50", 'epochs = 50\n"a\\nb" = 1'),
    }
    for name, content in files.items():
        out.append(Variant(name, {"x.toml": content}, ("x.toml",)))

    # Sizes: beyond the caps, at the caps, and on the twin.
    sizes: list[tuple[str, list[Change]]] = [
        ("hidden 100000", [("circuit", "hidden", [100000])]),
        ("hidden 4096x2", [("circuit", "hidden", [4096, 4096])]),
        ("hidden 17 layers", [("circuit", "hidden", [2] * 17)]),
        ("hidden 16 layers of 1", [("circuit", "hidden", [1] * 16), ("circuit", "amplifier_gain", 1.0)]),
        ("hidden 8 layers gain 4", [("circuit", "hidden", [2] * 8)]),
        ("hidden 2000 on the twin", [("circuit", "hidden", [2000])]),
        ("hidden 1000 on the twin", [("circuit", "hidden", [1000])]),
        ("hidden 4000 on spice", [("circuit", "hidden", [4000]), ("backend", "name", "spice")]),
        (
            "inputs 784",
            [("circuit", "inputs", 784), ("circuit", "hidden", [100]), ("circuit", "outputs", 10)],
        ),
        ("inputs 100000", [("circuit", "inputs", 100000)]),
        ("outputs 2", [("circuit", "outputs", 2)]),
    ]
    for name, changes in sizes:
        about = (*(k for _, k, _ in changes), "inputs", "hidden", "outputs")
        out.append(Variant(name, {"x.toml": _with(layered, *changes)}, about))

    # Keys that must agree with each other.
    crossed: list[tuple[str, list[Change], tuple[str, ...]]] = [
        ("g_min == g_max", [("conductances", "g_min", 0.05), ("conductances", "g_max", 0.05)], ("g_min",)),
        ("g_min > g_max", [("conductances", "g_min", 0.2)], ("g_min",)),
        ("g_max = inf", [("conductances", "g_max", INF)], ("g_max",)),
        ("init below g_min", [("conductances", "g_min", 1e-3)], ("init_low",)),
        ("init above g_max", [("conductances", "init_high", 0.2)], ("init_high",)),
        (
            "init outside entirely",
            [("conductances", "init_low", 0.5), ("conductances", "init_high", 0.9)],
            ("init",),
        ),
        (
            "init empty",
            [("conductances", "init_low", 0.01), ("conductances", "init_high", 0.01)],
            ("init_low",),
        ),
        ("inputs equal", [("dataset", "input_low", 1.0), ("dataset", "input_high", 1.0)], ("input_low",)),
        ("targets equal", [("dataset", "target_low", 1.0)], ("target_low",)),
        ("batch above samples", [("training", "batch_size", 5)], ("batch_size",)),
        ("layer 3 of 2", [("training", "layer_learning_rates", {"3": 0.5})], ("layer_learning_rates",)),
        ("layer 0", [("training", "layer_learning_rates", {"0": 0.5})], ("layer_learning_rates",)),
        ("beta = 0", [("training", "beta", 0)], ("beta",)),
        ("seed_pairing on xor", [("circuit", "seed_pairing", False)], ("seed_pairing",)),
        ("hidden on xor", [("circuit", "hidden", [4])], ("hidden",)),
        ("bench backend alone", [("backend", "name", "bench")], ("bench",)),
        ("bench key by hand", [("backend", "bench", "b.toml")], ("bench",)),
        ("gain 1e300", [("circuit", "amplifier_gain", 1e300)], ("amplifier_gain",)),
        ("skip 2e9", [("conductances", "skip", 2_000_000_000)], ("skip",)),
        ("skip 2e9 float", [("conductances", "skip", 2e9)], ("skip",)),
        ("sweep methods repeated", [("sweep", "methods", ["vdm", "vdm"])], ("methods",)),
    ]
    for name, changes, about in crossed:
        out.append(Variant(name, {"x.toml": _with(base, *changes)}, about))

    # Paths that are not config files.
    out.append(Variant("missing file", {}, ("not found",), load="nope.toml"))
    out.append(Variant("a directory", {"d/x.toml": xor}, ("not found",), load="d"))
    out.append(Variant("a path too long", {}, ("x" * 40,), load="x" * 5000 + ".toml"))

    # Bench configs: includes, tables, limits, wiring, and what the experiment asks of the bench.
    for bench in BENCHES:
        tables = _tables(bench)
        for key in (
            "max_volts",
            "compliance_current",
            "compliance_voltage",
            "max_nudge_current",
            "ramp_step",
        ):
            out.append(Variant(f"{bench} {key} missing", _bench(bench, [("limits", key, None)]), (key,)))
            for value in (NAN, INF, 0, -1.0, 1e300, "3"):
                out.append(
                    Variant(f"{bench} {key}={value!r}", _bench(bench, [("limits", key, value)]), (key,))
                )
        for key, value in (("settle_seconds", INF), ("nplc", NAN), ("emulated", "yes"), ("experiment", 5)):
            out.append(Variant(f"{bench} {key}={value!r}", _bench(bench, [("bench", key, value)]), (key,)))
    bench = "bench-virtual.toml"
    tables = _tables(bench)
    routes = tables["probe"]["routes"]
    benches: list[tuple[str, dict[str, str | bytes], tuple[str, ...]]] = [
        ("bench names itself", _bench(bench, [("bench", "experiment", "bench.toml")]), ("bench config",)),
        (
            "bench cycle a-b-a",
            {
                "bench.toml": _with(tables, ("bench", "experiment", "b.toml")),
                "b.toml": _with(tables, ("bench", "experiment", "bench.toml")),
            },
            ("bench config",),
        ),
        ("bench experiment empty", _bench(bench, [("bench", "experiment", "")]), ("experiment",)),
        ("bench experiment a dir", _bench(bench, [("bench", "experiment", ".")]), ("experiment",)),
        ("bench experiment NUL", _bench(bench, [("bench", "experiment", "a\0b")]), ("experiment",)),
        ("bench experiment missing", _bench(bench, [("bench", "experiment", "gone.toml")]), ("experiment",)),
        ("bench experiment empty file", {**_bench(bench, []), "xor-bench.toml": ""}, ("empty",)),
        ("bench ramp 1e-12", _bench(bench, [("limits", "ramp_step", 1e-12)]), ("ramp_step",)),
        ("bench ramp 1e-3", _bench(bench, [("limits", "ramp_step", 1e-3)]), ("ramp_step",)),
        ("bench routes = 5", _bench(bench, [("probe", "routes", 5)]), ("routes",)),
        ("bench route a string", _bench(bench, [("probe", "routes", {"7": "1A01"})]), ("probe.routes",)),
        ("bench route empty", _bench(bench, [("probe", "routes", {"7": []})]), ("probe.routes",)),
        (
            "bench route bad crosspoint",
            _bench(bench, [("probe", "routes", {"7": ["ZZ"]})]),
            ("probe.routes",),
        ),
        ("bench route unknown node", _bench(bench, [("probe", "routes", {"77": ["1A01"]})]), ("77",)),
        (
            "bench route to a source",
            _bench(bench, [("probe", "routes", {**routes, "1": ["1A05"]})]),
            ("'1'",),
        ),
        (
            "bench route to the output",
            _bench(bench, [("probe", "routes", {**routes, "11": ["1A05"]})]),
            ("'11'",),
        ),
        ("bench probe matrix an smu", _bench(bench, [("probe", "matrix", "k26a")]), ("matrix",)),
        ("bench unknown source", _bench(bench, [("sources", "Vx9", "k26d.b")]), ("Vx9",)),
        ("bench source channel c", _bench(bench, [("sources", "Vx1", "k26a.c")]), ("Vx1",)),
        ("bench source an int", _bench(bench, [("sources", "Vx1", 5)]), ("Vx1",)),
        ("bench source missing", _bench(bench, [("sources", "Vx1", None)]), ("Vx1",)),
        ("bench channel two jobs", _bench(bench, [("sources", "Vx2", "k26a.a")]), ("k26a.a",)),
        ("bench pot beyond bank", _bench(bench, [("pots", "R1", "pots.9")]), ("R1",)),
        ("bench pot 0", _bench(bench, [("pots", "R1", "pots.0")]), ("R1",)),
        ("bench pot unknown edge", _bench(bench, [("pots", "R9", "pots.8")]), ("R9",)),
        ("bench pot shared", _bench(bench, [("pots", "R2", "pots.1")]), ("pots",)),
        ("bench pot missing", _bench(bench, [("pots", "R8", None)]), ("R8",)),
        ("bench amplifier unknown", _bench(bench, [("amplifiers", "X3", ["1B03"])]), ("X3",)),
        ("bench amplifier a string", _bench(bench, [("amplifiers", "X1", "1B01")]), ("X1",)),
        ("bench amplifier missing", _bench(bench, [("amplifiers", "X2", None)]), ("X2",)),
        ("bench relay two jobs", _bench(bench, [("amplifiers", "X1", ["1A01"])]), ("1A01",)),
        (
            "bench unknown section",
            {**_bench(bench, []), "bench.toml": _text(bench).replace("[limits]", "[limit]")},
            ("limit",),
        ),
        ("bench limits typo", _bench(bench, [("limits", "max_volt", 3.0)]), ("max_volt",)),
        (
            "bench unknown key",
            {**_bench(bench, []), "bench.toml": _with(tables, ("bench", "x", 1))},
            ("x",),
        ),
        (
            "bench instruments = 5",
            {**_bench(bench, []), "bench.toml": tomli_w.dumps({**tables, "instruments": 5})},
            ("instruments",),
        ),
        (
            "bench sources = a list",
            {**_bench(bench, []), "bench.toml": tomli_w.dumps({**tables, "sources": ["k26a.a"]})},
            ("sources",),
        ),
        ("bench pcm", _bench(bench, [], [("training", "method", "pcm")]), ("pcm",)),
        ("bench beta too strong", _bench(bench, [], [("training", "beta", 0.01)]), ("beta",)),
        ("bench g_max beyond the pots", _bench(bench, [], [("conductances", "g_max", 0.1)]), ("g_max",)),
        (
            "bench inputs beyond max_volts",
            _bench(bench, [], [("dataset", "input_high", 5.0)]),
            ("input_high",),
        ),
        (
            "bench compliance below volts",
            _bench(bench, [("limits", "compliance_voltage", 1.0)]),
            ("compliance",),
        ),
    ]
    for name, files_, about in benches:
        out.append(Variant(name, files_, about))
    instruments = tables["instruments"]
    for name, changed, about in [
        ("model unknown", {"k26a": {**instruments["k26a"], "model": "keithley-9999"}}, ("model",)),
        ("address bad", {"k26a": {**instruments["k26a"], "address": "http://x"}}, ("address",)),
        ("channels 0", {"pots": {**instruments["pots"], "channels": 0}}, ("channels",)),
        ("channels 65", {"pots": {**instruments["pots"], "channels": 65}}, ("channels",)),
        ("r_w 0", {"pots": {**instruments["pots"], "r_w": 0.0}}, ("r_w",)),
        ("r_ab 1e300", {"pots": {**instruments["pots"], "r_ab": 1e300}}, ("r_ab",)),
        ("a dotted name", {"k.26": instruments["k26a"]}, ("k.26",)),
        ("a table of 5", {"k26a": 5}, ("k26a",)),
        ("65 instruments", {f"m{i}": instruments["matrix"] for i in range(65)}, ("instruments",)),
    ]:
        bench_tables = {**tables, "instruments": {**instruments, **changed}}
        files_ = {"bench.toml": tomli_w.dumps(bench_tables), "xor-bench.toml": _text("xor-bench.toml")}
        out.append(Variant(f"bench instrument {name}", files_, about))

    # Random combinations of one to three changes, valid and invalid, over every shipped config.
    pool: list[Any] = [*BAD_NUMBERS, 0.5, 2, 1e-3, 3, 100, [3, 3], "vdm", "layered", False]
    every_key = [(s, k) for s, table in SCHEMA.items() for k in table]
    for n in range(120):
        name = rng.choice(EXPERIMENTS + BENCHES)
        changes = [(*rng.choice(every_key), rng.choice(pool)) for _ in range(rng.randint(1, 3))]
        about = tuple(k for _, k, _ in changes)
        if name in BENCHES:
            files_ = _bench(name, [], changes)
        else:
            files_ = {"x.toml": _with(_tables(name), *changes)}
        out.append(Variant(f"random {n} {name} {changes!r}", files_, about))
    return out


def _write(tmp: Path, variant: Variant) -> Path:
    for name, text in variant.files.items():
        path = tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text)
    return tmp / (variant.load or next(iter(variant.files)))


def _numbers(value: Any) -> Iterator[float]:
    if isinstance(value, dict):
        for v in value.values():
            yield from _numbers(v)
    elif isinstance(value, list):
        for v in value:
            yield from _numbers(v)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        yield float(value)


def assert_sensible(experiment: config.Experiment) -> None:
    """What an accepted config must be: finite, non-empty ranges, a network that settles."""
    from sim.factory import twin

    assert all(math.isfinite(x) for x in _numbers(experiment.values))
    c = experiment["conductances"]
    assert 0 < c["g_min"] <= c["init_low"] < c["init_high"] <= c["g_max"] < math.inf
    assert experiment.hyper().beta > 0 and experiment.hyper().learning_rate > 0
    network = experiment.network()
    size = config.circuit_size(experiment["circuit"])
    assert size.conductances == len(network.conductances) <= LIMITS["conductances"]
    g0 = experiment.start_conductances()
    assert g0.shape == (len(network.conductances),) and np.all(np.isfinite(g0))
    assert np.all((np.abs(g0) >= c["g_min"]) & (np.abs(g0) <= c["g_max"]))
    data = experiment.dataset()
    assert 1 <= experiment.hyper().batch_size <= len(data)
    if experiment.bench is not None:
        bench = benchconfig.parse(experiment.bench.path, experiment.bench.tables)
        for spec in bench.of_role("pots").values():
            assert np.isfinite(spec.pot_model().nominal_conductance(0))
    if len(network.conductances) <= 2000:  # the twin's dense setup grows fast; the caps cover the rest
        backend = twin(network, experiment["backend"])
        backend.program(g0)
        state = backend.settle(data.inputs[0])
        assert np.all(np.isfinite(state.voltages))


@dataclass
class Outcome:
    accepted: int = 0
    refused: int = 0
    slowest: float = 0.0
    failures: list[str] = field(default_factory=list)


def run_fuzz(tmp_path: Path) -> Outcome:
    outcome = Outcome()
    for k, variant in enumerate(variants()):
        tmp = tmp_path / f"v{k}"
        tmp.mkdir()
        path = _write(tmp, variant)
        start = time.perf_counter()
        try:
            experiment = config.load(path, variant.overrides or None)
        except ConfigError as exc:
            elapsed = time.perf_counter() - start
            outcome.refused += 1
            message = str(exc)
            problems = [
                "not one line" if "\n" in message or "\r" in message else "",
                "no file named" if str(tmp) not in message else "",
                f"names none of {variant.about}" if not any(a in message for a in variant.about) else "",
                "says no fix" if not FIX.search(message) else "",
                "too long" if len(message) > 600 else "",
            ]
            if any(problems):
                outcome.failures.append(f"{variant.name}: {', '.join(p for p in problems if p)}: {message!r}")
        except Exception as exc:  # anything but a ConfigError is the failure looked for
            elapsed = time.perf_counter() - start
            outcome.failures.append(f"{variant.name}: {type(exc).__name__}: {str(exc)[:300]}")
        else:
            elapsed = time.perf_counter() - start
            outcome.accepted += 1
            try:
                assert_sensible(experiment)
            except Exception as exc:
                outcome.failures.append(
                    f"{variant.name}: accepted but not sensible: {type(exc).__name__}: {exc}"
                )
        outcome.slowest = max(outcome.slowest, elapsed)
        if elapsed >= HANG_GUARD:
            outcome.failures.append(f"{variant.name}: answered in {elapsed:.2f} s")
    return outcome


def test_a_fuzz_of_the_shipped_configs_ends_in_sense_or_a_one_line_refusal(tmp_path):
    outcome = run_fuzz(tmp_path)
    print(
        f"fuzz: {outcome.accepted + outcome.refused} variants, {outcome.accepted} accepted, "
        f"{outcome.refused} refused, slowest {outcome.slowest * 1e3:.0f} ms"
    )
    assert not outcome.failures, "\n".join(outcome.failures)
    assert outcome.accepted + outcome.refused >= 150
    assert outcome.accepted >= 20 and outcome.refused >= 400


def test_the_fuzz_is_the_same_every_time():
    first, second = variants(), variants()
    assert [v.name for v in first] == [v.name for v in second]
    assert [v.files for v in first] == [v.files for v in second]


# ---------------------------------------------------------------------------------------- named cases
def _load(tmp_path: Path, text: str, name: str = "x.toml") -> config.Experiment:
    path = tmp_path / name
    path.write_text(text)
    return config.load(path)


def _refusal(tmp_path: Path, text: str, name: str = "x.toml") -> str:
    start = time.perf_counter()
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, text, name)
    assert time.perf_counter() - start < HANG_GUARD
    message = str(caught.value)
    assert "\n" not in message and str(tmp_path / name) in message
    return message


@pytest.mark.parametrize(
    "text, expected",
    [
        ("[conductances]\ng_max = inf\n", "[conductances] g_max = inf is invalid: it must be a number from"),
        ("[conductances]\ng_min = nan\n", "[conductances] g_min = nan is invalid"),
        ("[training]\nbeta = -inf\n", "[training] beta = -inf is invalid: it must be > 0 A/V"),
        ("[training]\nbeta = 0\n", "[training] beta = 0 is invalid: it must be > 0 A/V"),
        ("[conductances]\ng_min = 0.05\ng_max = 0.05\n", "g_min = 0.05 must be below g_max = 0.05"),
        ("[conductances]\ng_min = 1e-3\ninit_low = 1e-4\n", "init_low = 0.0001 is below g_min = 0.001"),
        ("[conductances]\ninit_high = 1.0\n", "init_high = 1.0 is above g_max = 0.1"),
        ("[circuit]\namplifier_gain = 1e300\n", "[circuit] amplifier_gain = 1e+300 is invalid"),
        ("[conductances]\nskip = 2000000000\n", "[conductances] skip = 2000000000 is invalid"),
        ("[conductances]\nskip = 2e9\n", "it must be an integer from 0 to 1000000"),
        ('[circuit]\nbuilder = "layered"\nhidden = [100000]\n', "[circuit] hidden = [100000] is invalid"),
        ('[circuit]\nbuilder = "layered"\nhidden = [4096, 4096]\n', "above the cap of 400,000"),
        ('[circuit]\nbuilder = "layered"\nhidden = [true]\n', "[circuit] hidden = [True] is invalid"),
        ("[training]\nbetta = 1e-6\n", "unknown key [training] betta: did you mean beta?"),
        ("[trainig]\nbeta = 1e-6\n", "unknown section [trainig]: did you mean [training]?"),
        ("[training]\ng_min = 1e-3\n", "unknown key [training] g_min: it belongs in [conductances]"),
        ("beta = 1e-6\n", "beta = 1e-06 is outside any section: put it under [training]"),
        ("[training]\nbatch_size = 5\n", "batch_size = 5 is more than the 4 samples"),
        ('[training]\nlayer_learning_rates = { "3" = 0.5 }\n', 'names layer "3", which the circuit does not'),
        ('[sweep]\nmethods = [["vdm"]]\n', "[sweep] methods = [['vdm']] is invalid"),
    ],
)
def test_the_issue_cases_are_one_line_refusals(tmp_path, text, expected):
    message = _refusal(tmp_path, text)
    assert expected in message, message


@pytest.mark.parametrize("text", ["", "# only a comment\n", "[training]\n[circuit]\n"])
def test_an_empty_config_is_refused_not_trained_on_defaults(tmp_path, text):
    message = _refusal(tmp_path, text)
    assert "the config is empty" in message and "configs/xor.toml" in message


def test_a_bench_config_including_itself_is_a_config_error_not_a_recursion(tmp_path):
    text = _text("bench-virtual.toml").replace('"xor-bench.toml"', '"self.toml"')
    message = _refusal(tmp_path, text, "self.toml")
    assert "is itself a bench config" in message


def test_two_bench_configs_naming_each_other_are_refused(tmp_path):
    (tmp_path / "b.toml").write_text(_text("bench-virtual.toml").replace('"xor-bench.toml"', '"a.toml"'))
    message = _refusal(
        tmp_path, _text("bench-virtual.toml").replace('"xor-bench.toml"', '"b.toml"'), "a.toml"
    )
    assert "is itself a bench config" in message


@pytest.mark.parametrize(
    "changes, expected",
    [
        ([("probe", "routes", 5)], "[probe] routes = 5 is invalid"),
        ([("limits", "ramp_step", 1e-12)], "[limits] ramp_step = 1e-12 is invalid"),
        ([("limits", "ramp_step", 1e-3)], "takes 6,000 steps"),
        (
            [("pots", "R8", None), ("pots", "r8", "pots.8")],
            "[pots] r8 is not an edge of network 'xor': did you mean 'R8'?",
        ),
        (
            [("sources", "Vx1", None), ("sources", "vx1", "k26a.a")],
            "[sources] vx1 is not a source of network 'xor'",
        ),
    ],
)
def test_bench_issue_cases_are_one_line_refusals(tmp_path, changes, expected):
    (tmp_path / "xor-bench.toml").write_text(_text("xor-bench.toml"))
    message = _refusal(tmp_path, _with(_tables("bench-virtual.toml"), *changes), "bench.toml")
    assert expected in message, message


def test_a_pot_wiper_of_zero_ohm_is_refused(tmp_path):
    (tmp_path / "xor-bench.toml").write_text(_text("xor-bench.toml"))
    message = _refusal(tmp_path, _text("bench-virtual.toml").replace("r_w = 45.0", "r_w = 0.0"), "bench.toml")
    assert "[instruments.pots] r_w = 0.0 is invalid: it must be a number from 1 to 10000 Ω" in message


def test_hidden_1000_is_answered_at_once(tmp_path):
    start = time.perf_counter()
    experiment = _load(
        tmp_path, '[circuit]\nbuilder = "layered"\nhidden = [1000]\n[backend]\nname = "numeric"\n'
    )
    assert time.perf_counter() - start < HANG_GUARD
    assert len(experiment.network().conductances) == 10_004


def test_the_initial_draw_follows_the_device_range_when_not_given(tmp_path):
    experiment = _load(tmp_path, "[conductances]\ng_min = 1e-3\ng_max = 0.01\n")
    c = experiment["conductances"]
    assert (c["init_low"], c["init_high"]) == (1e-3, 0.01)
    g0 = experiment.start_conductances()
    assert g0.min() >= 1e-3 and g0.max() <= 0.01


# ---------------------------------------------------------------------------------------- caps
@pytest.mark.parametrize(("hidden", "conductances"), [(100, 161_040), (200, 322_040)])
def test_an_mnist_sized_network_is_within_every_cap(hidden, conductances):
    circuit = dict(SCHEMA_DEFAULTS["circuit"], builder="layered", inputs=784, hidden=[hidden], outputs=10)
    size = config.circuit_size(circuit)
    assert size.conductances == conductances <= LIMITS["conductances"]
    memory, work = config.twin_cost(size)
    assert memory <= LIMITS["twin_memory"] and work <= LIMITS["twin_work"]  # the twin too


def test_an_mnist_sized_config_passes_the_caps_and_meets_the_data_sets_shape(tmp_path):
    text = '[circuit]\nbuilder = "layered"\ninputs = 784\nhidden = [100]\noutputs = 10\n'
    text += '[backend]\nname = "numeric"\n'
    message = _refusal(tmp_path, text)
    assert "dataset 'xor' has 2 inputs and 1 outputs but the circuit has 784 and 10" in message


SCHEMA_DEFAULTS = {s: {k: key.default for k, key in keys.items()} for s, keys in SCHEMA.items()}


@pytest.mark.parametrize(
    "sizes",
    [
        (2, [2], 1, True, True, True),
        (3, [4, 2], 2, False, True, False),
        (1, [1, 1, 1], 1, False, False, False),
        (5, [3], 2, True, False, True),
        (4, [7, 3, 5], 3, True, True, False),
    ],
)
def test_the_counted_size_is_the_built_size(sizes):
    inputs, hidden, outputs, dup_in, dup_hidden, doubled = sizes
    circuit = dict(
        SCHEMA_DEFAULTS["circuit"],
        builder="layered",
        inputs=inputs,
        hidden=hidden,
        outputs=outputs,
        duplicate_inputs=dup_in,
        duplicate_hidden=dup_hidden,
        doubled_outputs=doubled,
    )
    size = config.circuit_size(circuit)
    net = builders.layered(
        inputs, hidden, outputs, duplicate_inputs=dup_in, duplicate_hidden=dup_hidden, doubled_outputs=doubled
    )
    driven = {s.node for s in net.sources} | {a.node_out for a in net.amplifiers}
    assert size.conductances == len(net.conductances)
    assert size.nodes == len(net.nodes)
    assert size.free_nodes == len([n for n in net.nodes if n not in driven])
    assert size.layers == len(set(net.layers.tolist()))


def test_the_xor_size_is_the_built_size():
    for net in (builders.xor(), builders.seed_xor()):
        size = config.XOR_SIZE
        driven = {s.node for s in net.sources} | {a.node_out for a in net.amplifiers}
        assert (size.conductances, size.nodes, size.layers) == (
            len(net.conductances),
            len(net.nodes),
            len(set(net.layers.tolist())),
        )
        assert size.free_nodes == len([n for n in net.nodes if n not in driven])


def test_every_cap_is_stated_in_the_reference():
    from hil.cli.keys import reference

    table = reference()
    for text in ("from 1 to 1024", "1 to 16 layers of 1 to 4096", "400,000 conductances", "1.25e8", "3e11"):
        assert text in table, text
    assert "from 0.1 to 100" in table  # amplifier_gain
    assert "in at most 1000 steps" in table  # ramp_step


# ---------------------------------------------------------------------------------------- hil check
def _hil(monkeypatch: pytest.MonkeyPatch) -> Callable[..., int]:
    """`hil` in this process with `check` registered (the command groups may not list it yet)."""
    import hil.cli as cli
    from hil.cli import check

    parser = cli.parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    if "check" not in sub.choices:
        check.register(sub)
    monkeypatch.setattr(cli, "parser", lambda: parser)
    return lambda *args: cli.main(list(args))


@pytest.mark.parametrize(
    "name, line",
    [
        ("xor.toml", "ok (xor, 8 conductances, spice)"),
        ("case1-seed.toml", "ok (seed-xor, 8 conductances, numeric)"),
        ("bench-virtual.toml", "ok (xor, 8 conductances, bench)"),
    ],
)
def test_hil_check_says_ok_in_one_line(monkeypatch, capsys, name, line):
    hil = _hil(monkeypatch)
    assert hil("check", str(CONFIGS / name)) == 0
    out = capsys.readouterr()
    assert out.out == f"{CONFIGS / name}: {line}\n" and out.err == ""


def test_hil_check_names_a_dry_run(monkeypatch, capsys):
    hil = _hil(monkeypatch)
    assert hil("check", str(CONFIGS / "bench-virtual.toml"), "--backend", "numeric") == 0
    assert capsys.readouterr().out.endswith("ok (xor, 8 conductances, numeric (dry run of the bench))\n")


@pytest.mark.parametrize(
    "text, expected",
    [
        ("", "the config is empty"),
        ("[training]\nbeta = nan\n", "[training] beta = nan is invalid"),
        (
            '[circuit]\nbuilder = "layered"\nhidden = [4096, 1, 4096]\n[backend]\nname = "numeric"\n',
            "numeric twin",
        ),
    ],
)
def test_hil_check_refuses_in_one_line_with_exit_2_and_writes_nothing(
    monkeypatch, capsys, tmp_path, text, expected
):
    hil = _hil(monkeypatch)
    path = tmp_path / "x.toml"
    path.write_text(text)
    monkeypatch.chdir(tmp_path)
    assert hil("check", str(path)) == 2
    out = capsys.readouterr()
    assert out.out == ""
    lines = out.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"hil: error: {path}: ") and expected in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.toml"]


def test_hil_check_on_the_twin_refuses_what_spice_accepts(monkeypatch, capsys, tmp_path):
    hil = _hil(monkeypatch)
    path = tmp_path / "big.toml"
    path.write_text('[circuit]\nbuilder = "layered"\nhidden = [4096, 1, 4096]\n')
    assert hil("check", str(path)) == 0
    assert "ok (layered-2-4096-1-4096-1, 65542 conductances, spice)" in capsys.readouterr().out
    assert hil("check", str(path), "--backend", "numeric") == 2
    assert 'set [backend] name = "spice"' in capsys.readouterr().err


def test_a_dry_run_of_a_bench_config_may_use_pcm_but_not_a_broken_bench(tmp_path):
    files = _bench("bench-virtual.toml", [], [("training", "method", "pcm")])
    path = _write(tmp_path, Variant("pcm", files, ()))
    with pytest.raises(ConfigError, match="method pcm needs every element's branch current"):
        config.load(path)
    assert config.load(path, {"backend": {"name": "numeric"}}).dry_run
    broken = _bench("bench-virtual.toml", [("limits", "ramp_step", 1e-3)], [("training", "method", "pcm")])
    path = _write(tmp_path, Variant("broken", broken, ()))
    with pytest.raises(ConfigError, match=re.escape("ramp_step = 0.001 V takes 6,000 steps")):
        config.load(path, {"backend": {"name": "numeric"}})


def test_loading_a_bench_config_checks_it_even_when_nothing_imported_the_bench_code(tmp_path):
    """hil.config may not import drivers: it finds the bench check through its entry point
    (eqprop_hil.bench_check), in a process that has imported nothing else."""
    import subprocess
    import sys

    path = _write(
        tmp_path, Variant("ramp", _bench("bench-virtual.toml", [("limits", "ramp_step", 1e-3)]), ())
    )
    code = (
        "import sys; from hil import config\n"
        "assert 'drivers.benchconfig' not in sys.modules\n"
        f"try:\n    config.load({str(path)!r})\nexcept config.ConfigError as exc:\n    print(exc)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "ramp_step = 0.001 V takes 6,000 steps" in result.stdout
