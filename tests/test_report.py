"""`hil report`: figures for a run log, each sweep kind and a gradient-quality file."""

import re
import struct
from pathlib import Path

import matplotlib
import numpy as np
import pytest

from hil.studies import gradcheck, report, sweepfile

matplotlib.use("Agg")

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _png_size(path):
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, f"{path.name} is not a PNG"
    assert data[12:16] == b"IHDR"
    assert data.rstrip(b"\x00")[-8:-4] == b"IEND", f"{path.name} is truncated"
    return struct.unpack(">II", data[16:24])


def _check_report(hil, source, out, expected):
    result = hil("report", str(source), "--out", str(out))
    assert result.returncode == 0, result.stderr
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs == sorted(expected)
    index = (out / "index.md").read_text()
    linked = re.findall(r"!\[[^\]]+\]\(([^)]+\.png)\)", index)
    assert sorted(linked) == sorted(expected)
    for name in expected:
        width, height = _png_size(out / name)
        assert 500 <= width <= 2000 and 300 <= height <= 2000, (name, width, height)
        assert 8_000 < (out / name).stat().st_size < 1_000_000, name
    # Each figure has a one-line reading with numbers in it.
    readings = [ln for ln in index.splitlines() if ln and not ln.startswith(("#", "!"))]
    assert len(readings) >= len(expected) + 1 and all(re.search(r"\d", ln) for ln in readings)
    return index


def test_report_on_a_run_log(hil, configs, tmp_path):
    log = tmp_path / "run.h5"
    assert (
        hil(
            "train", str(configs / "xor.toml"), "--backend", "numeric", "--epochs", "8", "--out", str(log)
        ).returncode
        == 0
    )
    index = _check_report(
        hil, log, tmp_path / "rep", ["error.png", "conductances.png", "update_norm.png", "sample_error.png"]
    )
    assert "8 epochs" in index


