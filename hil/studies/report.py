"""`hil report`: PNG figures and an index.md for a run log, a sweep file or a gradient-quality file.

Each figure comes with a one-line reading computed from the data, so index.md says what the
picture shows in numbers, not only what it is.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from hil import runlog
from hil.studies import gradcheck, sweepfile

DPI = 100
SIZE = (7.5, 4.6)  # inches: 750 × 460 px at DPI


@dataclass(frozen=True)
class Figure:
    file: str
    title: str
    reading: str


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display, same output everywhere
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, out: Path, name: str) -> str:
    fig.tight_layout()
    fig.savefig(out / name, dpi=DPI)
    _pyplot().close(fig)
    return name


def _db(x: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return 10 * np.log10(x)


def report(path: Path, out: Path) -> list[Figure]:
    """Write the figures for `path` into `out` and an index.md listing them."""
    try:
        with h5py.File(path, "r") as f:
            kind = str(f.attrs.get("format", ""))
    except OSError as exc:
        raise ValueError(
            f"{path} is not an HDF5 file hil wrote ({exc}): give a run log, sweep or gradcheck file"
        ) from exc
    makers: dict[str, Callable[[Path, Path], tuple[str, list[Figure]]]] = {
        runlog.FORMAT: _run_log,
        sweepfile.FORMAT: _sweep,
        gradcheck.FORMAT: _gradient_quality,
    }
    if kind not in makers:
        raise ValueError(
            f"{path} is not a file hil writes (format {kind!r}): give a run log, sweep or gradcheck file"
        )
    out.mkdir(parents=True, exist_ok=True)
    heading, figures = makers[kind](path, out)
    lines = [f"# Report: {path.name}", "", heading, ""]
    for fig in figures:
        lines += [f"## {fig.title}", "", f"![{fig.title}]({fig.file})", "", fig.reading, ""]
    (out / "index.md").write_text("\n".join(lines))
    return figures


# ---------------------------------------------------------------------------------------- run log
def _run_log(path: Path, out: Path) -> tuple[str, list[Figure]]:
    plt = _pyplot()
    with h5py.File(path, "r", libver="latest", swmr=True) as f:
        error_db = f["epochs/error_db"][:]
        accuracy = f["epochs/accuracy"][:]
        norms = f["epochs/update_norm"][:]
        sample_loss = f["epochs/sample_loss"][:]
        g = f["epochs/conductances"][:]
        names = [s.decode() for s in f["network/edge_names"][:]]
        layers = f["network/layers"][:]
        status = str(f.attrs.get("status", "running"))
        backend = str(f.attrs["backend"])
    if len(error_db) == 0:
        raise ValueError(f"{path} holds no finished epoch yet: report it after the first epoch")
    epochs = np.arange(1, len(error_db) + 1)
    figures = []

    fig, ax = plt.subplots(figsize=SIZE)
    ax.plot(epochs, error_db, marker="o", markersize=3, label="mean over samples")
    ax.set(title="Training error", xlabel="epoch", ylabel="error 10·log10(mean (t − y)²) (dB)")
    ax.grid(True, alpha=0.3)
    ax.legend()
    figures.append(
        Figure(
            _save(fig, out, "error.png"),
            "Error vs epoch",
            f"The error goes from {error_db[0]:+.2f} dB (epoch 1) to {error_db[-1]:+.2f} dB (epoch "
            f"{len(error_db)}); accuracy after the last epoch {accuracy[-1]:.0%}.",
        )
    )

    levels = sorted(set(layers.tolist()))
    fig, axes = plt.subplots(1, len(levels), figsize=SIZE, squeeze=False)
    for ax, level in zip(axes[0], levels, strict=True):
        for k in np.flatnonzero(layers == level):
            ax.plot(np.arange(len(g)), g[:, k] * 1e3, label=names[k])
        ax.set(title=f"layer {level}", xlabel="epoch", ylabel="conductance (mS, signed)")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small", ncol=2)
    fig.suptitle("Conductance trajectories")
    moved = np.abs(g[-1] - g[0])
    figures.append(
        Figure(
            _save(fig, out, "conductances.png"),
            "Conductance trajectories per layer",
            f"Largest change: {names[int(np.argmax(moved))]} by {moved.max() * 1e3:.3g} mS; "
            f"{int(np.sum(np.sign(g[-1]) != np.sign(g[0])))} conductances changed sign.",
        )
    )

    fig, ax = plt.subplots(figsize=SIZE)
    ax.semilogy(epochs, norms, marker="o", markersize=3)
    ax.set(title="Update size", xlabel="epoch", ylabel="mean ‖Δg‖ per update (S)")
    ax.grid(True, which="both", alpha=0.3)
    figures.append(
        Figure(
            _save(fig, out, "update_norm.png"),
            "Update norms",
            f"Mean update norm {norms[0]:.3g} S in epoch 1, {norms[-1]:.3g} S in the last epoch.",
        )
    )

    fig, ax = plt.subplots(figsize=SIZE)
    per_sample = _db(sample_loss)
    for i in range(per_sample.shape[1]):
        ax.plot(epochs, per_sample[:, i], label=f"sample {i}")
    ax.set(title="Per-sample error", xlabel="epoch", ylabel="10·log10((t − y)²) (dB)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    worst = int(np.argmax(per_sample[-1]))
    figures.append(
        Figure(
            _save(fig, out, "sample_error.png"),
            "Per-sample error",
            f"In the last epoch the worst sample is {worst} at {per_sample[-1, worst]:+.2f} dB, the best at "
            f"{per_sample[-1].min():+.2f} dB.",
        )
    )
    return f"Run log, backend {backend}, {len(error_db)} epochs, status {status}.", figures


# ---------------------------------------------------------------------------------------- sweeps
def _sweep(path: Path, out: Path) -> tuple[str, list[Figure]]:
    s = sweepfile.read(path)
    heading = (
        f"Sweep of kind {s.kind}, backend {s.backend}, {s.epochs} epochs, methods "
        f"{', '.join(s.methods)}, status {s.status}; success = final error ≤ {s.success_db:g} dB."
    )
    if s.kind == "grid":
        return heading, [fig for m in s.methods for fig in _grid(s, m, out)]
    return heading, _starts(s, out)


def _starts(s: sweepfile.Sweep, out: Path) -> list[Figure]:
    plt = _pyplot()
    summaries = sweepfile.summarise(s)
    figures = []
    methods = list(s.methods)
    fig, ax = plt.subplots(figsize=SIZE)
    x = np.arange(len(methods))
    rates = [100 * m.successes / m.done if m.done else 0.0 for m in summaries]
    fails = [100 * m.failures / m.done if m.done else 0.0 for m in summaries]
    ax.bar(x, rates, color="tab:green", label=f"final error ≤ {s.success_db:g} dB")
    ax.bar(x, fails, bottom=rates, color="tab:red", hatch="//", label="solver failure")
    for i, m in enumerate(summaries):
        ax.annotate(f"{m.successes}/{m.done}", (i, rates[i] + fails[i]), ha="center", va="bottom")
    ax.set_xticks(x, methods)
    ax.set(title="Success rate per method", xlabel="method", ylabel="starts (%)", ylim=(0, 110))
    ax.legend()
    figures.append(
        Figure(
            _save(fig, out, "success.png"),
            "Success rate per method",
            "; ".join(
                f"{m.method}: {m.successes}/{m.done} succeed, {m.failures} solver failures" for m in summaries
            )
            + ".",
        )
    )

    fig, ax = plt.subplots(figsize=SIZE)
    finals = {m: r.final_error_db[r.done & ~r.failed] for m, r in s.methods.items()}
    every = np.concatenate([v for v in finals.values()] + [np.array([s.success_db])])
    bins = np.linspace(np.floor(every.min()) - 0.5, np.ceil(every.max()) + 0.5, 30)
    for m, v in finals.items():
        ax.hist(v, bins=bins, alpha=0.6, label=f"{m} ({len(v)} starts)")
    ax.axvline(s.success_db, color="k", linestyle="--", label=f"threshold {s.success_db:g} dB")
    ax.set(title="Final error of every start", xlabel="final error (dB)", ylabel="starts")
    ax.legend()
    figures.append(
        Figure(
            _save(fig, out, "final_error.png"),
            "Final-error histogram",
            "; ".join(
                f"{m.method}: median {m.final_median:+.2f} dB, "
                f"range {m.final_low:+.2f} … {m.final_high:+.2f} dB"
                for m in summaries
            )
            + ".",
        )
    )

    fig, axes = plt.subplots(1, len(methods), figsize=SIZE, squeeze=False, sharey=True)
    epochs = np.arange(1, s.epochs + 1)
    for ax, m in zip(axes[0], methods, strict=True):
        r = s.methods[m]
        rows = r.error_db[r.done]
        for row in rows:
            ax.plot(epochs, row, color="tab:gray", alpha=0.25, linewidth=0.7)
        if len(rows):
            ax.plot(epochs, np.nanmedian(rows, axis=0), color="tab:blue", linewidth=2, label="median")
        ax.axhline(s.success_db, color="k", linestyle="--", linewidth=1, label="threshold")
        ax.set(title=f"{m} ({len(rows)} starts)", xlabel="epoch")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
    axes[0][0].set_ylabel("error (dB)")
    fig.suptitle("Error curves of every start, with the median")
    medians = {m: np.nanmedian(r.error_db[r.done][:, -1]) for m, r in s.methods.items() if r.done.any()}
    figures.append(
        Figure(
            _save(fig, out, "curves.png"),
            "Error curves of all starts",
            "Median final error: "
            + ", ".join(f"{m} {v:+.2f} dB" for m, v in medians.items())
            + " (grey: each start; a curve that stops early ended in a solver failure).",
        )
    )
    return figures


def _grid(s: sweepfile.Sweep, method: str, out: Path) -> list[Figure]:
    plt = _pyplot()
    r = s.methods[method]
    alpha = s.points["alpha"]
    use_alpha = bool(np.all(np.isfinite(alpha)))
    rate = alpha if use_alpha else s.points["learning_rate"]
    rate_name = "α (seed's, η = 2α)" if use_alpha else "learning rate η"
    rates = np.unique(rate)
    betas = np.unique(s.points["beta"])
    final = np.full((len(rates), len(betas)), np.nan)
    for k in np.flatnonzero(r.done):
        final[np.searchsorted(rates, rate[k]), np.searchsorted(betas, s.points["beta"][k])] = (
            r.final_error_db[k]
        )
    fig, ax = plt.subplots(figsize=SIZE)
    image = ax.imshow(final, aspect="auto", origin="lower", cmap="viridis_r")
    ax.set_xticks(range(len(betas)), [f"{b:.0e}" for b in betas], rotation=45)
    ax.set_yticks(range(len(rates)), [f"{a:.1e}" for a in rates])
    for (i, j), v in np.ndenumerate(final):
        ax.text(j, i, "fail" if np.isnan(v) else f"{v:.1f}", ha="center", va="center", fontsize=7, color="w")
    ax.set(title=f"Final error, {method}", xlabel="β (A/V)", ylabel=rate_name)
    fig.colorbar(image, ax=ax, label="final error (dB)")
    best = np.unravel_index(np.nanargmin(final), final.shape) if np.isfinite(final).any() else None
    reading = (
        f"Best: {final[best]:+.2f} dB at {rate_name} = {rates[best[0]]:.3g}, β = {betas[best[1]]:.3g} A/V; "
        f"{int(np.isnan(final).sum())} of {final.size} points failed or did not run."
        if best is not None
        else "No grid point finished."
    )
    figures = [Figure(_save(fig, out, f"grid_{method}.png"), f"Grid heat map, {method}", reading)]

    cols = min(len(rates), 3)
    rows_n = int(np.ceil(len(rates) / cols))
    fig, axes = plt.subplots(rows_n, cols, figsize=(SIZE[0], SIZE[1] * max(rows_n, 1) * 0.8), squeeze=False)
    colours = plt.get_cmap("plasma")(np.linspace(0, 0.9, len(betas)))
    epochs = np.arange(1, s.epochs + 1)
    for a_i, a in enumerate(rates):
        ax = axes[a_i // cols][a_i % cols]
        for b_i, b in enumerate(betas):
            k = np.flatnonzero((rate == a) & (s.points["beta"] == b) & r.done)
            if len(k):
                ax.plot(epochs, r.error_db[k[0]], color=colours[b_i], label=f"β={b:.0e}")
        ax.set(title=f"{rate_name.split(' ')[0]} = {a:.1e}", xlabel="epoch", ylabel="error (dB)")
        ax.grid(True, alpha=0.3)
    for extra in range(len(rates), rows_n * cols):
        axes[extra // cols][extra % cols].axis("off")
    axes[0][0].legend(fontsize="x-small", ncol=2)
    fig.suptitle(f"Error vs epoch per β, {method}")
    figures.append(
        Figure(
            _save(fig, out, f"grid_curves_{method}.png"),
            f"Error vs epoch per β, {method}",
            "One curve per β at each learning rate (the 2023 paper's Fig. 2 layout); " + reading,
        )
    )
    return figures


# ---------------------------------------------------------------------------------------- gradcheck
def _gradient_quality(path: Path, out: Path) -> tuple[str, list[Figure]]:
    plt = _pyplot()
    b = gradcheck.read(path)
    fig, (left, right) = plt.subplots(1, 2, figsize=(SIZE[0] * 1.3, SIZE[1]))
    styles = ["-", "--", ":", "-."]
    readings = []
    for c_i, (method, rel) in enumerate(b.relative_error.items()):
        colour = f"C{c_i}"
        for j, level in enumerate(b.layers):
            label = f"{method}, layer {int(level)}"
            left.loglog(
                b.betas, rel[:, j], styles[j % 4], color=colour, marker="o", markersize=3, label=label
            )
            right.semilogx(
                b.betas, b.cosine[method][:, j], styles[j % 4], color=colour, marker="o", markersize=3
            )
        best = int(np.argmin(rel.max(axis=1)))
        readings.append(
            f"{method}: smallest worst-layer relative error {rel[best].max():.2e} "
            f"at β = {b.betas[best]:.0e}, "
            f"cosine {b.cosine[method][best].min():+.3f}"
        )
    left.set(title="Relative error vs β", xlabel="β (A/V)", ylabel="‖estimate − FD‖ / ‖FD‖")
    right.set(title="Cosine with the gradient vs β", xlabel="β (A/V)", ylabel="cosine", ylim=(-1.05, 1.05))
    for ax in (left, right):
        ax.grid(True, which="both", alpha=0.3)
    left.legend(fontsize="x-small")
    name = _save(fig, out, "gradient_quality.png")
    heading = f"Gradient quality against finite differences, loss {b.loss:.4g} at the config's conductances."
    return heading, [Figure(name, "Gradient quality vs β", "; ".join(readings) + ".")]
