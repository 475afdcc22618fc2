"""`hil watch`: a live view of a training, read from its run log while `hil train` writes it.

`hil train` commits the run log after every epoch by replacing the file whole, so re-reading it
(`hil.runlog.read`) shows each finished epoch and never gets in the writer's way. The view draws
the run-log panels of `hil report` (error, accuracy, conductances per layer) into a window when
there is a display, or into a PNG replaced atomically each time the run log grows. It ends when
the run log's status stops being "running": "completed", "interrupted", "failed: ...", or a
writer that died without closing the log (which `runlog.read` reports).

Reading, drawing and the refresh loop take their clock, sleep and stop check as arguments, so
tests drive the loop against a real training without timing anything.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from hil import runlog
from hil.studies import report

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure as MplFigure
    from matplotlib.lines import Line2D

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
SIZE = (10.0, 7.0)  # inches: error and accuracy above, the conductance layers below
SLICE = 0.25  # s: the longest single sleep, so a stop request is seen within it
RUNNING = "running"  # `runlog.Run.status` while its writer runs
# Interactive backends that open no desktop window (a browser or a notebook instead).
NOT_A_WINDOW = frozenset({"nbagg", "notebook", "webagg"})


def default_png(path: Path) -> Path:
    """RUN-watch.png next to RUN.h5."""
    return path.with_name(f"{path.stem}-watch.png")


# ---------------------------------------------------------------------------------------- reading
def try_read(path: Path) -> runlog.Run | None:
    """The run log as it is now; None while it does not exist or cannot be read yet (retry later).

    Raises ValueError when the file is there but is not a hil run log: waiting would not help.
    """
    if path.is_dir():
        raise ValueError(f"{path} is a directory, not a run log: give the .h5 file hil train writes")
    try:
        with path.open("rb") as f:
            head = f.read(len(HDF5_SIGNATURE))
    except FileNotFoundError:
        return None
    if not HDF5_SIGNATURE.startswith(head):
        raise ValueError(
            f"{path} is not a hil run log (not an HDF5 file): give the .h5 file hil train writes"
        )
    if len(head) < len(HDF5_SIGNATURE):
        return None  # not whole yet (being copied into place)
    try:
        return runlog.read(path)
    except (OSError, KeyError, RuntimeError):
        # Replaced while being opened, or a file of another hil version: look again later.
        return None


def total_epochs(run: runlog.Run) -> int | None:
    epochs = report.training_setting(run, "epochs")
    return None if epochs is None else int(epochs)


def progress(run: runlog.Run) -> str:
    """'3 of 6 epochs' (or '3 epochs' when the config does not say how many)."""
    total = total_epochs(run)
    return f"{run.epochs} of {total} epochs" if total is not None else f"{run.epochs} epochs"


# ---------------------------------------------------------------------------------------- drawing
class LiveView:
    """The watcher's figure: error and accuracy above, one conductance panel per layer below.

    The axes are made on the first `draw` (the number of layers comes from the run log) and
    cleared and redrawn on each later one; `lines` holds what the last draw plotted.
    """

    def __init__(self, figure: MplFigure) -> None:
        self.figure = figure
        self.lines: dict[str, list[Line2D]] = {}
        self._axes: tuple[Axes, Axes, list[Axes]] | None = None

    def draw(self, run: runlog.Run) -> None:
        if self._axes is None:
            rows = self.figure.add_gridspec(2, 1, height_ratios=(1, 1.1))
            top, bottom = self.figure.add_subfigure(rows[0]), self.figure.add_subfigure(rows[1])
            error, accuracy = top.subplots(1, 2, width_ratios=(2, 1))
            layers = list(bottom.subplots(1, len(report.layer_levels(run)), squeeze=False)[0])
            self._axes = (error, accuracy, layers)
        error, accuracy, layers = self._axes
        for ax in (error, accuracy, *layers):
            ax.clear()
        self.lines = {
            "error": [report.draw_error(error, run)],
            "accuracy": [report.draw_accuracy(accuracy, run)],
            "conductances": report.draw_conductances(layers, run),
        }
        state = "running" if run.status == RUNNING else f"ended: {run.status}"
        self.figure.suptitle(f"{run.path.name} ({run.backend}): {progress(run)}, {state}")


def save_png(figure: MplFigure, png: Path) -> None:
    """Replace `png` in one step, so a viewer never opens a half-written file."""
    png.parent.mkdir(parents=True, exist_ok=True)
    partial = png.with_name(f".{png.name}.{os.getpid()}.partial")
    try:
        figure.savefig(partial, format="png", dpi=report.DPI)
        os.replace(partial, png)
    finally:
        partial.unlink(missing_ok=True)


class Window(Protocol):
    """A figure on screen: `pause` keeps it responsive while waiting."""

    figure: MplFigure

    def show(self) -> None: ...
    def pause(self, seconds: float) -> None: ...
    def closed(self) -> bool: ...


class _PyplotWindow:
    def __init__(self, figure: MplFigure) -> None:
        self.figure = figure

    def show(self) -> None:
        self.figure.canvas.draw_idle()
        self.pause(0.01)

    def pause(self, seconds: float) -> None:
        import matplotlib.pyplot as plt

        plt.pause(seconds)

    def closed(self) -> bool:
        import matplotlib.pyplot as plt

        return not plt.fignum_exists(self.figure.number)


def open_window() -> Window | None:
    """A window on the display, or None where there is no display or no GUI backend."""
    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return None
    try:
        import matplotlib.pyplot as plt
        from matplotlib.backends import BackendFilter, backend_registry

        interactive = set(backend_registry.list_builtin(BackendFilter.INTERACTIVE)) - NOT_A_WINDOW
        if plt.get_backend().lower() not in interactive:
            return None
        figure = plt.figure(figsize=SIZE, layout="constrained")
        if figure.canvas.manager is not None:
            figure.canvas.manager.set_window_title("hil watch")
        plt.show(block=False)
    except Exception:  # GUI toolkits raise their own errors (TclError, ...) for an unusable display
        return None
    return _PyplotWindow(figure)


# ---------------------------------------------------------------------------------------- the loop
@dataclass(frozen=True)
class Ended:
    """How watching ended: `reason` is "run ended", "once", "stopped" or "window closed"."""

    reason: str
    run: runlog.Run
    png: Path

    @property
    def status(self) -> str:
        return self.run.status

    def line(self) -> str:
        if self.reason == "run ended" and self.status in ("completed", "interrupted"):
            what = f"run {self.status} after {progress(self.run)}"
        elif self.reason == "run ended":
            what = f"run ended after {progress(self.run)} ({self.status})"
        elif self.reason == "once":
            what = f"run {self.status}: {progress(self.run)} so far"
        else:
            what = f"watch {self.reason} at {progress(self.run)} ({self.status})"
        return f"{what}; figure in {self.png}"


@dataclass(frozen=True)
class Pacing:
    """Time as the loop sees it; tests replace it."""

    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic
    stop: Callable[[], bool] = lambda: False


def _pause(seconds: float, pacing: Pacing, window: Window | None) -> None:
    """Wait `seconds` in short slices, returning early on a stop request or a closed window."""
    end = pacing.clock() + seconds
    while not pacing.stop() and not (window is not None and window.closed()):
        left = end - pacing.clock()
        if left <= 0:
            return
        (window.pause if window is not None else pacing.sleep)(min(left, SLICE))


def wait_for_run(path: Path, wait: float, pacing: Pacing, say: Callable[[str], None]) -> runlog.Run | None:
    """The run log once it can be read; None if stopped first; FileNotFoundError after `wait` s."""
    start = pacing.clock()
    told = False
    while (run := try_read(path)) is None:
        if pacing.clock() - start >= wait:
            what = "does not exist" if not path.exists() else "could not be read as a run log"
            waited = f" after waiting {wait:g} s" if wait > 0 else ""
            raise FileNotFoundError(
                f"{path} {what}{waited}: start `hil train CONFIG --out {path}` first, or give --wait "
                "the seconds to wait for it"
            )
        if not told:
            say(f"waiting up to {wait:g} s for the run log {path}")
            told = True
        if pacing.stop():
            return None
        pacing.sleep(min(SLICE, max(wait - (pacing.clock() - start), 0.0)))
    return run


def watch(
    path: Path,
    png: Path,
    *,
    interval: float = 2.0,
    once: bool = False,
    wait: float = 60.0,
    window: Window | None = None,
    pacing: Pacing | None = None,
    say: Callable[[str], None] = lambda message: None,
    on_refresh: Callable[[runlog.Run, LiveView], None] = lambda run, view: None,
) -> Ended | None:
    """Draw the run log at `path` each time it grows, until its run ends (or `once`, a stop
    request, a closed window). Without a window the PNG is replaced on every refresh; with one it
    is written at the end. None when stopped before the run log appeared."""
    if interval <= 0:
        raise ValueError(f"--interval {interval:g} must be > 0 seconds, e.g. 2")
    pacing = pacing or Pacing()
    run = wait_for_run(path, wait, pacing, say)
    if run is None:
        return None
    view = LiveView(window.figure if window is not None else report.new_figure(SIZE))
    drawn: tuple[int, str] | None = None
    while True:
        if (run.epochs, run.status) != drawn:
            drawn = (run.epochs, run.status)
            view.draw(run)
            if window is None:
                save_png(view.figure, png)
            else:
                window.show()
            on_refresh(run, view)
        reason = _reason(run, once, pacing, window)
        if reason is not None:
            break
        _pause(interval, pacing, window)
        run = try_read(path) or run  # a read that failed this time (file being replaced): next time
    if window is not None:
        save_png(view.figure, png)
    return Ended(reason, run, png)


def _reason(run: runlog.Run, once: bool, pacing: Pacing, window: Window | None) -> str | None:
    if run.status != RUNNING:
        return "run ended"
    if once:
        return "once"
    if pacing.stop():
        return "stopped"
    if window is not None and window.closed():
        return "window closed"
    return None
