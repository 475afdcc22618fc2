"""`hil report`: PNG figures and an index.md for a run log, a sweep file or a gradient-quality file.

Each figure comes with a one-line reading computed from the data, so index.md says what the
picture shows in numbers, not only what it is.

Figures are drawn on `matplotlib.figure.Figure` objects, never through pyplot: no backend is
switched and no global state is left behind, so `hil watch` can draw the same run-log panels
(`draw_error`, `draw_accuracy`, `draw_conductances`) into a window or a PNG.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import h5py
import numpy as np

from hil import runlog
from hil.studies import gradcheck, sweepfile

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure as MplFigure
    from matplotlib.lines import Line2D
    from matplotlib.typing import LineStyleType

DPI = 100
SIZE = (7.5, 4.6)  # inches: 750 × 460 px at DPI
MARKERS_UP_TO = 60  # epochs: beyond this, markers hide the line instead of showing the points
LEGEND_UP_TO = 10  # conductances per layer: beyond this a legend covers the traces


@dataclass(frozen=True)
class Figure:
    """A figure written by `report`: its file in the output directory, title and reading."""

    file: str
    title: str
    reading: str


@dataclass(frozen=True)
class Drawn:
    """A drawn but not yet saved figure (what the tests inspect)."""

    figure: MplFigure
    file: str
    title: str
    reading: str


def new_figure(size: tuple[float, float] = SIZE) -> MplFigure:
    from matplotlib.figure import Figure as MplFigure

    return MplFigure(figsize=size, dpi=DPI, layout="constrained")


def _save(drawn: Drawn, out: Path) -> Figure:
    drawn.figure.savefig(out / drawn.file, dpi=DPI)
    return Figure(drawn.file, drawn.title, drawn.reading)


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
    makers: dict[str, Callable[[Path], tuple[str, list[Drawn]]]] = {
        runlog.FORMAT: _run_log,
        sweepfile.FORMAT: _sweep,
        gradcheck.FORMAT: _gradient_quality,
    }
    if kind not in makers:
        raise ValueError(
            f"{path} is not a file hil writes (format {kind!r}): give a run log, sweep or gradcheck file"
        )
    heading, drawn = makers[kind](path)
    out.mkdir(parents=True, exist_ok=True)
    figures = [_save(d, out) for d in drawn]
    lines = [f"# Report: {path.name}", "", heading, ""]
    for fig in figures:
        lines += [f"## {fig.title}", "", f"![{fig.title}]({fig.file})", "", fig.reading, ""]
    (out / "index.md").write_text("\n".join(lines))
    return figures


# ---------------------------------------------------------------------------------------- run log
def training_setting(run: runlog.Run, key: str) -> float | None:
    """A number of the run's [training] table (epochs, success_db, ...), None if it has none."""
    try:
        value = tomllib.loads(run.config_toml).get("training", {}).get(key)
    except tomllib.TOMLDecodeError:
        return None
    return float(value) if isinstance(value, int | float) else None


def layer_levels(run: runlog.Run) -> list[int]:
    return sorted({int(level) for level in run.layers})


def _marker(n: int) -> dict[str, Any]:
    return {"marker": "o", "markersize": 3} if n <= MARKERS_UP_TO else {}


def _epoch_axis(ax: Axes) -> None:
    """Whole epochs on the x axis: epoch 2.5 does not exist."""
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")


def draw_error(ax: Axes, run: runlog.Run) -> Line2D:
    """Mean error per epoch, with the config's success threshold; returns the error line."""
    epochs = np.arange(1, run.epochs + 1)
    (line,) = ax.plot(epochs, run.error_db, color="C0", label="mean over samples", **_marker(run.epochs))
    threshold = training_setting(run, "success_db")
    if threshold is not None:
        ax.axhline(threshold, color="k", linestyle="--", linewidth=1, label=f"success ≤ {threshold:g} dB")
    ax.set(title="Training error", ylabel="error 10·log10(mean (t − y)²) (dB)")
    _epoch_axis(ax)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small", loc="best")
    return line


