"""`hil report`: figures for a run log, each sweep kind and a gradient-quality file."""

import re
import struct

import pytest

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
