"""Estimators against finite differences: one β (`hil gradcheck`) or many (`--betas`).

Shows what the nudge strength does: positive-nudge VDM has an O(β) bias, centered VDM O(β²),
tiny β hits the solver's numerical floor, and biased estimators (PCM, the seed's amplifier
sign) stay wrong at every β. Stored as HDF5 (format "eqprop-hil-gradcheck") for `hil report`:
  attrs    the shared header (`hil.runlog.write_header`), sample, loss, methods
  /        beta [B], layer [L], finite_difference [edges] (NaN: not differenced); /network as in
           a run log
  /<method> relative_error [B, L], cosine [B, L], estimate [B, edges]
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from hil import eqprop, runlog
from hil.interface import Backend, Identity
from hil.network import Network

FORMAT = "eqprop-hil-gradcheck"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class GradientCheck:
    """Every method's estimate at every β against one finite-difference gradient."""

    betas: np.ndarray  # [B]
    layers: np.ndarray  # [L], the layer numbers
    edge_names: list[str]
    edge_layers: np.ndarray  # [edges]
    finite_difference: np.ndarray  # [edges], NaN where an edge was not differenced (`edges_per_layer`)
    loss: float
    estimates: dict[str, np.ndarray]  # method -> [B, edges], compensated
    relative_error: dict[str, np.ndarray]  # method -> [B, L]
    cosine: dict[str, np.ndarray]  # method -> [B, L]


def layer_agreement(estimate: np.ndarray, reference: np.ndarray) -> tuple[float, float]:
    """(relative error ‖e − r‖/‖r‖, cosine) of an estimate against a reference."""
    norm_r = float(np.linalg.norm(reference))
    norm_e = float(np.linalg.norm(estimate))
    rel = float(np.linalg.norm(estimate - reference)) / norm_r if norm_r > 0 else float("inf")
    cos = float(estimate @ reference) / (norm_e * norm_r) if norm_e > 0 and norm_r > 0 else 0.0
    return rel, cos


def sample_edges(layers: np.ndarray, per_layer: int | None, seed: int = 0) -> list[int] | None:
    """`per_layer` edges of each layer drawn at random (seeded; all of a smaller layer), in edge
    order; None (every edge) for None."""
    if per_layer is None:
        return None
    if per_layer < 1:
        raise ValueError(f"{per_layer} edges per layer: give at least 1 (or None for every edge)")
    rng = np.random.default_rng(seed)
    picked: list[int] = []
    for level in sorted(set(layers.tolist())):
        members = np.flatnonzero(layers == level)
        picked += rng.choice(members, min(per_layer, len(members)), replace=False).tolist()
    return sorted(picked)