def draw_accuracy(ax: Axes, run: runlog.Run) -> Line2D:
    """Share of samples right with the conductances after each epoch (and of the test samples,
    when the log has them); returns the training line."""
    epochs = np.arange(1, run.epochs + 1)
    (line,) = ax.plot(epochs, 100 * run.accuracy, color="C2", label="training samples", **_marker(run.epochs))
    test = run.test_accuracy[: run.epochs] if len(run.test_accuracy) else np.zeros(0)
    if len(test) and np.isfinite(test).any():
        ax.plot(epochs, 100 * test, color="C3", linestyle="--", label="test samples", **_marker(run.epochs))
        ax.legend(fontsize="small", loc="lower right")
    ax.set(title="Accuracy", ylabel="samples right (%)", ylim=(-5, 105))
    _epoch_axis(ax)
    ax.grid(True, alpha=0.3)
    return line


def draw_conductances(axes: Sequence[Axes], run: runlog.Run) -> list[Line2D]:
    """One axes per layer (`layer_levels`): every conductance from its initial value (epoch 0)."""
    epochs = np.arange(len(run.conductances))
    lines = []
    for ax, level in zip(axes, layer_levels(run), strict=True):
        edges = np.flatnonzero(run.layers == level)
        for k in edges:
            lines += ax.plot(epochs, run.conductances[:, k] * 1e3, label=run.edge_names[k])
        ax.set(title=f"Conductances, layer {level}", ylabel="conductance (mS, signed)")
        _epoch_axis(ax)
        ax.grid(True, alpha=0.3)
        if len(edges) <= LEGEND_UP_TO:
            ax.legend(fontsize="x-small", ncol=2 if len(edges) > 4 else 1, loc="best")
    return lines


def _run_log(path: Path) -> tuple[str, list[Drawn]]:
    run = runlog.read(path)
    if run.epochs == 0:
        raise ValueError(f"{path} holds no finished epoch yet: report it after the first epoch")
    drawn = [error_figure(run), conductance_figure(run), update_norm_figure(run), sample_error_figure(run)]
    return f"Run log, backend {run.backend}, {run.epochs} epochs, status {run.status}.", drawn


def error_figure(run: runlog.Run) -> Drawn:
    fig = new_figure((SIZE[0], SIZE[1] * 1.25))
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=(2, 1))
    draw_error(top, run)
    top.set_xlabel("")
    draw_accuracy(bottom, run)
    return Drawn(
        fig,
        "error.png",
        "Error and accuracy vs epoch",
        f"The error goes from {run.error_db[0]:+.2f} dB (epoch 1) to {run.error_db[-1]:+.2f} dB (epoch "
        f"{run.epochs}); accuracy after the last epoch {run.accuracy[-1]:.0%}.",
    )


def conductance_figure(run: runlog.Run) -> Drawn:
    fig = new_figure()
    axes = fig.subplots(1, len(layer_levels(run)), squeeze=False)[0]
    draw_conductances(axes, run)
    fig.suptitle("Conductance trajectories")
    g = run.conductances
    moved = np.abs(g[-1] - g[0])
    return Drawn(
        fig,
        "conductances.png",
        "Conductance trajectories per layer",
        f"Largest change: {run.edge_names[int(np.argmax(moved))]} by {moved.max() * 1e3:.3g} mS; "
        f"{int(np.sum(np.sign(g[-1]) != np.sign(g[0])))} conductances changed sign.",
    )


def update_norm_figure(run: runlog.Run) -> Drawn:
    fig = new_figure()
    ax = fig.subplots()
    norms = run.update_norm
    ax.semilogy(np.arange(1, run.epochs + 1), norms, **_marker(run.epochs))
    ax.set(title="Update size", ylabel="mean ‖Δg‖ per update (S)")
    _epoch_axis(ax)
    ax.grid(True, which="both", alpha=0.3)
    return Drawn(
        fig,
        "update_norm.png",
        "Update norms",
        f"Mean update norm {norms[0]:.3g} S in epoch 1, {norms[-1]:.3g} S in the last epoch.",
    )


