"""Pot ratings as safety code (drivers.ratings): the worst-case bound against brute force, a
config that could exceed a rating refused before anything is energised, every settle predicted
and refused beforehand, measured afterwards, and a whole training on the noisy virtual bench
held to the ratings in every solve. Also the bench's ramps, probe switching and error queues."""

import re
from pathlib import Path

import h5py
import numpy as np
import pytest

from drivers import bench as bench_module
from drivers import ratings
from drivers.bench import BenchBackend, BenchSafetyError
from hil import builders, config, open_backend, runlog, train
from hil.config import ConfigError
from hil.interface import BackendError
from sim.twin import TwinBackend

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def _bench_file(tmp_path: Path, edit=lambda text: text, noise: str = "datasheet") -> Path:
    """bench-virtual.toml with its experiment by absolute path and the SMU error model on."""
    text = (CONFIGS / "bench-virtual.toml").read_text()
    text = re.sub(r'experiment = "([^"]+)"', lambda m: f'experiment = "{CONFIGS / m.group(1)}"', text)
    text = re.sub(r"(?m)^noise = .*\n", "", text)
    text = text.replace("[bench]\n", f'[bench]\nnoise = "{noise}"\n', 1)
    path = tmp_path / "bench.toml"
    path.write_text(edit(text))
    return path


def _short(path: Path, epochs: int = 2) -> config.Experiment:
    return config.load(path, {"training": {"epochs": epochs}})


# ---------------------------------------------------------------------------------------- the bound
def _brute_force(network, volts, g_low, g_high, nudge, trials, seed):
    """The largest |V| per node and |I| per edge the twin finds over random and extreme draws."""
    rng = np.random.default_rng(seed)
    twin = TwinBackend(network)
    worst_v = np.zeros(len(network.nodes))
    worst_i = np.zeros(len(network.conductances))
    n_in = network.n_inputs
    for trial in range(trials):
        if trial % 2:  # extremes: every conductance at an end of the range, inputs at ±volts
            g = rng.choice([g_low, g_high], len(network.conductances))
            x = rng.choice([-volts, volts], n_in)
        else:
            g = np.exp(rng.uniform(np.log(g_low), np.log(g_high), len(network.conductances)))
            x = rng.uniform(-volts, volts, n_in)
        g = g * rng.choice([-1.0, 1.0], len(g))  # either source sign, either amplifier polarity
        nudges = {node: float(rng.choice([-nudge, nudge])) for node in network.nudge_nodes}
        twin.program(g)
        v = twin.settle(x, nudges).voltages
        worst_v = np.maximum(worst_v, np.abs(v))
        a, b = network.edge_endpoints
        worst_i = np.maximum(worst_i, np.abs(g) * np.abs(v[a] - v[b]))
    return worst_v, worst_i


@pytest.mark.parametrize(
    "network, volts, nudge",
    [
        (builders.xor(2.0), 1.0, 1e-5),
        (builders.xor(4.0), 0.5, 1e-4),
        (builders.layered(2, [3, 2], 1, amplifier_gain=[2.0, 1.5], bias_volts=0.5), 0.4, 2e-5),
    ],
    ids=["xor A=2", "xor A=4", "two hidden layers"],
)
def test_no_draw_of_conductances_inputs_signs_or_nudges_exceeds_the_worst_case(network, volts, nudge):
    g_low, g_high = 1e-4, 5e-3
    source_volts = max(volts, max(abs(s.value) for s in network.sources))
    bound = ratings.worst_case(network, source_volts, g_low, nudge)
    worst_v, worst_i = _brute_force(network, volts, g_low, g_high, nudge, 400, seed=1)
    for node, k in network.node_index.items():
        assert worst_v[k] <= bound[node] * (1 + 1e-9), node
    for k, edge in enumerate(network.conductances):
        assert worst_i[k] <= g_high * (bound[edge.a] + bound[edge.b]), edge.name
    # The bound is a bound on this circuit, not a number of its own: the draws reach a good part of
    # it somewhere (an amplifier's output swings to most of |A|·max|source|).
    assert max(worst_v[k] / bound[n] for n, k in network.node_index.items()) > 0.5


