"""Shared fixtures: paths to the shipped configs and a way to run `hil` as a user does."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "configs"


@pytest.fixture
def configs() -> Path:
    return CONFIGS


def run_hil(*args: str, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """`hil ...` in a fresh process, as a user would call it."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "hil.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd or ROOT,
        timeout=timeout,
        env=env,
    )


def start_hil(*args: str, cwd: Path | None = None) -> subprocess.Popen[str]:
    """`hil ...` started in the background, as a user would in another terminal (pipes for its
    output): for tests that signal, kill or watch it while it runs."""
    return subprocess.Popen(
        [sys.executable, "-m", "hil.cli", *args],
        cwd=cwd or ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


@pytest.fixture
def hil():
    return run_hil