def sample_error_figure(run: runlog.Run) -> Drawn:
    fig = new_figure()
    ax = fig.subplots()
    per_sample = _db(run.sample_loss)
    epochs = np.arange(1, run.epochs + 1)
    for i in range(per_sample.shape[1]):
        ax.plot(epochs, per_sample[:, i], label=f"sample {i}")
    ax.set(title="Per-sample error", ylabel="10·log10((t − y)²) (dB)")
    _epoch_axis(ax)
    ax.grid(True, alpha=0.3)
    if per_sample.shape[1] <= LEGEND_UP_TO:
        ax.legend(fontsize="small")
    worst = int(np.argmax(per_sample[-1]))
    return Drawn(
        fig,
        "sample_error.png",
        "Per-sample error",
        f"In the last epoch the worst sample is {worst} at {per_sample[-1, worst]:+.2f} dB, the best at "
        f"{per_sample[-1].min():+.2f} dB.",
    )


# ---------------------------------------------------------------------------------------- sweeps
def _sweep(path: Path) -> tuple[str, list[Drawn]]:
    s = sweepfile.read(path)
    heading = (
        f"Sweep of kind {s.kind}, backend {s.backend}, {s.epochs} epochs, methods "
        f"{', '.join(s.methods)}, status {s.status}; success = final error ≤ {s.success_db:g} dB."
    )
    if s.kind == "grid":
        return heading, [d for m in s.methods for d in (grid_figure(s, m), grid_curves_figure(s, m))]
    return heading, [success_figure(s), final_error_figure(s), curves_figure(s)]


def success_figure(s: sweepfile.Sweep) -> Drawn:
    summaries = sweepfile.summarise(s)
    fig = new_figure()
    ax = fig.subplots()
    x = np.arange(len(summaries))
    rates = [100 * m.successes / m.done if m.done else 0.0 for m in summaries]
    fails = [100 * m.failures / m.done if m.done else 0.0 for m in summaries]
    ax.bar(x, rates, color="tab:green", label=f"final error ≤ {s.success_db:g} dB")
    ax.bar(x, fails, bottom=rates, color="tab:red", hatch="//", label="solver failure")
    for i, m in enumerate(summaries):
        ax.annotate(f"{m.successes}/{m.done}", (i, rates[i] + fails[i]), ha="center", va="bottom")
    ax.set_xticks(x, [m.method for m in summaries])
    ax.set(title="Success rate per method", xlabel="method", ylabel="starts (%)", ylim=(0, 110))
    ax.legend()
    reading = "; ".join(
        f"{m.method}: {m.successes}/{m.done} succeed, {m.failures} solver failures" for m in summaries
    )
    return Drawn(fig, "success.png", "Success rate per method", reading + ".")


def final_error_figure(s: sweepfile.Sweep) -> Drawn:
    """One histogram row per method on a shared axis: methods with the same results stay visible."""
    from matplotlib.ticker import MaxNLocator

    finals = {m: r.final_error_db[r.done & ~r.failed] for m, r in s.methods.items()}
    every = np.concatenate([*finals.values(), np.array([s.success_db])])
    bins = np.linspace(np.floor(every.min()) - 0.5, np.ceil(every.max()) + 0.5, 30)
    fig = new_figure((SIZE[0], max(SIZE[1], 1.0 + 1.3 * len(finals))))
    axes = fig.subplots(len(finals), 1, sharex=True, squeeze=False)[:, 0]
    for i, (ax, (method, values)) in enumerate(zip(axes, finals.items(), strict=True)):
        ax.axvspan(bins[0], s.success_db, color="tab:green", alpha=0.08, linewidth=0)
        ax.hist(values, bins=bins, color=f"C{i}", edgecolor="white", linewidth=0.5, label=method)
        ax.axvline(s.success_db, color="k", linestyle="--", linewidth=1)
        if len(values):
            ax.axvline(float(np.median(values)), color=f"C{i}", linewidth=2.5, alpha=0.6)
        ax.set_ylabel("starts")
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(
            f"{method}: {len(values)} starts, {int(np.sum(values <= s.success_db))} ≤ {s.success_db:g} dB"
            + (f", median {np.median(values):+.1f} dB" if len(values) else ""),
            loc="left",
            fontsize="medium",
        )
        ax.grid(True, axis="x", alpha=0.3)
    axes[-1].set_xlabel(f"final error (dB); dashed: success threshold {s.success_db:g} dB, thick: median")
    fig.suptitle("Final error of every start, per method")
    reading = "; ".join(
        f"{m.method}: median {m.final_median:+.2f} dB, range {m.final_low:+.2f} … {m.final_high:+.2f} dB"
        for m in sweepfile.summarise(s)
    )
    return Drawn(fig, "final_error.png", "Final error of every start, per method", reading + ".")


