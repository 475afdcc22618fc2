"""Optimisers, schedules, clipping, L1 and stochastic pruning: each piece against its closed form,
the trainer's wiring of them against hand-computed trajectories, pruned edges as open switches,
and a resumed training that continues bit for bit with optimiser state and a pruning mask."""

from __future__ import annotations

import itertools
import signal
import subprocess
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from conftest import start_hil

import hil
from hil import builders, config, datasets, eqprop, optimisers, runlog, train
from hil.interface import State
from hil.optimisers import SGD, Adam, Clip, Pruning, Schedule
from sim.twin import TwinBackend

ROOT = Path(__file__).resolve().parents[1]


# -------------------------------------------------------------------------------- the pieces alone
def test_momentum_and_nesterov_follow_their_recurrences():
    rng = np.random.default_rng(3)
    grads = rng.normal(size=(6, 5))
    for nesterov in (False, True):
        sgd = SGD(momentum=0.8, nesterov=nesterov)
        state = sgd.start(5)
        velocity = np.zeros(5)
        for g in grads:
            direction, state = sgd.step(g, state)
            velocity = 0.8 * velocity + g
            np.testing.assert_allclose(direction, g + 0.8 * velocity if nesterov else velocity, rtol=1e-14)
    plain = SGD()
    g = grads[0]
    direction, state = plain.step(g, plain.start(5))
    assert direction is g and state == {}  # the default leaves the estimate untouched, bit for bit


def test_adam_on_a_constant_gradient_steps_g_over_its_magnitude_every_time():
    # With a constant gradient the bias-corrected moments are exactly g and g²: any error in the
    # correction (a wrong power of β, the step count off by one) moves the direction.
    adam = Adam(beta1=0.9, beta2=0.99, epsilon=1e-3)
    g = np.array([2.0, -0.5, 1e-3, 0.0])
    state = adam.start(4)
    for _ in range(5):
        direction, state = adam.step(g, state)
        np.testing.assert_allclose(direction, g / (np.abs(g) + 1e-3), rtol=1e-12)
    assert state["steps"][0] == 5
    forgotten = adam.forget(state, np.array([True, False, False, False]))
    assert forgotten["m"][0] == forgotten["v"][0] == 0 and forgotten["m"][1] == state["m"][1]


def test_schedules_give_their_factors():
    assert [Schedule().factor(e, 10) for e in (0, 9)] == [1.0, 1.0]
    step = Schedule("step", decay=0.5, step_epochs=3)
    assert [step.factor(e, 10) for e in range(7)] == [1, 1, 1, 0.5, 0.5, 0.5, 0.25]
    assert Schedule("exponential", decay=0.9).factor(4, 10) == pytest.approx(0.9**4)
    cosine = Schedule("cosine", floor=0.1)
    assert cosine.factor(0, 10) == 1.0
    assert cosine.factor(5, 10) == pytest.approx(0.55)
    assert cosine.factor(10, 10) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="unknown schedule 'linear'"):
        Schedule("linear")


def test_clipping_by_value_then_by_norm():
    g = np.array([3.0, -4.0, 0.5])
    np.testing.assert_array_equal(Clip(value=1.0).apply(g), [1.0, -1.0, 0.5])
    clipped = Clip(norm=2.5).apply(g)
    assert np.linalg.norm(clipped) == pytest.approx(2.5)
    np.testing.assert_allclose(clipped / np.linalg.norm(clipped), g / np.linalg.norm(g))
    small = np.array([0.1, 0.2])
    assert Clip(norm=2.5).apply(small) is small and Clip().apply(g) is g


def test_l1_moves_every_magnitude_toward_zero_down_to_g_min_and_keeps_signs():
    g = np.array([0.05, -0.05, 2e-4, -2e-4, 0.1])
    signed = np.array([True, True, False, True, False])
    np.testing.assert_allclose(
        optimisers.shrink(g, 1e-3, signed, 1e-4, 0.1), [0.049, -0.049, 1e-4, -1e-4, 0.099], rtol=1e-12
    )


def _prune_frequencies(pruning, magnitudes, groups, draws=20_000):
    rng = np.random.default_rng(0)
    none = np.zeros(len(magnitudes), dtype=bool)
    return np.mean([pruning.select(magnitudes, groups, none, rng) for _ in range(draws)], axis=0)


