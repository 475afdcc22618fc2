"""Estimator against finite differences, per conductance and per layer."""

from __future__ import annotations

from typing import Any

import numpy as np

from hil import eqprop
from hil.interface import Backend


def layer_agreement(estimate: np.ndarray, reference: np.ndarray) -> tuple[float, float]:
    """(relative error ‖e − r‖/‖r‖, cosine) of an estimate against a reference."""
    norm_r = float(np.linalg.norm(reference))
    norm_e = float(np.linalg.norm(estimate))
    rel = float(np.linalg.norm(estimate - reference)) / norm_r if norm_r > 0 else float("inf")
    cos = float(estimate @ reference) / (norm_e * norm_r) if norm_e > 0 and norm_r > 0 else 0.0
    return rel, cos


def gradcheck(
    backend: Backend,
    conductances: np.ndarray,
    inputs: np.ndarray,
    targets: np.ndarray,
    method: str,
    beta: float,
    pcm_perturbation: float = 0.01,
    relative_step: float = 1e-5,
) -> dict[str, Any]:
    """The report `hil gradcheck --json` prints (without the config name and sample index)."""
    net = backend.network
    g = backend.program(conductances)
    m = eqprop.measure(backend, g, inputs, targets, method, beta, pcm_perturbation)
    estimate = eqprop.compensated(net, m.raw)
    fd = eqprop.finite_difference(backend, g, inputs, targets, relative_step)
    layers = net.layers
    report_layers = []
    for layer in sorted(set(layers.tolist())):
        sel = layers == layer
        rel, cos = layer_agreement(estimate[sel], fd[sel])
        report_layers.append({"layer": int(layer), "relative_error": rel, "cosine": cos})
    return {
        "beta": beta,
        "method": method,
        "targets": [float(t) for t in targets],
        "outputs": [[o.plus, o.minus] for o in net.outputs],
        "loss": m.loss,
        "edges": [
            {
                "name": c.name,
                "layer": c.layer,
                "raw": float(r),
                "estimate": float(e),
                "finite_difference": float(d),
            }
            for c, r, e, d in zip(net.conductances, m.raw, estimate, fd, strict=True)
        ],
        "layers": report_layers,
    }
