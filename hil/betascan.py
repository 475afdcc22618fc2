"""Gradient quality over β: every estimator at every β against one finite-difference gradient.

Shows what the nudge strength does: positive-nudge VDM has an O(β) bias, centered VDM O(β²),
tiny β hits the solver's numerical floor, and biased estimators (PCM, the seed's amplifier
sign) stay wrong at every β. Stored as HDF5 (format "eqprop-hil-gradcheck") for `hil report`:
  attrs    format, format_version, config_toml, backend, created, versions, sample, loss, methods
  /        beta [B], layer [L], edge_names, edge_layers, finite_difference [edges]
  /<method> relative_error [B, L], cosine [B, L], estimate [B, edges]
"""

from __future__ import annotations

import datetime as _dt
import json
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from hil import eqprop, runlog
from hil.gradcheck import layer_agreement
from hil.interface import Backend

FORMAT = "eqprop-hil-gradcheck"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class BetaScan:
    betas: np.ndarray  # [B]
    layers: np.ndarray  # [L]
    edge_names: list[str]
    edge_layers: np.ndarray
    finite_difference: np.ndarray  # [edges]
    loss: float
    estimates: dict[str, np.ndarray]  # method -> [B, edges]
    relative_error: dict[str, np.ndarray]  # method -> [B, L]
    cosine: dict[str, np.ndarray]  # method -> [B, L]


def parse_list(text: str, what: str) -> list[float]:
    """'1e-9,1e-8' -> [1e-9, 1e-8]; a ValueError naming `what` otherwise."""
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError as exc:
        raise ValueError(f"{what} {text!r} is not a comma-separated list of numbers, e.g. 1e-8,1e-7") from exc
    if not values or any(not (np.isfinite(v) and v > 0) for v in values):
        raise ValueError(f"{what} {text!r} must list numbers > 0, e.g. 1e-8,1e-7")
    return values


def scan(
    backend: Backend,
    conductances: np.ndarray,
    inputs: np.ndarray,
    targets: np.ndarray,
    methods: list[str],
    betas: list[float],
    pcm_perturbation: float = 0.01,
    relative_step: float = 1e-5,
) -> BetaScan:
    net = backend.network
    g = backend.program(conductances)
    fd = eqprop.finite_difference(backend, g, inputs, targets, relative_step)
    layers = net.layers
    levels = np.array(sorted(set(layers.tolist())))
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
            for j, level in enumerate(levels):
                sel = layers == level
                r[i, j], c[i, j] = layer_agreement(est[i, sel], fd[sel])
        estimates[method], rel[method], cos[method] = est, r, c
    return BetaScan(np.asarray(betas, float), levels, net.edge_names, layers, fd, loss, estimates, rel, cos)


def table(result: BetaScan) -> list[str]:
    """The printed report: one line per method, β and layer."""
    lines = [f"{'method':>12s} {'beta A/V':>10s} {'layer':>5s} {'relative error':>15s} {'cosine':>10s}"]
    for method in result.estimates:
        for i, beta in enumerate(result.betas):
            for j, level in enumerate(result.layers):
                lines.append(
                    f"{method:>12s} {beta:10.3g} {int(level):5d} {result.relative_error[method][i, j]:15.3e} "
                    f"{result.cosine[method][i, j]:10.6f}"
                )
    return lines


def as_json(result: BetaScan) -> dict:
    return {
        "betas": result.betas.tolist(),
        "loss": result.loss,
        "finite_difference": dict(zip(result.edge_names, result.finite_difference.tolist(), strict=True)),
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


def write(path: Path, result: BetaScan, config_toml: str, backend: str, sample: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        f.attrs["format"] = FORMAT
        f.attrs["format_version"] = FORMAT_VERSION
        f.attrs["config_toml"] = config_toml
        f.attrs["backend"] = backend
        f.attrs["created"] = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
        f.attrs["versions"] = json.dumps(runlog.versions())
        f.attrs["sample"] = sample
        f.attrs["loss"] = result.loss
        f.attrs["methods"] = json.dumps(list(result.estimates))
        f["beta"] = result.betas
        f["layer"] = result.layers
        f["edge_names"] = np.array(result.edge_names, dtype=h5py.string_dtype())
        f["edge_layers"] = result.edge_layers
        f["finite_difference"] = result.finite_difference
        for method in result.estimates:
            g = f.create_group(method)
            g["relative_error"] = result.relative_error[method]
            g["cosine"] = result.cosine[method]
            g["estimate"] = result.estimates[method]


def read(path: Path) -> BetaScan:
    with h5py.File(path, "r") as f:
        if f.attrs.get("format") != FORMAT:
            raise ValueError(f"{path} is not a gradient-quality file (format {f.attrs.get('format')!r})")
        methods = json.loads(f.attrs["methods"])
        return BetaScan(
            f["beta"][:],
            f["layer"][:],
            [s.decode() for s in f["edge_names"][:]],
            f["edge_layers"][:],
            f["finite_difference"][:],
            float(f.attrs["loss"]),
            {m: f[m]["estimate"][:] for m in methods},
            {m: f[m]["relative_error"][:] for m in methods},
            {m: f[m]["cosine"][:] for m in methods},
        )