def test_the_nudge_widening_bounds_what_the_nudge_alone_adds():
    network = builders.xor(2.0)
    g_low, nudge = 1e-3, 1e-4
    bound = ratings.worst_case(network, 1.0, g_low, nudge)
    # Seen from the output: R7 and R8, each in series with the three layer-1 conductances of its
    # hidden node, at g_min; the nudge divided by the output's gain scale A = 2.
    series = 1 / g_low + 1 / (3 * g_low)
    widening = (series / 2) * nudge / 2.0
    assert bound["11"] == pytest.approx(2.0 * (1.0 + widening))
    twin = TwinBackend(network)
    twin.program(np.full(len(network.conductances), g_low))
    still = twin.settle(np.zeros(2)).voltages
    nudged = twin.settle(np.zeros(2), {"11": nudge}).voltages
    added = np.abs(nudged - still)
    assert np.max(added) <= 2.0 * widening * (1 + 1e-9)
    assert added[network.node_index["11"]] > 0.5 * 2.0 * widening  # the output takes most of it


def test_a_network_without_reciprocal_amplifiers_gets_no_bound():
    with pytest.raises(ratings.RatingError, match=r"amplifier X1 is not reciprocal .*; train the corrected"):
        ratings.worst_case(builders.seed_xor(4.0), 1.0, 1e-4, 1e-6)


@pytest.mark.parametrize(
    "supply, rule",
    [
        ("[0, 6]", "VDD up to 5.5 V"),
        ("[-3, 3]", "VSS from -2.75"),
        ("[0, 2]", "from 2.7 to 5.5 V"),
        ('"5"', "a list"),
    ],
)
def test_a_supply_the_part_does_not_run_on_is_refused(tmp_path, supply, rule):
    path = _bench_file(tmp_path, lambda t: t.replace("supply = [-2.5, 2.5]", f"supply = {supply}"))
    with pytest.raises(
        ConfigError, match=rf"\[instruments.pots\] supply = .* is invalid: it must be .*{re.escape(rule)}"
    ):
        config.load(path)


def test_a_config_that_could_exceed_a_rating_is_refused_before_anything_is_energised(tmp_path, hil):
    # A single 0…2.7 V supply: the circuit's nodes swing negative, so some pot terminal can leave it.
    path = _bench_file(tmp_path, lambda t: t.replace("supply = [-2.5, 2.5]", "supply = [0, 2.7]"))
    with pytest.raises(ConfigError) as refused:
        config.load(path)
    message = str(refused.value)
    assert "\n" not in message
    assert re.search(
        r"pot R\d \(pots\.\d\) can see ±[0-9.]+ V at node \d+, outside its supply \[0, 2\.7\] V", message
    )
    assert "in the worst case over the data set" in message
    result = hil("train", str(path), "--out", str(tmp_path / "run.h5"))
    assert result.returncode != 0 and "outside its supply [0, 2.7] V" in result.stderr
    assert not (tmp_path / "run.h5").exists()  # refused before a log, let alone an instrument
    # The wiper current, with the rating lowered by the config (a bench's own, stricter choice).
    path = _bench_file(
        tmp_path, lambda t: t.replace("supply = [-2.5, 2.5]", "supply = [-2.5, 2.5]\nwiper_current = 1e-6")
    )
    with pytest.raises(
        ConfigError, match=r"pot R\d \(pots\.\d\) can carry [0-9.e-]+ A \(g_max .*above its rating 1e-06 A"
    ):
        config.load(path)


# ---------------------------------------------------------------------------------------- per settle
@pytest.fixture
def bench(tmp_path):
    experiment = _short(_bench_file(tmp_path, noise="none"))
    backend = open_backend(experiment)
    backend.program(experiment.initial_conductances(8))
    yield backend, experiment
    backend.close()


