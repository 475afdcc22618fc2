"""Every shipped experiment config, as a user gets it: it loads, and on the twin its centered-VDM
estimate is the gradient (per-layer relative error ≤ 1e-3 against finite differences of the same
backend) at the config's own β and starting conductances."""

import tomllib
from pathlib import Path

import pytest

import hil
from hil import eqprop
from hil.studies import gradcheck

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
# The seed's circuit is wrong on purpose (its flaws are what those configs reproduce), and
# mnist.toml needs the user's MNIST files.
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


@pytest.mark.parametrize("name", SHIPPED)
def test_centered_vdm_is_the_gradient_on_every_shipped_config(name):
    # Noise-free: a config trained through an SMU error model (xor-noisy.toml) is checked exactly.
    experiment = hil.load(CONFIGS / name, {"backend": {"name": "numeric", "noise": "none"}})
    backend = hil.open_backend(experiment)
    data = experiment.dataset()
    hyper = experiment.hyper()
    try:
        beta = hyper.beta
        if hyper.nudge_current > 0:  # the β its constant-current nudge gives sample 0 at the start
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
        )
    finally:
        backend.close()
    worst = result.relative_error["vdm-centered"].max()
    assert worst <= 1e-3, (name, result.relative_error)
    assert result.cosine["vdm-centered"].min() >= 1 - 1e-6, name
