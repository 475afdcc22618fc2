"""`hil calibrate-pots BENCH`: each pot's conductance measured in-circuit against its code, a fit
of R_W and R_AB, out-of-spec parts named, and the table the bench config then loads
(`[instruments.NAME] calibration`). How each pot is measured: `drivers.calibration`.

Everything is checked before an instrument is touched: the codes, the output file, and that every
pot's terminals can be observed on this bench. The bench's own safety applies throughout (limits,
ratings, compliance), and it is left safe at the end, also on a failure or Ctrl-C.
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Callable
from pathlib import Path

from drivers import benchconfig
from drivers import calibration as cal
from drivers.bench import open_bench
from drivers.models import POTS
from drivers.pots import TAPS, Calibration
from hil import config, runlog
from hil.cli.common import EXIT_INTERRUPTED, StopFlag
from hil.interface import Backend
from hil.train import Interrupted


def parse_codes(text: str) -> list[int]:
    """ "0-15,32,255" → sorted distinct codes; at least two (a fit has two unknowns)."""
    codes: set[int] = set()
    for word in text.split(","):
        m = re.fullmatch(r"\s*(\d{1,3})\s*(?:-\s*(\d{1,3})\s*)?", word)
        if m is None:
            raise ValueError(
                f"--codes {text!r}: {word!r} is not a code or a range a-b: give e.g. 0-15,32,255"
            )
        low = int(m.group(1))
        high = int(m.group(2)) if m.group(2) else low
        if not 0 <= low <= high < TAPS:
            raise ValueError(f"--codes {text!r}: {word.strip()!r} is not within 0-{TAPS - 1}: fix it")
        codes.update(range(low, high + 1))
    if len(codes) < 2:
        raise ValueError(f"--codes {text!r} gives {len(codes)} code: give at least two (R_W and R_AB)")
    return sorted(codes)


def cmd_calibrate_pots(args: argparse.Namespace) -> int:
    path = Path(args.config)
    # Unread tables: this command writes them (a missing or stale one is no reason to refuse).
    bench = benchconfig.read(path, calibrations=False)
    codes = parse_codes(args.codes) if args.codes else list(cal.ALL_CODES)
    if not 0 < args.volts <= 1.0:
        raise ValueError(f"--volts {args.volts} must be above 0 and at most 1 V (across a pot under test)")
    if not 0 < args.max_current <= 5e-3:
        raise ValueError(
            f"--max-current {args.max_current} must be above 0 and at most 5e-3 A (an AD5206's continuous "
            "wiper rating)"
        )
    experiment = config.load(bench.experiment)
    network = experiment.network()
    edges = args.edges.split(",") if args.edges else list(network.edge_names)
    unknown = [e for e in edges if e not in bench.pots]
    if unknown:
        raise ValueError(
            f"--edges: {unknown[0]} has no pot in {path}'s [pots]: name edges of {sorted(bench.pots)}"
        )
    plans = cal.plan(network, list(bench.nudges), list(bench.probe_routes), edges)
    banks = sorted({bench.pots[e][0] for e in edges})
    outputs = {bank: _output(path, bench, bank, args.out, len(banks)) for bank in banks}
    for bank, out in outputs.items():
        if out != bench.instruments[bank].calibration:
            runlog.refuse_overwrite(out, args.force, "--out")
    parts = {bank: spec.pot_model() for bank, spec in bench.of_role(POTS).items()}
    seed = int(experiment["training"]["seed"])

    from sim.factory import twin_predictor

    def serve() -> tuple[dict[str, str], Callable[[], None]]:
        from sim.virtual.bench import VirtualBench

        virtual = VirtualBench(bench, network, seed=seed).start()
        return virtual.addresses, virtual.stop

    levels = cal.Levels(args.volts, max_current=args.max_current, max_nudge=bench.limits["max_nudge_current"])
    with StopFlag() as stop:
        print(
            f"{path}: calibrating {len(plans)} pots at {len(codes)} codes "
            f"({'virtual bench' if bench.emulated else 'instruments'}), ≤ {args.volts:g} V across and "
            f"≤ {args.max_current:g} A through a pot",
            flush=True,
        )
        backend: Backend = open_bench(
            bench,
            network,
            experiment.hyper().method,
            experiment.dataset().inputs,
            serve if bench.emulated else None,
            predict=twin_predictor(network),
        )
        interrupted = ""
        try:
            fits = cal.calibrate(
                backend,  # type: ignore[arg-type]
                plans,
                bench.pots,
                parts,
                codes,
                levels,
                progress=lambda line: print(f"  {line}", flush=True),
                check=stop.check,
            )
        except Interrupted as exc:
            interrupted = str(exc.args[0]) if exc.args else "a signal"
        finally:
            try:
                backend.safe_state()
            finally:
                backend.close()
    record = getattr(backend, "rating_record", {})
    if record.get("settles"):
        print(
            f"{record['settles']} settles, every one predicted within the pots' ratings first: largest pot "
            f"terminal read {record['largest_terminal_volts']:.3g} V, largest wiper current "
            f"{record['largest_wiper_current']:.3g} A (by the nominal conductances)"
        )
    if interrupted:
        print(f"hil: {interrupted}: stopped between two readings; the bench is safe, nothing was written")
        return EXIT_INTERRUPTED
    warned = 0
    for fit in fits:
        for problem in fit.problems(parts[fit.bank]):
            print(f"warning: pot {fit.edge} ({fit.bank}.{fit.channel}) out of spec: {problem}")
            warned += 1
    note = f"Written by `hil calibrate-pots {path.name}`: in-circuit conductance per code and the fit."
    for bank, out in outputs.items():
        written = {f.channel: f for f in _kept(out, bank, bench.instruments[bank].channels)}
        written.update({f.channel: f for f in fits if f.bank == bank})
        cal.save(out, bank, list(written.values()), note)
        kept = len(written) - sum(f.bank == bank for f in fits)
        print(f"calibration of {bank}: {out}" + (f" (kept {kept} pots measured before)" if kept else ""))
    tables = {f.edge: Calibration(f.table()) for f in fits}
    low, high = cal.common_range(tables)
    hyper = experiment.hyper()
    g_min, g_max = max(hyper.g_min, low), min(hyper.g_max, high)
    print(f"every calibrated pot realises {low:.4g} to {high:.4g} S")
    if (g_min, g_max) != (hyper.g_min, hyper.g_max):
        print(
            f"with it, the experiment's [conductances] g_min, g_max = {hyper.g_min:g}, {hyper.g_max:g} S "
            f"are narrowed to {g_min:.4g}, {g_max:.4g} S"
        )
    else:
        print(f"the experiment's device range {hyper.g_min:g} to {hyper.g_max:g} S is inside it")
    for bank, out in outputs.items():
        if bench.instruments[bank].calibration != out:
            relative = os.path.relpath(out.resolve(), path.resolve().parent)
            print(f'load it: add  calibration = "{relative}"  to [instruments.{bank}] in {path}')
    if warned:
        print(f"{warned} out-of-spec figure(s): check those parts (the table still maps what they do)")
    return 0


def _kept(out: Path, bank: str, channels: int) -> list[cal.PotFit]:
    """The pots an earlier run wrote to `out` (calibrating some edges keeps the others' tables)."""
    if not out.exists():
        return []
    try:
        return cal.read_fits(out, bank, channels)
    except cal.CalibrationError:
        return []  # not a table of this bank (--force was given): replaced whole


def _output(path: Path, bench: benchconfig.BenchConfig, bank: str, out: str | None, banks: int) -> Path:
    if out is not None:
        if banks > 1:
            raise ValueError(
                f"--out names one file, and the pots to calibrate sit on {banks} banks: leave --out out "
                "(each bank's file is named after it) or calibrate one bank's edges (--edges)"
            )
        return Path(out)
    configured = bench.instruments[bank].calibration
    return configured if configured is not None else path.with_name(f"{path.stem}-{bank}-calibration.toml")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "calibrate-pots",
        help="measure every pot's conductance against code in-circuit, fit R_W and R_AB, write the table",
        description=(
            "Each pot's conductance at every code (or --codes), measured in-circuit with the bench's own "
            "instruments (a source's current over the drop across its pot; KCL at a nudged output for "
            "the pots that join it); R_W and R_AB fitted per pot, out-of-spec parts named (AD5206 "
            "datasheet: R_AB ±30 %, R_W ≤ 100 Ω), and the table written for the bench config's "
            "[instruments.NAME] calibration, which makes codes follow the measured conductances and "
            "narrows the experiment's g range to what every pot realises."
        ),
    )
    p.add_argument("config", help="bench config (TOML)")
    p.add_argument("--codes", help="codes to measure, e.g. 0-15,32,64,255 (default: all 256)")
    p.add_argument("--edges", help="comma-separated edges to calibrate (default: every pot)")
    p.add_argument(
        "--out",
        help="table file (default: the bank's calibration key, else BENCH-BANK-calibration.toml by BENCH)",
    )
    p.add_argument("--force", action="store_true", help="replace an existing --out file")
    p.add_argument("--volts", type=float, default=0.2, help="V across a pot under test (default 0.2)")
    p.add_argument("--max-current", type=float, default=1e-3, help="A through any pot at most (default 1e-3)")
    p.set_defaults(run=cmd_calibrate_pots)