def test_a_settle_beyond_a_rating_is_refused_before_any_level_moves(bench):
    backend, experiment = bench
    x = experiment.dataset().inputs[1]
    backend.settle(x)
    smus = backend.emulator.state.smus
    levels = {key: s.level for key, s in smus.items()}
    solves = backend.emulator.circuit.pots.solves
    backend._ratings = {
        name: ratings.PotRatings(r.v_low, r.v_high, 1e-9) for name, r in backend._ratings.items()
    }
    with pytest.raises(
        BenchSafetyError,
        match=r"refused before any level was applied: pot R\d \(pots\.\d\): predicted wiper current "
        r".* above its rating 1e-09 A",
    ):
        backend.settle(-x)
    assert {key: s.level for key, s in smus.items()} == levels
    assert backend.emulator.circuit.pots.solves == solves  # nothing read, nothing changed


def test_the_prediction_matches_what_the_bench_measures(bench):
    backend, experiment = bench
    for x in experiment.dataset().inputs:
        backend.settle(x)
    record = backend.rating_record
    assert record["settles"] == 4
    assert record["largest_terminal_volts"] > 0.1  # something was measured
    assert record["largest_gap_volts"] < 1e-6  # noise-free: the twin is the emulated board


def test_a_measured_value_beyond_a_rating_stops_the_run(bench):
    backend, experiment = bench
    x = experiment.dataset().inputs[1]
    predicted = backend.predict
    # A twin that believes the board quieter than it is: the check after the settle catches it.
    backend.predict = lambda levels, nudges, g, inverted: predicted(levels, nudges, g, inverted) * 0.0
    measured = backend.settle(x).voltages
    a, b = backend.network.edge_endpoints
    low = float(np.max(np.abs(measured[np.union1d(a, b)])))
    backend._ratings = {name: ratings.PotRatings(-0.9 * low, 0.9 * low, 1.0) for name in backend._ratings}
    with pytest.raises(
        BenchSafetyError,
        match=r"pot R\d \(pots\.\d\): measured -?[0-9.]+ V at node \d+, outside its supply .*stopped",
    ):
        backend.settle(x)


def test_a_bench_opened_without_a_twin_refuses_to_settle(bench):
    backend, experiment = bench
    blind = BenchBackend(backend.network, backend.config, backend.hw)
    blind._g = backend._g
    with pytest.raises(BenchSafetyError, match="no twin to predict"):
        blind.settle(experiment.dataset().inputs[0])


# ---------------------------------------------------------------------------------------- a whole run
def test_a_whole_training_on_the_noisy_virtual_bench_keeps_every_pot_within_its_ratings(tmp_path):
    experiment = _short(_bench_file(tmp_path, noise="datasheet"), epochs=3)
    spec = experiment.bench and experiment.bench.tables["instruments"]["pots"]
    vss, vdd = spec["supply"]
    rating = ratings.PARTS[spec.get("part", "ad5206")].continuous_current
    backend = open_backend(experiment)
    try:
        train.train(backend, experiment.dataset(), experiment.initial_conductances(8), experiment.hyper())
    finally:
        backend.close()
    pots = backend.emulator.circuit.pots
    settles = backend.rating_record["settles"]
    assert settles >= 3 * 4 * 3  # epochs × samples × (free, +β, −β), and any evaluation
    assert pots.solves >= settles and len(pots.v_a) == pots.solves  # every reading's circuit
    v_a, v_b, current = np.array(pots.v_a), np.array(pots.v_b), np.array(pots.current)
    assert v_a.shape == (pots.solves, 8)
    assert np.all((v_a >= vss) & (v_a <= vdd) & (v_b >= vss) & (v_b <= vdd))
    assert np.max(np.abs(current)) <= rating
    assert np.max(np.abs(current)) > 0.0 and np.max(np.abs(v_a)) > 0.0  # the pots did carry the run
    assert 0.0 < backend.rating_record["largest_gap_volts"] < 0.01  # noisy readings, near the twin