def layer_selections(layers: np.ndarray, fd: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """(layer, mask of its differenced edges) for each layer."""
    return [(int(level), (layers == level) & np.isfinite(fd)) for level in sorted(set(layers.tolist()))]


def check(
    backend: Backend,
    conductances: np.ndarray,
    inputs: np.ndarray,
    targets: np.ndarray,
    methods: list[str],
    betas: list[float],
    pcm_perturbation: float = 0.01,
    relative_step: float = 1e-5,
    edges_per_layer: int | None = None,
) -> GradientCheck:
    """Every method at every β against central differences of the loss: over every edge, or over
    `edges_per_layer` edges of each layer drawn at random (`sample_edges`)."""
    net = backend.network
    g = backend.program(conductances)
    layers = net.layers
    picked = sample_edges(layers, edges_per_layer)
    fd = eqprop.finite_difference(backend, g, inputs, targets, relative_step, picked)
    selections = layer_selections(layers, fd)
    levels = np.array([level for level, _ in selections])
    estimates, rel, cos = {}, {}, {}
    loss = float("nan")
    for method in methods:
        est = np.zeros((len(betas), len(g)))
        r = np.zeros((len(betas), len(levels)))
        c = np.zeros((len(betas), len(levels)))
        for i, beta in enumerate(betas):
            backend.program(g)
            m = eqprop.measure(backend, g, inputs, targets, method, beta, pcm_perturbation)
            loss = m.loss
            est[i] = eqprop.compensated(net, m.raw)
            for j, (_, sel) in enumerate(selections):
                r[i, j], c[i, j] = layer_agreement(est[i, sel], fd[sel])
        estimates[method], rel[method], cos[method] = est, r, c
    return GradientCheck(
        np.asarray(betas, float), levels, net.edge_names, layers, fd, loss, estimates, rel, cos
    )


# ---------------------------------------------------------------------------------------- one β
def edge_report(result: GradientCheck, network: Network, targets: np.ndarray) -> dict[str, Any]:
    """One method at one β, edge by edge: what `hil gradcheck --json` prints."""
    ((method, estimate),) = result.estimates.items()
    estimate = estimate[0]
    raw = estimate / network.compensation()
    return {
        "beta": float(result.betas[0]),
        "method": method,
        "targets": [float(t) for t in targets],
        "outputs": [[o.plus, o.minus] for o in network.outputs],
        "loss": result.loss,
        "edges": [
            {
                "name": c.name,
                "layer": c.layer,
                "raw": float(r),
                "estimate": float(e),
                "finite_difference": float(d),
            }
            for c, r, e, d in zip(network.conductances, raw, estimate, result.finite_difference, strict=True)
            if np.isfinite(d)
        ],
        "layers": [
            {"layer": level, "edges": int(sel.sum()), "relative_error": float(rel), "cosine": float(cos)}
            for (level, sel), rel, cos in zip(
                layer_selections(result.edge_layers, result.finite_difference),
                result.relative_error[method][0],
                result.cosine[method][0],
                strict=True,
            )
        ],
    }


def edge_table(report: dict[str, Any]) -> list[str]:
    """The printed one-β report: a line per edge, then a line per layer."""
    lines = [
        f"{'edge':>14s} {'layer':>5s} {'raw':>13s} {'estimate':>13s} {'finite diff':>13s} {'est/fd':>9s}"
    ]
    for e in report["edges"]:
        ratio = e["estimate"] / e["finite_difference"] if e["finite_difference"] else float("nan")
        lines.append(
            f"{e['name']:>14s} {e['layer']:>5d} {e['raw']: .6e} {e['estimate']: .6e} "
            f"{e['finite_difference']: .6e} {ratio: .4f}"
        )
    for layer in report["layers"]:
        lines.append(
            f"layer {layer['layer']} ({layer['edges']} edges): relative error {layer['relative_error']:.3e}, "
            f"cosine {layer['cosine']:.6f}"
        )
    return lines


# ---------------------------------------------------------------------------------------- many β
def table(result: GradientCheck) -> list[str]:
    """The printed many-β report: one line per method, β and layer."""
    lines = [f"{'method':>12s} {'beta A/V':>10s} {'layer':>5s} {'relative error':>15s} {'cosine':>10s}"]
    for method in result.estimates:
        for i, beta in enumerate(result.betas):
            for j, level in enumerate(result.layers):
                lines.append(
                    f"{method:>12s} {beta:10.3g} {int(level):5d} {result.relative_error[method][i, j]:15.3e} "
                    f"{result.cosine[method][i, j]:10.6f}"
                )
    return lines


def as_json(result: GradientCheck) -> dict[str, Any]:
    return {
        "betas": result.betas.tolist(),
        "loss": result.loss,
        "finite_difference": {
            name: d
            for name, d in zip(result.edge_names, result.finite_difference.tolist(), strict=True)
            if np.isfinite(d)
        },
        "results": [
            {
                "method": method,
                "beta": float(beta),
                "layers": [
                    {
                        "layer": int(level),
                        "relative_error": float(result.relative_error[method][i, j]),
                        "cosine": float(result.cosine[method][i, j]),
                    }
                    for j, level in enumerate(result.layers)
                ],
            }
            for method in result.estimates
            for i, beta in enumerate(result.betas)
        ],
    }


def write(
    path: Path, result: GradientCheck, network: Network, config_toml: str, identity: Identity, sample: int
) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        runlog.write_header(f, FORMAT, FORMAT_VERSION, config_toml, identity)
        runlog.write_network(f, network)
        f.attrs["sample"] = sample
        f.attrs["loss"] = result.loss
        f.attrs["methods"] = json.dumps(list(result.estimates))
        f["beta"] = result.betas
        f["layer"] = result.layers
        f["finite_difference"] = result.finite_difference
        for method in result.estimates:
            g = f.create_group(method)
            g["relative_error"] = result.relative_error[method]
            g["cosine"] = result.cosine[method]
            g["estimate"] = result.estimates[method]


def read(path: Path) -> GradientCheck:
    with h5py.File(path, "r") as f:
        if f.attrs.get("format") != FORMAT:
            raise ValueError(f"{path} is not a gradient-quality file (format {f.attrs.get('format')!r})")
        methods = json.loads(f.attrs["methods"])
        return GradientCheck(
            f["beta"][:],
            f["layer"][:],
            [s.decode() for s in f["network/edge_names"][:]],
            f["network/layers"][:],
            f["finite_difference"][:],
            float(f.attrs["loss"]),
            {m: f[m]["estimate"][:] for m in methods},
            {m: f[m]["relative_error"][:] for m in methods},
            {m: f[m]["cosine"][:] for m in methods},
        )