def test_pruning_opens_weak_edges_with_the_seeds_boltzmann_probability():
    # Node 0 has four edges in: three weak (candidates) and a strong one; node 1 two weak, one strong.
    magnitudes = np.array([1e-3, 2e-3, 3e-3, 0.05, 1e-3, 1e-3, 0.05])
    groups = np.array([0, 0, 0, 0, 1, 1, 1])
    hot = _prune_frequencies(Pruning(below=0.01, temperature=1.0), magnitudes, groups)
    # At a high temperature every live edge into a node is equally likely: p = 1/fan-in, opened
    # when p beats a uniform draw, so with probability p.
    np.testing.assert_allclose(hot, [1 / 4, 1 / 4, 1 / 4, 0, 1 / 3, 1 / 3, 0], atol=0.015)
    cold = Pruning(below=0.01, temperature=1e-3)
    weights = np.exp(-magnitudes[:4] / 1e-3)
    expected = weights / weights.sum()
    expected[3] = 0.0  # at or above `below`: never
    np.testing.assert_allclose(_prune_frequencies(cold, magnitudes, groups)[:4], expected, atol=0.015)


def test_pruning_never_opens_a_nodes_last_live_edge_nor_one_already_open():
    pruning = Pruning(below=1.0, temperature=1e3)
    magnitudes = np.array([1e-3, 2e-3, 5e-3])
    groups = np.zeros(3, dtype=int)
    rng = np.random.default_rng(1)
    mask = np.zeros(3, dtype=bool)
    for _ in range(200):
        after = pruning.select(magnitudes, groups, mask, rng)
        assert np.all(after >= mask) and after.sum() <= 2  # monotone; one edge always stays
        mask = after
    assert mask.sum() == 2

    class AllDrawn:  # every candidate's probability beats its draw
        def random(self, n):
            return np.zeros(n)

    once = pruning.select(magnitudes, groups, np.zeros(3, dtype=bool), AllDrawn())
    assert once.tolist() == [True, True, False]  # the strongest of the node's edges stays


def test_refusals_are_one_line_and_name_the_fix():
    for bad, message in (
        (lambda: SGD(momentum=1.0), "momentum = 1.0"),
        (lambda: SGD(nesterov=True), "nesterov = true needs a momentum"),
        (lambda: Adam(beta2=1.0), "adam beta2 = 1.0"),
        (lambda: Clip(norm=-1.0), "clip norm = -1.0"),
        (lambda: Pruning(below=1e-3, temperature=1.0, from_epoch=5, until_epoch=2), "prune_until = 2"),
        (lambda: train.Hyper(pruning=Pruning(below=1e-4, temperature=1.0)), "not above g_min"),
        (lambda: train.Hyper(l1=-1e-3), "l1 = -0.001"),
    ):
        with pytest.raises(ValueError, match=message) as info:
            bad()
        assert "\n" not in str(info.value)


# -------------------------------------------------------------------------------- the trainer's wiring
NET = builders.layered(2, [2], 1)
DATA = datasets.xor()
G0 = np.random.default_rng(2).uniform(0.02, 0.08, len(NET.conductances))
RAW = np.random.default_rng(5).normal(size=len(NET.conductances))  # the estimate every sample gives
HYPER = train.Hyper(learning_rate=1e-5, epochs=3)


@pytest.fixture
def fixed_estimate(monkeypatch):
    """Every measurement estimates `RAW` (compensated per layer): the trainer's arithmetic can then
    be followed by hand. Free phases and accuracy still come from the twin."""

    def measure(backend, conductances, inputs, targets, *args, **kwargs):
        y = eqprop.outputs(backend.network, backend.settle(inputs))
        return eqprop.Measurement(State(np.zeros(1), None), y, eqprop.loss(targets, y), RAW.copy())

    monkeypatch.setattr(eqprop, "measure", measure)
    return eqprop.compensated(NET, RAW)


def _trained(hyper):
    return np.array([r.conductances for r in train.train(TwinBackend(NET), DATA, G0, hyper)])