def curves_figure(s: sweepfile.Sweep) -> Drawn:
    fig = new_figure()
    axes = fig.subplots(1, len(s.methods), squeeze=False, sharey=True)[0]
    epochs = np.arange(1, s.epochs + 1)
    for ax, (method, r) in zip(axes, s.methods.items(), strict=True):
        rows = r.error_db[r.done]
        for row in rows:
            ax.plot(epochs, row, color="tab:gray", alpha=0.25, linewidth=0.7)
        if len(rows):
            ax.plot(epochs, np.nanmedian(rows, axis=0), color="tab:blue", linewidth=2, label="median")
        ax.axhline(s.success_db, color="k", linestyle="--", linewidth=1, label="threshold")
        ax.set(title=f"{method} ({len(rows)} starts)", xlabel="epoch")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
    axes[0].set_ylabel("error (dB)")
    fig.suptitle("Error curves of every start, with the median")
    medians = {
        m: float(np.nanmedian(r.error_db[r.done][:, -1])) for m, r in s.methods.items() if r.done.any()
    }
    return Drawn(
        fig,
        "curves.png",
        "Error curves of all starts",
        "Median final error: "
        + ", ".join(f"{m} {v:+.2f} dB" for m, v in medians.items())
        + " (grey: each start; a curve that stops early ended in a solver failure).",
    )


# ---------------------------------------------------------------------------------------- grids
def power_label(value: float) -> str:
    """1e-07 -> $10^{-7}$, 2.5e-4 -> $2.5·10^{-4}$: short tick labels that read as numbers."""
    mantissa, exponent = f"{value:.2e}".split("e")
    m, e = float(mantissa), int(exponent)
    if e == 0:
        return f"{m:g}"
    return f"$10^{{{e}}}$" if m == 1 else f"${m:g}·10^{{{e}}}$"


def text_colour(rgba: Sequence[float] | np.ndarray) -> str:
    """Black or white, whichever contrasts more with a cell of this colour (WCAG luminance)."""
    linear = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in map(float, rgba[:3])]
    luminance = 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]
    # Contrast with black (L + 0.05)/0.05 equals contrast with white 1.05/(L + 0.05) at L ≈ 0.179.
    return "black" if luminance > 0.179 else "white"


def _thin_ticks(n: int, most: int = 10) -> range:
    return range(0, n, max(1, int(np.ceil(n / most))))


@dataclass(frozen=True)
class _Grid:
    rate: np.ndarray  # per point
    rate_name: str
    rates: np.ndarray  # unique, ascending
    betas: np.ndarray
    final: np.ndarray  # [rates, betas], NaN where failed or not run


def _grid_table(s: sweepfile.Sweep, method: str) -> _Grid:
    r = s.methods[method]
    alpha = s.points["alpha"]
    use_alpha = bool(np.all(np.isfinite(alpha)))
    rate = alpha if use_alpha else s.points["learning_rate"]
    rates, betas = np.unique(rate), np.unique(s.points["beta"])
    final = np.full((len(rates), len(betas)), np.nan)
    for k in np.flatnonzero(r.done):
        row, col = np.searchsorted(rates, rate[k]), np.searchsorted(betas, s.points["beta"][k])
        final[row, col] = r.final_error_db[k]
    return _Grid(rate, "α (seed's, η = 2α)" if use_alpha else "learning rate η", rates, betas, final)


