"""Every shipped experiment config, as a user gets it: it loads, and on the twin its centered-VDM
estimate is the gradient (per-layer relative error ≤ 1e-3 against finite differences of the same
backend) at the config's own β and starting conductances."""

import tomllib
from pathlib import Path

import numpy as np
import pytest
from conftest import stand_in_idx_files

import hil
from hil import eqprop
from hil.studies import gradcheck

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
# The seed's circuit is wrong on purpose (its flaws are what those configs reproduce), and
# mnist.toml needs the user's MNIST files (checked below on stand-in files, at sampled edges).
LEFT_OUT = {"mnist.toml"}
SHIPPED = sorted(
    p.name
    for p in CONFIGS.glob("*.toml")
    if "bench" not in tomllib.loads(p.read_text())
    and p.name not in LEFT_OUT
    and tomllib.loads(p.read_text()).get("circuit", {}).get("builder") != "seed-xor"
)


def test_every_shipped_experiment_is_covered():
    assert {"xor.toml", "gates.toml", "iris.toml", "digits.toml", "deep-skip.toml", "complete.toml"} <= set(
        SHIPPED
    )


def centered_vdm_check(
    experiment: hil.Experiment, edges_per_layer: int | None = None
) -> tuple[hil.Network, gradcheck.GradientCheck]:
    """The config's network and its centered-VDM gradient check on sample 0, at the config's β (or
    the β its constant-current nudge gives sample 0 at the start) and starting conductances."""
    backend = hil.open_backend(experiment)
    data = experiment.dataset()
    hyper = experiment.hyper()
    try:
        beta = hyper.beta
        if hyper.nudge_current > 0:
            backend.program(experiment.start_conductances())
            y = eqprop.outputs(backend.network, backend.settle(data.inputs[0]))
            beta = float(backend.network.constant_current_beta(data.targets[0], y, hyper.nudge_current))
        result = gradcheck.check(
            backend,
            experiment.start_conductances(),
            data.inputs[0],
            data.targets[0],
            ["vdm-centered"],
            [beta],
            edges_per_layer=edges_per_layer,
        )
    finally:
        backend.close()
    return backend.network, result


@pytest.mark.parametrize("name", SHIPPED)
def test_centered_vdm_is_the_gradient_on_every_shipped_config(name):
    # Noise-free: a config trained through an SMU error model (xor-noisy.toml) is checked exactly.
    experiment = hil.load(CONFIGS / name, {"backend": {"name": "numeric", "noise": "none"}})
    _, result = centered_vdm_check(experiment)
    worst = result.relative_error["vdm-centered"].max()
    assert worst <= 1e-3, (name, result.relative_error)
    assert result.cosine["vdm-centered"].min() >= 1 - 1e-6, name


def test_centered_vdm_is_the_gradient_on_the_mnist_config_at_sampled_edges(tmp_path):
    """configs/mnist.toml as shipped (784-200-10, 322,040 conductances) on stand-in images: two
    settles per edge are too many to difference them all, so 20 edges of each layer, drawn at
    random (`hil gradcheck --edges 20`)."""
    experiment = hil.load(
        CONFIGS / "mnist.toml",
        {"backend": {"name": "numeric", "noise": "none"}, "dataset": stand_in_idx_files(tmp_path)},
    )
    network, result = centered_vdm_check(experiment, edges_per_layer=20)
    assert len(network.conductances) == 322_040
    assert int(np.isfinite(result.finite_difference).sum()) == 40
    assert result.relative_error["vdm-centered"].max() <= 1e-3, result.relative_error
    assert result.cosine["vdm-centered"].min() >= 1 - 1e-6