def test_momentum_adam_schedule_clip_and_l1_reach_the_conductances_by_hand(fixed_estimate):
    grad, eta, n = fixed_estimate, HYPER.learning_rate, len(DATA)
    steps = np.arange(1, 3 * n + 1)

    # Heavy-ball momentum on a constant gradient: after k updates v = (1 − μ^k)/(1 − μ)·∇.
    mu = 0.9
    moved = np.cumsum((1 - mu**steps) / (1 - mu))
    expected = G0 - eta / 10 * np.outer(moved, grad)
    momentum = replace(HYPER, learning_rate=eta / 10, optimiser=SGD(mu))
    np.testing.assert_allclose(_trained(momentum), expected[n - 1 :: n], rtol=1e-10)

    # Adam on a constant gradient: every update moves η·∇/(|∇| + ε).
    adam = replace(HYPER, learning_rate=1e-4, optimiser=Adam(epsilon=1e-6))
    expected = G0 - 1e-4 * np.outer(steps, grad / (np.abs(grad) + 1e-6))
    np.testing.assert_allclose(_trained(adam), expected[n - 1 :: n], rtol=1e-10)

    # A step schedule halves η after each epoch; L1 follows the same factor.
    factors = np.repeat([1.0, 0.5, 0.25], n)
    scheduled = replace(HYPER, schedule=Schedule("step", 0.5, 1), l1=1e-5)
    expected = G0 - np.outer(np.cumsum(factors), eta * grad + 1e-5)
    np.testing.assert_allclose(_trained(scheduled), expected[n - 1 :: n], rtol=1e-10)

    # Norm clipping before the optimiser: every step has length η·c.
    clipped = replace(HYPER, clip=Clip(norm=0.5))
    expected = G0 - eta * np.outer(steps, grad * 0.5 / np.linalg.norm(grad))
    np.testing.assert_allclose(_trained(clipped), expected[n - 1 :: n], rtol=1e-10)


class _Programs:
    """A backend that records every conductance vector it is asked to program."""

    def __init__(self, inner):
        self.inner, self.network = inner, inner.network
        self.asked: list[np.ndarray] = []

    def program(self, g):
        self.asked.append(np.array(g))
        return self.inner.program(g)

    def __getattr__(self, name):
        return getattr(self.inner, name)


PRUNED_XOR = """
[circuit]
builder = "layered"
inputs = 2
hidden = [8]
outputs = 1

[conductances]
seed = 1

[dataset]
name = "xor"
input_low = -5.0
input_high = 5.0

[training]
learning_rate = 2e-4
epochs = 60
shuffle = true
batch_size = 3
l1 = 1e-4
prune_below = 5e-3
prune_temperature = 1e-3
prune_from = 10
momentum = 0.5

[backend]
name = "numeric"
"""


def _pruned_xor(tmp_path: Path, **training: object) -> config.Experiment:
    path = tmp_path / "pruned-xor.toml"
    path.write_text(PRUNED_XOR)
    return config.load(path, {"training": dict(training)})


def test_pruned_edges_are_programmed_as_exactly_zero_and_never_come_back(tmp_path):
    e = _pruned_xor(tmp_path)
    backend = _Programs(TwinBackend(e.network()))
    records = train.train(backend, e.dataset(), e.start_conductances(), e.hyper())
    counts = [r.pruned for r in records]
    assert counts[8] == 0 and counts[-1] > 0  # none before prune_from, some after
    assert counts == sorted(counts)  # a pruned edge stays pruned
    for before, after in itertools.pairwise(records):
        assert np.all(after.mask >= before.mask)
    final = records[-1].mask
    assert np.all(records[-1].conductances[final] == 0) and np.all(records[-1].conductances[~final] > 0)
    # From the epoch an edge opened, every vector the backend was asked for holds exactly 0 there.
    opened_at = next(k for k, g in enumerate(backend.asked) if np.any(g == 0))
    first = backend.asked[opened_at] == 0
    assert all(np.all(g[first] == 0) for g in backend.asked[opened_at:])
    # The same config, seed and data give the same mask: the draws are seeded.
    again = train.train(TwinBackend(e.network()), e.dataset(), e.start_conductances(), e.hyper())
    np.testing.assert_array_equal(again[-1].mask, final)