def grid_figure(s: sweepfile.Sweep, method: str) -> Drawn:
    """Final error per (rate, β): blue below the success threshold, red above, white at it."""
    from matplotlib import colormaps
    from matplotlib.colors import Normalize

    t = _grid_table(s, method)
    final = t.final
    known = final[np.isfinite(final)]
    # Equal colour depth for equal dB either side of the threshold, 30 dB at most: a -300 dB cell
    # must not wash out the difference between +2 and +12 dB (its label still gives its value).
    span = float(np.abs(known - s.success_db).max()) + 1 if known.size else 1.0
    span = min(span, 30.0)
    norm = Normalize(vmin=s.success_db - span, vmax=s.success_db + span)
    cmap = colormaps["RdBu_r"].with_extremes(bad="#d0d0d0")
    fig = new_figure()
    ax = fig.subplots()
    image = ax.imshow(np.ma.masked_invalid(final), aspect="auto", origin="lower", cmap=cmap, norm=norm)
    cells = max(final.shape)
    size = 11 if cells <= 6 else 9 if cells <= 10 else 7
    for (i, j), v in np.ndenumerate(final):
        colour = text_colour(cmap.get_bad() if np.isnan(v) else cmap(norm(v)))
        label = "fail" if np.isnan(v) else f"{v:+.1f}" if abs(v) < 100 else f"{v:+.0f}"
        ax.text(j, i, label, ha="center", va="center", fontsize=size, color=colour)
    cols, rows = _thin_ticks(len(t.betas)), _thin_ticks(len(t.rates))
    ax.set_xticks(list(cols), [power_label(t.betas[j]) for j in cols])
    ax.set_yticks(list(rows), [power_label(t.rates[i]) for i in rows])
    ax.set(title=f"Final error after {s.epochs} epochs, {method}", xlabel="β (A/V)", ylabel=t.rate_name)
    extend = {(False, False): "neither", (True, False): "min", (False, True): "max", (True, True): "both"}
    clipped = (bool(known.size and known.min() < norm.vmin), bool(known.size and known.max() > norm.vmax))
    bar = fig.colorbar(image, ax=ax, extend=extend[clipped])
    bar.set_label(f"final error (dB); white: threshold {s.success_db:g} dB")
    return Drawn(fig, f"grid_{method}.png", f"Grid heat map, {method}", _grid_reading(t))


