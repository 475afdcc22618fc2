"""Fault injection on the virtual bench: instruments that disconnect, stall, answer garbage, trip,
reset or power-cycle at points drawn from a seeded schedule, a trainer stopped by SIGTERM or
killed -9, a run log that cannot be written.

Every case asserts what a lab needs after it: `hil train` ends with exit code 1 (130 for a
SIGTERM) and one stderr line that names the instrument, no traceback, a run log whose status says
what happened, and every output off at 0 V, every relay open and every pot at its safe code, after
the run or after `hil safe` (which a dead instrument, or a killed trainer, leaves to do).
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

import drivers.bench
import hil.cli
from drivers import benchconfig
from drivers.models import MATRIX, POTS, SMU
from hil import config, runlog, train
from hil.backends import open_backend
from hil.cli.bench import served_config
from sim.virtual.bench import VirtualBench

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
EPOCHS = 3  # a short training: ~0.3 s on the virtual bench, a few hundred lines per instrument
TIMEOUT_S = 0.25  # the emulators answer in milliseconds; a stall then costs a quarter second
SEED = 20250611
SCHEDULED = 50

# What each role can suffer. A reset that keeps the session is left out for the matrix and the
# pots: the run puts a probe route or a pot code back at its next write, so such a reset can go
# unseen (see `BenchBackend.verify`); their power cycle is in.
LINE = ("disconnect", "stall", "garbage")
KINDS = {
    SMU: (*LINE, "reset", "power-cycle", "trip"),
    MATRIX: (*LINE, "power-cycle"),
    POTS: (*LINE, "power-cycle"),
}


@dataclass(frozen=True)
class Planned:
    instrument: str
    kind: str
    after: int  # lines the instrument serves before the fault strikes
    lasting: bool  # the instrument stays so for new connections too (dead, hung), until cleared

    def __str__(self) -> str:
        return f"{self.instrument}-{self.kind}{'-lasting' if self.lasting else ''}-after-{self.after}"


def _bench() -> tuple[config.Experiment, benchconfig.BenchConfig]:
    return config.load(CONFIGS / "bench-virtual.toml"), benchconfig.read(CONFIGS / "bench-virtual.toml")


def _serve(tmp_path: Path) -> tuple[VirtualBench, Path]:
    """A virtual bench and a bench config pointing at it, as `hil emulate --write-config` writes it."""
    experiment, bench = _bench()
    virtual = VirtualBench(bench, experiment.network()).start()
    path = tmp_path / "served.toml"
    assert experiment.bench is not None
    path.write_text(served_config(experiment.bench, experiment.path, virtual.addresses, path))
    return virtual, path


def _lines_per_instrument(tmp_path: Path) -> dict[str, tuple[int, int]]:
    """Lines each instrument has received once the bench is open, and once training is done: a
    fault drawn between the two strikes during training."""
    virtual, path = _serve(tmp_path)
    try:
        experiment = config.load(path, {"training": {"epochs": EPOCHS}})
        backend = open_backend(experiment)
        opened = {name: s.lines for name, s in virtual.servers.items()}
        try:
            train.train(backend, experiment.dataset(), experiment.start_conductances(), experiment.hyper())
            trained = {name: s.lines for name, s in virtual.servers.items()}
        finally:
            backend.close()
    finally:
        virtual.stop()
    return {name: (opened[name], trained[name]) for name in opened}


def schedule(spans: dict[str, tuple[int, int]], count: int, seed: int) -> list[Planned]:
    """`count` faults: instrument, kind, the line it strikes at (during training) and whether it
    lasts, each drawn from a generator seeded with `seed`."""
    rng = np.random.default_rng(seed)
    _, bench = _bench()
    names = sorted(spans)
    planned = []
    for _ in range(count):
        name = names[rng.integers(len(names))]
        kinds = KINDS[bench.instruments[name].role]
        kind = kinds[rng.integers(len(kinds))]
        first, last = spans[name]
        after = int(rng.integers(first, last))
        planned.append(Planned(name, kind, after, kind in LINE and bool(rng.random() < 0.4)))
    return planned


@pytest.fixture(scope="module")
def spans(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[int, int]]:
    return _lines_per_instrument(tmp_path_factory.mktemp("calibration"))


@pytest.fixture
def short_timeouts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(drivers.bench, "ANSWER_TIMEOUT_S", TIMEOUT_S)


def _hil(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, list[str]]:
    """`hil ARGS` in this process: the exit code and the stderr lines (stdout stays in capsys)."""
    capsys.readouterr()
    code = hil.cli.main(list(args))
    captured = capsys.readouterr()
    print(captured.out, end="")
    assert "Traceback" not in captured.err
    return code, captured.err.strip().splitlines()


def _assert_safe_or_make_safe(
    capsys: pytest.CaptureFixture[str], virtual: VirtualBench, path: Path, needs_hil_safe: bool
) -> None:
    """Safe after the run; or, where the run could not reach an instrument, safe after `hil safe`
    once the instrument is back."""
    if not needs_hil_safe:
        assert virtual.unsafe() == []
        return
    virtual.clear_faults()
    code, err = _hil(capsys, "safe", str(path))
    assert code == 0, err
    assert virtual.unsafe() == []


# ---------------------------------------------------------------------------------------- the schedule
def test_the_schedule_is_seeded_and_strikes_every_instrument_with_every_kind(spans):
    planned = schedule(spans, SCHEDULED, SEED)
    assert planned == schedule(spans, SCHEDULED, SEED)
    assert {p.instrument for p in planned} == set(spans)
    assert {p.kind for p in planned} == {k for kinds in KINDS.values() for k in kinds}
    assert any(p.lasting for p in planned) and not all(p.lasting for p in planned if p.kind in LINE)


@pytest.mark.parametrize("index", range(SCHEDULED))
def test_an_instrument_fault_during_training_ends_the_run_cleanly(
    index, spans, tmp_path, capsys, short_timeouts
):
    fault = schedule(spans, SCHEDULED, SEED)[index]
    virtual, path = _serve(tmp_path)
    out = tmp_path / "run.h5"
    try:
        virtual.inject(fault.instrument, fault.kind, fault.after, fault.lasting)
        code, err = _hil(capsys, "train", str(path), "--out", str(out), "--epochs", str(EPOCHS))
        assert [hit.kind for hit in virtual.hits().get(fault.instrument, [])] == [fault.kind], fault
        assert code == 1, (fault, err)
        assert len(err) == 1 and err[0].startswith(f"hil: error: {fault.instrument}"), (fault, err)
        status = runlog.read(out).status
        assert status.startswith(f"failed: {fault.instrument}"), (fault, status)
        # A dead or hung instrument cannot be made safe by the run; the line says so and how.
        assert ("NOT SAFE" in err[0]) == fault.lasting, (fault, err)
        if fault.lasting:
            assert f"NOT SAFE: {fault.instrument}" in err[0] and "hil safe" in err[0]
        _assert_safe_or_make_safe(capsys, virtual, path, fault.lasting)
    finally:
        virtual.stop()


# ---------------------------------------------------------------------------------------- other moments
def test_a_fault_while_the_bench_opens_is_one_line_and_no_run_log(tmp_path, capsys, short_timeouts):
    virtual, path = _serve(tmp_path)
    out = tmp_path / "never.h5"
    try:
        virtual.inject("k26c", "stall", 6)  # while it is configured, before any output is on
        code, err = _hil(capsys, "train", str(path), "--out", str(out), "--epochs", str(EPOCHS))
        assert code == 1 and len(err) == 1 and err[0].startswith("hil: error: k26c at "), err
        assert "no answer" in err[0] and not out.exists()
        assert virtual.unsafe() == []
    finally:
        virtual.stop()


def test_a_link_dropped_while_making_the_bench_safe_is_opened_again(spans, tmp_path, capsys, short_timeouts):
    virtual, path = _serve(tmp_path)
    out = tmp_path / "run.h5"
    try:
        # The final check reads every channel, then safe_state's first line goes to a dropped link.
        trained = spans["k26a"][1]
        verify = 5  # k26a: two channels, output state and compliance each, then its error queue
        virtual.inject("k26a", "disconnect", trained + verify)
        code, err = _hil(capsys, "train", str(path), "--out", str(out), "--epochs", str(EPOCHS))
        assert virtual.hits()["k26a"][0].line.startswith("print(smua.source.func)"), virtual.hits()
        assert code == 0, err
        assert runlog.read(out).status == "completed"
        assert virtual.unsafe() == []
    finally:
        virtual.stop()


def test_a_reset_in_the_last_settles_is_caught_by_the_check_before_the_safe_state(
    spans, tmp_path, capsys, short_timeouts
):
    virtual, path = _serve(tmp_path)
    out = tmp_path / "run.h5"
    try:
        virtual.inject("k26d", "reset", spans["k26d"][1] - 1)  # its very last reading
        code, err = _hil(capsys, "train", str(path), "--out", str(out), "--epochs", str(EPOCHS))
        assert code == 1 and len(err) == 1, err
        assert "k26d.a: output off" in err[0] and "reset" in err[0]
        assert runlog.read(out).status.startswith("failed: k26d.a: output off")
        assert virtual.unsafe() == []
    finally:
        virtual.stop()


@pytest.mark.parametrize("index", range(3))
def test_sigterm_at_a_scheduled_moment_stops_between_samples_and_leaves_the_bench_safe(
    index, spans, tmp_path, capsys, short_timeouts
):
    total = sum(trained for _, trained in spans.values())
    at = int(np.random.default_rng(SEED + index).integers(total // 4, total))
    virtual, path = _serve(tmp_path)
    out = tmp_path / "run.h5"

    def send() -> None:
        while virtual.lines_received() < at:
            time.sleep(0.001)
        os.kill(os.getpid(), signal.SIGTERM)

    try:
        threading.Thread(target=send, daemon=True).start()
        code, err = _hil(capsys, "train", str(path), "--out", str(out), "--epochs", "1000")
        assert code == 130 and len(err) == 1 and err[0].startswith("hil: interrupted"), err
        assert runlog.read(out).status == "interrupted"
        assert virtual.unsafe() == []
    finally:
        virtual.stop()


def _trainer(path: Path, out: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "hil.cli", "train", str(path), "--out", str(out), "--epochs", "100000"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _until(condition, seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


@pytest.mark.parametrize("index", range(2))
def test_kill_9_of_the_trainer_leaves_a_log_that_says_so_and_hil_safe_makes_the_bench_safe(
    index, tmp_path, capsys
):
    virtual, path = _serve(tmp_path)
    out = tmp_path / "run.h5"
    try:
        proc = _trainer(path, out)
        _until(lambda: out.exists() and any(s.output for s in virtual.state.smus.values()))
        time.sleep(float(np.random.default_rng(SEED + 10 + index).uniform(0.05, 0.5)))
        # While the trainer lives, the bench is its own: hil safe refuses, naming it.
        code, err = _hil(capsys, "safe", str(path))
        assert code == 1 and len(err) == 1 and f"pid {proc.pid}" in err[0] and "in use" in err[0], err
        proc.kill()
        proc.communicate(timeout=30)
        assert virtual.unsafe() != []  # the run held outputs on; nobody switched them off
        assert runlog.read(out).status.startswith("stopped without closing its log")
        code, err = _hil(capsys, "safe", str(path))
        assert code == 0 and err == []
        assert "6 instruments safe" in capsys.readouterr().out
        assert virtual.unsafe() == []
    finally:
        virtual.stop()


# ---------------------------------------------------------------------------------------- the run log
def test_a_full_disk_ends_the_run_with_one_line_and_the_last_checkpoint_intact(
    tmp_path, capsys, monkeypatch, short_timeouts
):
    virtual, path = _serve(tmp_path)
    out = tmp_path / "run.h5"
    copy = runlog.shutil.copyfile
    commits = [0]

    def full_after_two(src, dst, *args, **kwargs):  # the log's commits copy it first
        commits[0] += 1
        if commits[0] > 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return copy(src, dst, *args, **kwargs)

    monkeypatch.setattr(runlog.shutil, "copyfile", full_after_two)
    try:
        code, err = _hil(capsys, "train", str(path), "--out", str(out), "--epochs", "10")
        assert code == 1 and len(err) == 1, err
        assert "cannot write the run log" in err[0] and "No space left on device" in err[0]
        assert "--resume" in err[0]
        run = runlog.read(out)
        assert run.epochs == 2 and run.status.startswith("stopped without closing its log")
        assert not list(tmp_path.glob(".run.h5.*.tmp"))
        assert virtual.unsafe() == []
    finally:
        virtual.stop()


def test_an_unwritable_run_log_is_one_line_before_training(tmp_path, capsys, monkeypatch, short_timeouts):
    virtual, path = _serve(tmp_path)
    out = tmp_path / "run.h5"

    def refuse(*args, **kwargs):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))

    monkeypatch.setattr(runlog.h5py, "File", refuse)
    try:
        code, err = _hil(capsys, "train", str(path), "--out", str(out), "--epochs", "10")
        assert code == 1 and len(err) == 1, err
        assert err[0].startswith(f"hil: error: cannot create the run log {out}")
        assert "Permission denied" in err[0]
        assert not out.exists() and virtual.unsafe() == []
    finally:
        virtual.stop()


# ---------------------------------------------------------------------------------------- the line server
class _Echo:
    def handle(self, line: str) -> str | None:
        return None if line.startswith("w") else f"ok {line}"


def test_the_line_server_plays_each_fault_once_or_until_cleared():
    from drivers.transport import LineFormat, TransportError, VisaTransport
    from sim.virtual.server import Fault, LineServer

    line = LineFormat("\n", "\n", TIMEOUT_S)
    server = LineServer(_Echo()).start()
    address = f"TCPIP::127.0.0.1::{server.port}::SOCKET"
    try:
        with pytest.raises(ValueError, match="plays disconnect, stall, garbage"):
            server.inject(Fault("melt", 0))
        server.inject(Fault("stall", 1))
        link = VisaTransport(address, line)
        assert link.query("a") == "ok a"
        with pytest.raises(TransportError, match=rf"no answer to 'b' within {TIMEOUT_S:g} s"):
            link.query("b")
        link.close()
        assert VisaTransport(address, line).query("c") == "ok c"  # a new session: served again
        server.inject(Fault("disconnect", 0, lasting=True))
        for _ in range(2):  # the instrument is gone for every new session too
            with pytest.raises(TransportError, match="connection lost awaiting the answer to 'd'"):
                VisaTransport(address, line).query("d")
        server.clear_fault()
        assert VisaTransport(address, line).query("e") == "ok e"
        assert [(h.kind, h.line_number, h.line) for h in server.hits] == [
            ("stall", 2, "b"),
            ("disconnect", 4, "d"),
        ]
    finally:
        server.stop()


def test_garbage_is_a_one_line_error_naming_the_instrument_whatever_the_bytes():
    from drivers.instrument import InstrumentError
    from drivers.pots import PotBridge
    from drivers.transport import LineFormat, SerialTransport, TransportError
    from sim.virtual.server import Fault, LineServer

    server = LineServer(_Echo()).start()
    try:
        server.inject(Fault("garbage", 0))
        link = SerialTransport(f"socket://127.0.0.1:{server.port}", LineFormat("\n", "\n", 1))
        bridge = PotBridge(link, "pots")
        text = r"^pots: answered '#\?%GARBLED%\?#' to 'POT:COUN\?', which does not parse"
        with pytest.raises(InstrumentError, match=text):
            bridge.channel_count  # text, but not a number  # noqa: B018
        with pytest.raises(TransportError, match=r"^pots at socket://127.0.0.1:\d+: answered b'\\xff\\xfe"):
            bridge.ask("x")  # not even text
        bridge.close()
    finally:
        server.stop()
