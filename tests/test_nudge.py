"""Nudging that survives noise: the constant-current nudge (`[training] nudge_current`), its
estimate against finite differences sample by sample, and its config rules."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

import hil
from hil import eqprop
from hil.config import ConfigError
from hil.interface import State
from hil.studies.gradcheck import layer_agreement
from hil.train import Hyper
from sim.twin import TwinBackend


class Recording:
    """A backend that keeps every nudge matrix it is asked to settle with."""

    def __init__(self, inner: TwinBackend) -> None:
        self.inner, self.network = inner, inner.network
        self.nudges: list[np.ndarray] = []

    def program(self, g: np.ndarray) -> np.ndarray:
        return self.inner.program(g)

    def settle(self, inputs: np.ndarray, nudge_currents: dict[str, float] | None = None) -> State:
        if nudge_currents:
            self.nudges.append(np.array([[nudge_currents[n] for n in self.network.nudge_nodes]]))
        return self.inner.settle(inputs, nudge_currents)

    def settle_batch(self, inputs: np.ndarray, nudges: np.ndarray | None = None) -> State:
        if nudges is not None:
            self.nudges.append(np.asarray(nudges))
        return self.inner.settle_batch(inputs, nudges)


def _xor(configs, **training):
    e = hil.load(configs / "xor.toml", {"backend": {"name": "numeric"}, "training": training})
    return e, TwinBackend(e.network())


def _per_layer_agreement(network, estimate, reference):
    return [layer_agreement(estimate[network.layers == k], reference[network.layers == k]) for k in (1, 2)]


# ---------------------------------------------------------------------------------------- the estimate
def test_a_batch_with_a_constant_current_nudge_estimates_each_samples_gradient(configs) -> None:
    """Each sample of a batch has its own β = I0/‖t − y‖ (here spread over a factor > 2): every
    sample's centered VDM, scaled by its own β, matches the finite-difference gradient of that
    sample's loss. A scale shared by the batch would miss every sample but those of its β."""
    e, twin = _xor(configs)
    backend = Recording(twin)
    data, g = e.dataset(), e.initial_conductances(8)
    current = 2e-6
    backend.program(g)
    b = eqprop.measure_batch(
        backend, g, data.inputs, data.targets, "vdm-centered", 1.0, nudge_current=current
    )
    errors = np.abs(data.targets - b.outputs)[:, 0]
    assert errors.max() / errors.min() > 2  # the samples' β differ
    # The nudges applied: +I0 for each sample (the ±β settle of twice the batch), whatever its error.
    plus, minus = np.split(backend.nudges[-1], 2)
    np.testing.assert_allclose(np.abs(plus[:, 0]), current, rtol=1e-12)
    np.testing.assert_allclose(minus, -plus, rtol=1e-12)
    for k in range(len(data)):
        fd = eqprop.finite_difference(twin, g, data.inputs[k], data.targets[k])
        for rel, cos in _per_layer_agreement(e.network(), eqprop.compensated(e.network(), b.raw[k]), fd):
            assert rel <= 1e-3 and cos >= 1 - 1e-6, (k, rel, cos)


def test_one_sample_with_nudge_current_is_the_fixed_beta_that_gives_that_current(configs) -> None:
    e, twin = _xor(configs)
    x, t = e.dataset().inputs[1], e.dataset().targets[1]
    g = e.initial_conductances(8)
    twin.program(g)
    y = eqprop.outputs(twin.network, twin.settle(x))
    current = 3e-6
    by_current = eqprop.measure(twin, g, x, t, "vdm-centered", 1.0, nudge_current=current)
    by_beta = eqprop.measure(twin, g, x, t, "vdm-centered", current / float(np.abs(t - y)[0]))
    np.testing.assert_allclose(by_current.raw, by_beta.raw, rtol=1e-9)
    fd = eqprop.finite_difference(twin, g, x, t)
    for rel, cos in _per_layer_agreement(e.network(), eqprop.compensated(e.network(), by_current.raw), fd):
        assert rel <= 1e-3 and cos >= 1 - 1e-6


def test_a_sample_at_its_target_gets_no_nudge_and_a_finite_estimate(configs) -> None:
    e, twin = _xor(configs)
    x = e.dataset().inputs[0]
    g = e.initial_conductances(8)
    twin.program(g)
    y = eqprop.outputs(twin.network, twin.settle(x))
    m = eqprop.measure(twin, g, x, y.copy(), "vdm-centered", 1.0, nudge_current=1e-4)
    assert np.all(np.isfinite(m.raw)) and np.max(np.abs(m.raw)) == 0.0


def test_the_positive_nudge_and_pcm_follow_the_per_sample_beta_too(configs) -> None:
    """vdm divides by its own 2β, pcm by 2β, sample by sample: with the same per-sample β as a
    fixed-β call for that sample, the same numbers."""
    e, twin = _xor(configs)
    data, g = e.dataset(), e.initial_conductances(8)
    twin.program(g)
    current = 1e-6
    for method in ("vdm", "pcm"):
        b = eqprop.measure_batch(twin, g, data.inputs, data.targets, method, 1.0, nudge_current=current)
        for k in (0, 3):
            beta = current / float(np.abs(data.targets[k] - b.outputs[k])[0])
            one = eqprop.measure(twin, g, data.inputs[k], data.targets[k], method, beta)
            np.testing.assert_allclose(b.raw[k], one.raw, rtol=1e-4)  # solver tolerance, not β


def test_training_with_a_nudge_current_on_ngspice_takes_the_same_steps_as_on_the_twin(configs) -> None:
    """Every backend takes per-sample nudges: ngspice (one settle per sample) and the twin (a batch
    solved together) agree on a batched epoch."""
    from hil.train import train

    runs = []
    for name in ("spice", "numeric"):
        e = hil.load(
            configs / "xor.toml",
            {"backend": {"name": name}, "training": {"epochs": 2, "nudge_current": 1e-5, "batch_size": 2}},
        )
        b = hil.open_backend(e)
        try:
            runs.append(train(b, e.dataset(), e.start_conductances(), e.hyper())[-1].conductances)
        finally:
            b.close()
    np.testing.assert_allclose(runs[0], runs[1], rtol=1e-6)


# ---------------------------------------------------------------------------------------- config
def test_beta_and_nudge_current_are_exclusive(configs) -> None:
    with pytest.raises(ConfigError, match=r"beta = 1e-05 and nudge_current = 0\.0001 both set the nudge"):
        hil.load(configs / "xor.toml", {"training": {"beta": 1e-5, "nudge_current": 1e-4}})
    e = hil.load(
        configs / "xor.toml", {"training": {"nudge_current": 1e-4}}
    )  # xor.toml's beta is the default
    assert e.hyper().nudge_current == 1e-4
    # A run log's resolved config carries beta at its default next to nudge_current: it loads again.
    again = hil.config.loads(e.to_toml(), e.path)
    assert again.hyper() == e.hyper()


@pytest.mark.parametrize("value", [-1e-6, 0.2, 1e-16, True, "1e-4"])
def test_a_nudge_current_outside_its_window_is_refused(configs, value) -> None:
    with pytest.raises(ConfigError, match=r"\[training\] nudge_current = .* is invalid: it must be 0"):
        hil.load(configs / "xor.toml", {"training": {"nudge_current": value}})


def test_hyper_refuses_a_negative_or_infinite_nudge_current() -> None:
    for value in (-1e-6, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="nudge_current"):
            replace(Hyper(), nudge_current=value)