def test_report_on_a_starts_sweep(hil, configs, tmp_path):
    sweep = tmp_path / "starts.h5"
    result = hil(
        "sweep", "starts", str(configs / "xor.toml"), "--backend", "numeric", "--starts", "4",
        "--epochs", "6", "--methods", "vdm,vdm-centered", "--out", str(sweep),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    index = _check_report(hil, sweep, tmp_path / "rep", ["success.png", "final_error.png", "curves.png"])
    assert "vdm-centered: " in index and "/4 succeed" in index


def test_report_on_a_grid_sweep(hil, configs, tmp_path):
    sweep = tmp_path / "grid.h5"
    result = hil(
        "sweep", "grid", str(configs / "case1.toml"), "--learning-rate", "1e-4,1e-3",
        "--beta", "1e-7,1e-5,1e-3", "--epochs", "4", "--out", str(sweep),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    _check_report(hil, sweep, tmp_path / "rep", ["grid_vdm-centered.png", "grid_curves_vdm-centered.png"])


def test_report_on_gradient_quality_over_beta(hil, configs, tmp_path):
    data = tmp_path / "gq.h5"
    result = hil(
        "gradcheck", str(configs / "xor.toml"), "--backend", "numeric", "--betas", "1e-8,1e-6,1e-4,1e-2",
        "--out", str(data),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    index = _check_report(hil, data, tmp_path / "rep", ["gradient_quality.png"])
    for method in ("vdm", "vdm-centered", "pcm"):
        assert f"{method}: smallest worst-layer relative error" in index


@pytest.mark.parametrize("content", [b"not hdf5 at all", None])
def test_report_refuses_what_it_cannot_read(hil, tmp_path, content):
    path = tmp_path / "x.h5"
    if content is not None:
        path.write_bytes(content)
    result = hil("report", str(path), "--out", str(tmp_path / "rep"))
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "rep").exists()


# ---------------------------------------------------------------------------------------- figures
def _sweep(kind, finals, points, epochs=5):
    """A sweep as `sweepfile.read` returns it, with the final errors given (NaN = solver failure)."""
    methods = {}
    for method, values in finals.items():
        final = np.asarray(values, float)
        n = len(final)
        curves = np.linspace(10.0, 0.0, epochs)[None, :] + (final - 0.0)[:, None] * np.linspace(0, 1, epochs)
        methods[method] = sweepfile.MethodResults(
            method, curves, final, final <= -9.0, np.ones(n, bool), np.isnan(final), [""] * n,
            np.zeros((n, 2)), np.zeros((n, 2)),
        )  # fmt: skip
    return sweepfile.Sweep(
        Path("s.h5"), kind, "numeric", "completed", epochs, -9.0, "", ["R1", "R2"], np.array([1, 2]),
        points, methods,
    )  # fmt: skip


def test_final_error_histogram_shows_every_method_even_when_two_agree():
    same = [-16.0, -14.2, -13.9, -5.3, -15.1, -18.0]
    s = _sweep("starts", {"vdm-centered": same, "vdm": same, "pcm": [4.4, -3.9, 8.5, 1.4, 1.1, 3.4]},
               {"start": np.arange(6)})  # fmt: skip
    fig = report.final_error_figure(s).figure
    for method in ("vdm-centered", "vdm", "pcm"):
        (ax,) = [ax for ax in fig.axes if ax.get_title(loc="left").startswith(f"{method}:")]
        # Its own axes: no other method's bars can cover them, and all its starts are counted.
        (bars,) = ax.containers
        assert sum(bar.get_height() for bar in bars) == 6
        assert all(bar.get_visible() and bar.get_facecolor()[3] > 0.5 for bar in bars)
    colours = {tuple(ax.containers[0][0].get_facecolor()) for ax in fig.axes}
    assert len(colours) == 3


def _luminance(rgba):
    linear = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in rgba[:3]]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def test_grid_heat_map_labels_contrast_with_their_cells():
    from matplotlib.colors import to_rgba

    alpha = np.repeat([5e-4, 5e-3, 5e-2], 3)
    beta = np.tile([1e-7, 1e-5, 1e-3], 3)
    finals = [-200.0, -60.0, -12.0, -9.0, -6.0, 1.0, 8.0, 25.0, np.nan]
    s = _sweep("grid", {"vdm": finals}, {"alpha": alpha, "learning_rate": 2 * alpha, "beta": beta})
    ax = report.grid_figure(s, "vdm").figure.axes[0]
    (image,) = ax.images
    cells = image.get_array()
    assert len(ax.texts) == 9
    used = set()
    for text in ax.texts:
        j, i = (round(v) for v in text.get_position())
        cell = image.cmap.get_bad() if np.ma.is_masked(cells[i, j]) else image.cmap(image.norm(cells[i, j]))
        lighter, darker = sorted((_luminance(cell), _luminance(to_rgba(text.get_color()))), reverse=True)
        assert (lighter + 0.05) / (darker + 0.05) >= 4.5, (text.get_text(), cell, text.get_color())
        assert text.get_fontsize() >= 9
        used.add(to_rgba(text.get_color()))
    assert len(used) == 2  # dark cells get light text and light cells dark text
    assert {t.get_text() for t in ax.texts} >= {"-200", "-9.0", "+25.0", "fail"}
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert labels == ["$10^{-7}$", "$10^{-5}$", "$10^{-3}$"]


def test_gradient_quality_plots_and_labels_one_minus_cosine_with_a_legend_for_both_panels():
    betas = np.array([1e-8, 1e-6, 1e-4])
    cosine = {"vdm": np.array([[1 - 1e-12, 1 - 1e-10], [1 - 1e-8, 1 - 1e-6], [1 - 1e-4, 1 - 1e-2]]),
              "pcm": np.array([[0.9999, 1.0], [0.9999, 1.0], [0.999, 0.99]])}  # fmt: skip
    rel = {m: np.sqrt(2 * (1 - c)) + 1e-9 for m, c in cosine.items()}
    b = gradcheck.GradientCheck(
        betas, np.array([1, 2]), ["R1", "R2"], np.array([1, 2]), np.ones(2), 0.5,
        {m: np.ones((3, 2)) for m in cosine}, rel, cosine,
    )  # fmt: skip
    fig = report.gradient_quality_figure(b).figure
    left, right = fig.axes
    assert "1 − cos" in right.get_ylabel() and "FD" in right.get_ylabel()
    assert right.get_yscale() == "log" and "cos" in right.get_title()
    plotted = sorted(tuple(line.get_ydata()) for line in right.lines)
    expected = sorted(
        tuple(np.maximum(1 - c[:, j], report.COSINE_FLOOR)) for c in cosine.values() for j in range(2)
    )
    assert np.allclose(plotted, expected, rtol=1e-6)
    # One legend, for the figure: colours are methods and line styles layers, in both panels.
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == ["vdm", "pcm", "layer 1", "layer 2"]
    for panel in (left, right):
        assert {line.get_linestyle() for line in panel.lines} == {"-", "--"}
        assert len({line.get_color() for line in panel.lines}) == 2


def test_accuracy_panel_shows_the_test_samples_when_the_log_has_them(hil, configs, tmp_path):
    from matplotlib.figure import Figure

    from hil import runlog

    out = tmp_path / "iris.h5"
    result = hil("train", str(configs / "iris.toml"), "--epochs", "2", "--out", str(out))
    assert result.returncode == 0, result.stderr
    run = runlog.read(out)
    ax = Figure().add_subplot()
    report.draw_accuracy(ax, run)
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert set(lines) == {"training samples", "test samples"}
    np.testing.assert_allclose(lines["test samples"].get_ydata(), 100 * run.test_accuracy)