# ------------------------------------------------------------------------ ramps, probe, errors
def test_a_ramp_steps_at_most_ramp_step_with_ramp_delay_between_steps(bench, monkeypatch):
    backend, _ = bench
    waits: list[float] = []
    sets: list[float] = []
    monkeypatch.setattr(bench_module.time, "sleep", waits.append)
    backend.limits["ramp_delay"] = 0.02
    backend.limits["ramp_step"] = 0.25
    key = next(iter(backend.config.sources.values()))
    original = backend.hw.smus[key].set_level
    monkeypatch.setattr(backend.hw.smus[key], "set_level", lambda v: (sets.append(v), original(v)))
    start = backend._levels[key]
    backend._ramp(key, start + 1.0)
    assert sets == pytest.approx([start + 0.25, start + 0.5, start + 0.75, start + 1.0])
    assert waits == [0.02, 0.02, 0.02]  # between steps, not after the last


def test_the_probe_is_off_whenever_a_relay_moves_onto_a_node(bench, monkeypatch):
    backend, experiment = bench
    probe = backend.emulator.state.smus[backend.config.probe_channel]
    matrix = backend.hw.matrices[backend.config.probe_matrix]
    seen: list[tuple[str, bool, float]] = []
    routes = {cp for cps in backend.config.probe_routes.values() for cp in cps}
    for name in ("open_channels", "close_channels"):
        original = getattr(matrix, name)

        def spy(channels, original=original, name=name):
            if set(channels) & routes:  # the probe's relays (not an amplifier's inverting ones)
                seen.append((name, probe.output, probe.level))
            return original(channels)

        monkeypatch.setattr(matrix, name, spy)
    for x in experiment.dataset().inputs:
        backend.settle(x)
    closes = [s for s in seen if s[0] == "close_channels"]
    opens = [s for s in seen if s[0] == "open_channels"]
    assert len(closes) >= 4 and opens
    assert all(not on for _, on, _ in closes)  # off (held at its off level) while a route closes
    assert all(level == 0.0 for _, _, level in opens)  # a relay opens with 0 A through it
    assert probe.output  # on again for the readings


def test_verify_reads_every_error_queue(bench):
    backend, _ = bench
    backend.verify()
    backend.hw.sessions["matrix"].write("channel.close('9Z99')")  # the instrument refuses it
    with pytest.raises(BackendError, match=r"^matrix"):
        backend.verify()


# ------------------------------------------------------------------------ no hot switching, run record
def test_an_inverting_relay_moves_only_with_every_level_at_0_and_the_next_settle_is_unchanged(bench):
    """Sources and nudges are brought to 0 (ramped, *OPC?) before an amplifier's inverting relay
    moves; the settle after it ramps them back and reads what the twin computes for the new signs."""
    backend, experiment = bench
    net, state = backend.network, backend.emulator.state
    inverting = {cp for cps in backend.config.amplifiers.values() for cp in cps}
    moves: list[tuple[frozenset[str], float]] = []
    last: list[frozenset[str]] = [frozenset()]
    changed = state.changed

    def record() -> None:  # every change of any instrument's state, as it lands
        changed()
        closed = frozenset(c for relays in state.relays.values() for c in relays.closed if c in inverting)
        if closed != last[0]:
            live = max((abs(s.level) for s in state.smus.values() if s.output), default=0.0)
            moves.append((closed, live))
            last[0] = closed

    state.changed = record  # type: ignore[method-assign]
    g0 = experiment.initial_conductances(8)
    flips = [
        k
        for k in range(len(g0))
        if np.any(net.sign_multipliers(np.where(np.arange(len(g0)) == k, -g0, g0))[1] < 0)
    ]
    assert flips, "no edge whose sign inverts an amplifier"
    g1 = g0.copy()
    g1[flips[0]] = -g1[flips[0]]
    x = experiment.dataset().inputs[1]
    nudge = {net.nudge_nodes[0]: 1e-6}
    backend.settle(x, nudge)
    assert max(abs(s.level) for s in state.smus.values() if s.output) > 0.1  # the levels were held
    realised = backend.program(g1)
    assert moves and moves[-1][0]  # an inverting relay closed
    got = backend.settle(x, nudge).voltages
    backend.program(g0)  # and opened again
    assert len(moves) >= 2 and not moves[-1][0]
    assert all(live == 0.0 for _, live in moves)  # no relay moved with a level applied
    twin = TwinBackend(net)
    twin.program(realised)
    np.testing.assert_allclose(got, twin.settle(x, nudge).voltages, atol=1e-6)