def grid_curves_figure(s: sweepfile.Sweep, method: str) -> Drawn:
    from matplotlib import colormaps

    t = _grid_table(s, method)
    r = s.methods[method]
    cols = min(len(t.rates), 3)
    rows_n = int(np.ceil(len(t.rates) / cols))
    fig = new_figure((SIZE[0], SIZE[1] * max(rows_n, 1) * 0.8 + 0.4))
    axes = fig.subplots(rows_n, cols, squeeze=False, sharey=True)
    colours = colormaps["plasma"](np.linspace(0, 0.9, len(t.betas)))
    epochs = np.arange(1, s.epochs + 1)
    for a_i, a in enumerate(t.rates):
        ax = axes[a_i // cols][a_i % cols]
        for b_i, b in enumerate(t.betas):
            k = np.flatnonzero((t.rate == a) & (s.points["beta"] == b) & r.done)
            if len(k):
                ax.plot(epochs, r.error_db[k[0]], color=colours[b_i], label=f"β = {power_label(b)}")
        ax.axhline(s.success_db, color="k", linestyle="--", linewidth=1)
        ax.set(title=f"{t.rate_name.split(' ')[0]} = {power_label(a)}", xlabel="epoch")
        if a_i % cols == 0:
            ax.set_ylabel("error (dB)")
        ax.grid(True, alpha=0.3)
    for extra in range(len(t.rates), rows_n * cols):
        axes[extra // cols][extra % cols].axis("off")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=min(len(labels), 6), fontsize="small")
    fig.suptitle(f"Error vs epoch per β, {method} (dashed: threshold {s.success_db:g} dB)")
    return Drawn(
        fig,
        f"grid_curves_{method}.png",
        f"Error vs epoch per β, {method}",
        "One curve per β at each learning rate (the 2023 paper's Fig. 2 layout); " + _grid_reading(t),
    )


def _grid_reading(t: _Grid) -> str:
    if not np.isfinite(t.final).any():
        return "No grid point finished."
    i, j = np.unravel_index(np.nanargmin(t.final), t.final.shape)
    return (
        f"Best: {t.final[i, j]:+.2f} dB at {t.rate_name} = {t.rates[i]:.3g}, β = {t.betas[j]:.3g} A/V; "
        f"{int(np.isnan(t.final).sum())} of {t.final.size} points failed or did not run."
    )


# ---------------------------------------------------------------------------------------- gradcheck
COSINE_FLOOR = 1e-16  # 1 − cos below this is rounding of a cosine that is 1 in double precision


def _gradient_quality(path: Path) -> tuple[str, list[Drawn]]:
    b = gradcheck.read(path)
    heading = f"Gradient quality against finite differences, loss {b.loss:.4g} at the config's conductances."
    return heading, [gradient_quality_figure(b)]


def gradient_quality_figure(b: gradcheck.GradientCheck) -> Drawn:
    """Per method (colour) and layer (line style): relative error and 1 − cosine against the
    finite-difference gradient. The cosines sit within 1e-4 of 1, so 1 − cos on a log axis is what
    shows how they approach it (O(β²) for VDM, O(β⁴) centered)."""
    from matplotlib.lines import Line2D

    fig = new_figure((SIZE[0] * 1.3, SIZE[1] + 0.5))
    left, right = fig.subplots(1, 2)
    styles: list[LineStyleType] = ["-", "--", ":", "-."]
    readings = []
    for c_i, (method, rel) in enumerate(b.relative_error.items()):
        one_minus_cos = np.maximum(1 - b.cosine[method], COSINE_FLOOR)
        for j in range(len(b.layers)):
            style = {"linestyle": styles[j % 4], "color": f"C{c_i}", "marker": "o", "markersize": 3}
            left.loglog(b.betas, rel[:, j], **style)
            right.loglog(b.betas, one_minus_cos[:, j], **style)
        best = int(np.argmin(rel.max(axis=1)))
        readings.append(
            f"{method}: smallest worst-layer relative error {rel[best].max():.2e} "
            f"at β = {b.betas[best]:.0e}, cosine {b.cosine[method][best].min():+.3f}"
        )
    left.set(title="Relative error vs β", xlabel="β (A/V)", ylabel="‖estimate − FD‖ / ‖FD‖ per layer")
    right.set(
        title="Direction: 1 − cosine vs β (0 = parallel)",
        xlabel="β (A/V)",
        ylabel="1 − cos(estimate, FD gradient) per layer",
    )
    right.axhspan(COSINE_FLOOR / 3, COSINE_FLOOR * 10, color="0.85", zorder=0)
    right.text(b.betas[0], COSINE_FLOOR * 2, " double-precision floor", fontsize="x-small", va="center")
    for ax in (left, right):
        ax.grid(True, which="both", alpha=0.3)
    handles = [Line2D([], [], color=f"C{i}", linewidth=2) for i in range(len(b.relative_error))]
    handles += [Line2D([], [], color="k", linestyle=styles[j % 4]) for j in range(len(b.layers))]
    labels = [*b.relative_error, *(f"layer {int(level)}" for level in b.layers)]
    fig.legend(handles, labels, loc="outside lower center", ncol=len(labels), fontsize="small")
    fig.suptitle("Estimates against the finite-difference (FD) gradient; colour: method, style: layer")
    return Drawn(fig, "gradient_quality.png", "Gradient quality vs β", "; ".join(readings) + ".")