def test_with_regrow_an_open_edge_closes_when_its_magnitude_climbs_back(tmp_path, monkeypatch):
    e = _pruned_xor(tmp_path, l1=0.0, momentum=0.0, prune_from=1, prune_until=1, prune_regrow=True)
    net = e.network()
    g0 = np.full(len(net.conductances), 1e-3)  # every edge a candidate after epoch 1
    grows = np.full(len(net.conductances), -1.0)  # every estimate says: grow

    def measure(backend, conductances, inputs, targets, *args, **kwargs):
        y = eqprop.outputs(backend.network, backend.settle(inputs))
        return eqprop.Measurement(
            State(np.zeros(1), None), y, eqprop.loss(targets, y), grows / net.compensation()
        )

    monkeypatch.setattr(eqprop, "measure", measure)
    hyper = replace(e.hyper(), batch_size=1, learning_rate=2.5e-4, epochs=6)
    records = train.train(TwinBackend(net), e.dataset(), g0, hyper)
    # |g| grows 1e-3 S an epoch from 1e-3 S: 2e-3 S, below 5e-3 S, when some open after epoch 1,
    # and the open ones grow alike (their estimate is measured at the open switch) ...
    assert records[0].pruned > 0
    assert [r.pruned for r in records[:3]] == [records[0].pruned] * 3
    # ... until they reach 5e-3 S and close: none is open at the end, every edge conducts.
    assert records[-1].pruned == 0 and np.all(records[-1].conductances > 5e-3)


# -------------------------------------------------------------------------------- resuming
def test_a_checkpoint_written_mid_epoch_resumes_bit_identically(tmp_path):
    e = _pruned_xor(
        tmp_path,
        optimiser="adam",
        momentum=0.0,
        learning_rate=1e-3,
        lr_schedule="cosine",
        clip_norm=50.0,
        epochs=30,
        prune_temperature=1.0,  # every weak edge into a node as likely: the draws decide
    )
    hyper, data, g0 = e.hyper(), e.dataset(), e.start_conductances()
    whole = train.train(TwinBackend(e.network()), data, g0, hyper)
    assert whole[-1].pruned > 0

    path = tmp_path / "cut.h5"
    backend = TwinBackend(e.network())
    log = runlog.RunLog.create(
        path, e.to_toml(), backend.identity(), backend.network, hyper.g_min, hyper.g_max, g0, len(data)
    )

    class Killed(Exception):
        pass

    def checkpoint(progress):
        log.checkpoint(progress, backend.solver_state())
        if progress.epoch == 17 and progress.position > 0:
            raise Killed  # the process dies right after this commit

    with pytest.raises(Killed):
        train.train(
            backend,
            data,
            g0,
            hyper,
            on_epoch=log.epoch,
            on_checkpoint=checkpoint,
            checkpoint_due=lambda: True,
        )
    log.close("interrupted")

    log, checkpoint_read = runlog.RunLog.resume(path)
    p = checkpoint_read.progress
    assert p.epoch == 17 and 0 < p.position < len(data)
    assert set(p.optimiser_state) == {"m", "v", "steps"} and p.mask.any()
    assert np.all(p.conductances[p.mask] == 0)  # what accumulates is what the backend is asked for
    resumed_backend = TwinBackend(e.network())
    resumed_backend.restore_solver_state(checkpoint_read.solver_state)
    rest = train.train(resumed_backend, data, g0, hyper, on_epoch=log.epoch, start=p)
    log.close()
    for a, b in zip(whole[17:], rest, strict=True):
        np.testing.assert_array_equal(a.conductances, b.conductances)
        np.testing.assert_array_equal(a.mask, b.mask)
        assert a.loss == b.loss
    run = hil.read_run(path)
    np.testing.assert_array_equal(run.pruned, [r.pruned for r in whole])
    np.testing.assert_array_equal(run.mask, whole[-1].mask)


def _train_cli(*args: str, cwd: Path) -> subprocess.Popen:
    return start_hil("train", *args, cwd=cwd)