def test_the_probe_is_configured_to_source_0_a_with_its_output_relay_closed_when_off(bench):
    """2600B RM §7 smuX.source.offmode = smuX.OUTPUT_NORMAL with smuX.source.offfunc =
    smuX.OUTPUT_DCAMPS and smuX.source.offlimitv = compliance_voltage on the probe channel, read back
    into the applied settings with the bound that allowed it (every probed node below 95 % of the
    limit, whatever the bench is asked); the other channels keep the normal 0 V off state (they
    never switch off mid-run)."""
    backend, _ = bench
    settings = backend.applied_settings()
    probe = backend.config.probe_channel
    limit = backend.limits["compliance_voltage"]
    assert (settings[probe]["off_mode"], settings[probe]["off_function"]) == (0, 0)
    assert settings[probe]["off_voltage_limit"] == limit
    chosen = settings["[probe]"]
    assert chosen["off_state"] == "0 A, output relay closed" and chosen["off_voltage_limit"] == limit
    assert 0.5 < chosen["worst_case_volts"] < 0.95 * limit
    assert backend.emulator.state.smus[probe].off_limit is None  # off, it draws nothing from a node
    others = [k for k in backend.config.sources.values() if k != probe]
    assert others and all(settings[k]["off_mode"] == 0 and settings[k]["off_function"] == 1 for k in others)


def test_the_run_log_keeps_the_benchs_ratings_record_and_a_simulators_log_has_none(tmp_path, hil):
    path = _bench_file(tmp_path, noise="none")
    out, dry = tmp_path / "bench.h5", tmp_path / "dry.h5"
    result = hil("train", str(path), "--epochs", "1", "--out", str(out))
    assert result.returncode == 0, result.stderr
    result = hil("train", str(path), "--epochs", "1", "--backend", "numeric", "--out", str(dry))
    assert result.returncode == 0, result.stderr
    spec = config.load(path).bench.tables["instruments"]["pots"]
    rating = ratings.PARTS[spec.get("part", "ad5206")].continuous_current
    with h5py.File(out, "r") as f:
        record = dict(f["bench/record"].attrs)
        assert f.attrs["status"] == "completed"
    assert set(record) == {"settles", "largest_gap_volts", "largest_terminal_volts", "largest_wiper_current"}
    assert record["settles"] >= 4 * 3  # samples × (free, +β, −β)
    assert 0.1 < record["largest_terminal_volts"] <= max(abs(v) for v in spec["supply"])
    assert 0.0 < record["largest_wiper_current"] <= rating
    assert record["largest_gap_volts"] < 1e-6  # noise-free: the twin is the emulated board
    with h5py.File(dry, "r") as f:
        assert "bench" not in f


def test_a_resumed_runs_record_adds_its_settles_and_keeps_the_larger_values(tmp_path):
    with h5py.File(tmp_path / "log.h5", "w") as f:
        group = f.require_group("bench").require_group("record")
        runlog._merge_record(
            group, {"settles": 10.0, "largest_wiper_current": 2e-3, "largest_gap_volts": 1e-4}
        )
        runlog._merge_record(
            group, {"settles": 4.0, "largest_wiper_current": 1e-3, "largest_gap_volts": 3e-4}
        )
        assert dict(group.attrs) == {
            "settles": 14.0,
            "largest_wiper_current": 2e-3,
            "largest_gap_volts": 3e-4,
        }
