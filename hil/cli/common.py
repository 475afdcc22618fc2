"""What every `hil` command shares: the CONFIG/--backend/--sample options, command-line overrides,
lists of numbers and names, the stop flag for SIGTERM and Ctrl-C, and the exit codes."""

from __future__ import annotations

import argparse
import signal
import threading
from collections.abc import Callable
from types import FrameType, TracebackType
from typing import Any

import numpy as np

from hil.config import Experiment
from hil.train import Interrupted

EXIT_FAILED = 1  # the run failed (an instrument, the solver)
EXIT_USAGE = 2  # bad input: nothing was touched or written
EXIT_INTERRUPTED = 130  # SIGTERM or Ctrl-C: stopped cleanly

Command = Callable[[argparse.Namespace], int]


def add_command(
    sub: argparse._SubParsersAction,
    name: str,
    run: Command,
    summary: str,
    detail: str,
    sample: bool = True,
    config_required: bool = True,
) -> argparse.ArgumentParser:
    """A subcommand taking CONFIG and --backend (and --sample unless told not to)."""
    sp = sub.add_parser(name, help=summary, description=detail)
    sp.add_argument(
        "config", nargs=None if config_required else "?", help="experiment config, or a bench config (TOML)"
    )
    sp.add_argument(
        "--backend",
        choices=("spice", "numeric"),
        help="override [backend] name; on a bench config: a dry run on this simulator, no instrument touched",
    )
    if sample:
        sp.add_argument("--sample", type=int, default=0, help="dataset sample index (default 0)")
    sp.set_defaults(run=run)
    return sp


def overrides(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """The config values the command line replaces."""
    out: dict[str, dict[str, Any]] = {}
    if getattr(args, "backend", None):
        out.setdefault("backend", {})["name"] = args.backend
    if getattr(args, "epochs", None) is not None:
        out.setdefault("training", {})["epochs"] = args.epochs
    if getattr(args, "seed", None) is not None:
        out.setdefault("conductances", {})["seed"] = args.seed
        out.setdefault("training", {})["seed"] = args.seed
    return out


def sample(experiment: Experiment, index: int) -> tuple[np.ndarray, np.ndarray]:
    """(inputs, targets) of --sample `index`."""
    data = experiment.dataset()
    if not 0 <= index < len(data):
        raise ValueError(f"--sample {index} is out of range: the dataset has samples 0 to {len(data) - 1}")
    return data.inputs[index], data.targets[index]


def numbers(text: str, option: str) -> list[float]:
    """'1e-9,1e-8' -> [1e-9, 1e-8]; a ValueError naming the option otherwise."""
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError as exc:
        raise ValueError(
            f"{option} {text!r} is not a comma-separated list of numbers, e.g. 1e-8,1e-7"
        ) from exc
    if not values or any(not (np.isfinite(v) and v > 0) for v in values):
        raise ValueError(f"{option} {text!r} must list numbers > 0, e.g. 1e-8,1e-7")
    return values


def names(text: str | None) -> list[str] | None:
    """'vdm, pcm' -> ['vdm', 'pcm']; None when not given."""
    return [m.strip() for m in text.split(",") if m.strip()] if text else None


class StopFlag:
    """While entered, SIGTERM and Ctrl-C only raise a flag: the work checks it between samples or
    tasks (`check` raises `Interrupted`), so nothing is cut in half and files stay whole."""

    def __init__(self) -> None:
        self.caught: str | None = None
        self._event = threading.Event()
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopFlag:
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._previous[sig] = signal.signal(sig, self._raise)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for sig, old in self._previous.items():
            signal.signal(sig, old)

    def _raise(self, signum: int, frame: FrameType | None) -> None:
        self.caught = self.caught or signal.Signals(signum).name
        self._event.set()

    @property
    def requested(self) -> bool:
        return self.caught is not None

    def check(self) -> None:
        if self.caught is not None:
            raise Interrupted(self.caught)

    def wait(self) -> None:
        """Block until a signal arrives."""
        while not self._event.wait(0.5):
            pass