def test_hil_train_killed_and_resumed_with_adam_and_pruning_matches_a_whole_run(tmp_path):
    text = PRUNED_XOR.replace("momentum = 0.5", 'optimiser = "adam"\nlr_schedule = "cosine"').replace(
        "learning_rate = 2e-4", "learning_rate = 1e-3"
    )
    path = tmp_path / "pruned.toml"
    path.write_text(text)
    whole = _train_cli(str(path), "--out", "whole.h5", cwd=tmp_path)
    assert whole.wait(timeout=300) == 0, whole.stderr.read()
    cut = tmp_path / "cut.h5"
    proc = _train_cli(str(path), "--out", str(cut), cwd=tmp_path)
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            if hil.read_run(cut).epochs >= 23:
                break
        except (OSError, KeyError):
            pass
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    resumed = _train_cli("--resume", str(cut), cwd=tmp_path)
    _, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    a, b = hil.read_run(tmp_path / "whole.h5"), hil.read_run(cut)
    assert a.epochs == b.epochs == 60 and a.mask.sum() > 0
    for name in ("conductances", "loss", "pruned", "mask"):
        np.testing.assert_array_equal(getattr(b, name), getattr(a, name), err_msg=name)


# -------------------------------------------------------------------------------- configs and benches
@pytest.mark.parametrize(
    "training, message",
    [
        ('optimiser = "adam"\nmomentum = 0.9', 'momentum applies only to optimiser = "sgd"'),
        ("adam_beta1 = 0.8", 'adam_beta1 applies only to optimiser = "adam"'),
        ("nesterov = true", "nesterov = true needs momentum > 0"),
        ('lr_schedule = "cosine"\nlr_decay = 0.1', 'lr_decay applies only to lr_schedule = "step" or'),
        ("lr_floor = 0.1", 'lr_floor applies only to lr_schedule = "cosine"'),
        ("prune_temperature = 0.01", "prune_temperature applies only to pruning: set prune_below"),
        ("prune_below = 1e-4", "prune_below = 0.0001 S is not above g_min = 0.0001 S"),
        ("prune_below = 1e-3\nprune_from = 5\nprune_until = 4", "prune_until = 4 is before prune_from = 5"),
        ('optimiser = "rmsprop"', "optimiser = 'rmsprop' is invalid: it must be one of sgd, adam"),
    ],
)
def test_configs_that_would_do_nothing_or_nothing_sensible_are_refused(tmp_path, training, message):
    path = tmp_path / "x.toml"
    path.write_text(f'[circuit]\nbuilder = "xor"\n[training]\n{training}\n')
    with pytest.raises(config.ConfigError, match=message) as info:
        config.load(path)
    assert "\n" not in str(info.value)


def test_a_config_builds_the_pieces_it_names(tmp_path):
    e = _pruned_xor(
        tmp_path, momentum=0.9, nesterov=True, lr_schedule="step", lr_step_epochs=4, clip_value=2.0
    )
    h = e.hyper()
    assert h.optimiser == SGD(0.9, True) and h.schedule == Schedule("step", 0.5, 4, 0.0)
    assert h.clip == Clip(0.0, 2.0) and h.l1 == 1e-4
    assert h.pruning == Pruning(5e-3, 1e-3, 10, 0, False)
    shipped = config.load(ROOT / "configs/xor.toml").hyper()  # plain SGD and nothing else, as before
    assert (shipped.optimiser, shipped.schedule, shipped.clip, shipped.l1, shipped.pruning) == (
        SGD(),
        Schedule(),
        Clip(),
        0.0,
        None,
    )


def test_a_bench_refuses_to_open_a_conductance_before_touching_a_pot(configs):
    from drivers.bench import BenchSafetyError

    e = config.load(configs / "bench-virtual.toml")
    backend = hil.open_backend(e)
    try:
        g = e.start_conductances()
        backend.program(g)
        before = backend.hw.traffic()
        g[3] = 0.0
        with pytest.raises(BenchSafetyError, match=r"conductance R4 asked to open \(0 S, pruned\)") as info:
            backend.program(g)
        assert "prune_below = 0" in str(info.value) and "\n" not in str(info.value)
        assert backend.hw.traffic().writes == before.writes  # refused before any pot was written
    finally:
        backend.close()
