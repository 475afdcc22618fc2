"""The README as a new user reads it: its commands and its Python example run as written, its
config reference is what the schemas say, and its layout is the tree."""

import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import h5py
import pytest

from hil.cli.keys import reference

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
VENV_BIN = Path(sys.executable).parent


def block(after: str, language: str) -> str:
    """The first fenced block of `language` after the line that contains `after`."""
    start = README.index(after)
    found = re.search(rf"```{language}\n(.*?)```", README[start:], re.S)
    assert found, f"no {language} block after {after!r}"
    return found.group(1)


@pytest.fixture
def workdir(tmp_path):
    """A user's checkout as far as the commands are concerned: the configs, an empty runs/."""
    shutil.copytree(ROOT / "configs", tmp_path / "configs")
    return tmp_path


def user_env():
    return {**os.environ, "OMP_NUM_THREADS": "1", "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}"}


def test_the_config_reference_is_generated_from_the_schemas():
    table = README.split("<!-- hil keys: begin -->\n")[1].split("<!-- hil keys: end -->")[0]
    assert table == reference()
    for key in ("seed_pairing", "success_db", "seed_formula", "pot_terminal_volts", "nplc"):
        assert f"`{key}`" in table


def test_the_python_example_runs_as_written(workdir):
    code = block("## From Python", "python")
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=workdir, capture_output=True, text=True, env=user_env(), timeout=300
    )
    assert result.returncode == 0, result.stderr
    first, second = result.stdout.strip().splitlines()
    assert re.fullmatch(r"20 epochs: [+-]\d+\.\d dB -> [+-]\d+\.\d dB, accuracy \d+%", first), first
    start, end = (float(x) for x in re.findall(r"([+-]\d+\.\d) dB", first))
    assert end < start  # it trained
    # 4 inputs and a bias, each ±, into 8 hidden nodes; 8 (+A, −A) amplifiers and a bias ± into
    # 2 doubled outputs
    assert second == f"layered-4-8-2 {(2 * 4 + 2) * 8 + (2 * 8 + 2) * 2 * 2} conductances"


def test_the_first_hour_commands_run_as_written(workdir):
    """Every line of the first block after `. .venv/bin/activate`, in a shell, in order."""
    script = block("Then, in the repository:", "sh")
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=workdir,
        capture_output=True,
        text=True,
        env=user_env(),
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "trained 30 epochs" in result.stdout
    assert (workdir / "runs/first-report/index.md").is_file()
    assert re.search(r"^\s*V\(11\)\s+\S+", result.stdout, re.M)  # ngspice ran the printed netlist
    assert "| `[limits]` | `max_volts` |" in result.stdout


def test_emulate_writes_a_bench_config_that_trains_xor_with_no_edit(workdir):
    """`hil emulate BENCH --write-config OUT` in one terminal; bench-check and train on OUT in another."""
    serve = block("serve the virtual bench and write a bench config", "sh").strip()
    check, train = (
        line.split("#")[0].strip() for line in block("use it exactly as a lab bench", "sh").splitlines()
    )
    emulator = subprocess.Popen(
        serve.split(), cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=user_env()
    )
    try:
        lines = []
        while not lines or not lines[-1].startswith("serving"):
            line = emulator.stdout.readline()
            assert line, emulator.stderr.read()
            lines.append(line)
        served = workdir / "runs/served.toml"
        assert f"bench config for these addresses: {served.relative_to(workdir)}\n" in lines
        for command in (check, train):
            result = subprocess.run(
                command.split(), cwd=workdir, capture_output=True, text=True, env=user_env(), timeout=300
            )
            assert result.returncode == 0, (command, result.stderr)
            if command is check:
                assert "6 instruments, all identified" in result.stdout
        assert "accuracy 4/4 (100%)" in result.stdout
        log = Path(workdir, result.stdout.split("run log ")[-1].strip())
        with h5py.File(log, "r") as f:
            assert f.attrs["backend"] == "bench" and f.attrs["status"] == "completed"
            assert "(virtual)" in f.attrs["instruments"]
    finally:
        emulator.send_signal(signal.SIGTERM)
        emulator.communicate(timeout=30)
    assert emulator.returncode == 0


def test_write_config_refuses_to_overwrite_before_serving(workdir):
    (workdir / "taken.toml").write_text("precious")
    result = subprocess.run(
        [str(VENV_BIN / "hil"), "emulate", "configs/bench-virtual.toml", "--write-config", "taken.toml"],
        cwd=workdir,
        capture_output=True,
        text=True,
        env=user_env(),
        timeout=60,
    )
    assert result.returncode == 2 and "--write-config" in result.stderr and "--force" in result.stderr
    assert result.stdout == "" and (workdir / "taken.toml").read_text() == "precious"


def test_the_layout_section_names_every_package_folder():
    layout = block("## Layout", "")
    folders = {line.split()[0] for line in layout.splitlines() if line[:1].strip()}
    on_disk = {
        f"{p.relative_to(ROOT)}/" for p in ROOT.glob("*/") if p.is_dir() and not p.name.startswith(".")
    }
    on_disk |= {f"{p.relative_to(ROOT)}/" for p in (ROOT / "hil").glob("*/") if (p / "__init__.py").exists()}
    # what the tool writes (runs/), what pip builds, and the user's data files (data/, as
    # configs/mnist.toml suggests): none of them part of the package
    on_disk -= {"runs/", "build/", "data/"} | {f"{p.name}/" for p in ROOT.glob("*.egg-info")}
    assert folders == on_disk
