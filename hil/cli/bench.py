"""`hil bench-check`, `hil safe` and `hil emulate`: a bench's instruments, real or emulated."""

from __future__ import annotations

import argparse
import copy
import os
import sys
from pathlib import Path
from typing import Any

import tomli_w

from hil import config, runlog
from hil.backends import open_backend
from hil.cli.common import EXIT_FAILED, EXIT_USAGE, StopFlag


def cmd_bench_check(args: argparse.Namespace) -> int:
    """Connect, identify and configure every instrument, report them, leave everything safe."""
    experiment = config.load(args.config)
    if experiment.bench is None:
        raise ValueError(
            f"{args.config} is an experiment config: give a bench config (one with a [bench] table)"
        )
    backend = open_backend(experiment)
    try:
        identity = backend.identity()
        backend.check()  # type: ignore[attr-defined]
    finally:
        backend.close()
    print(
        f"{identity.description}: {len(identity.instruments)} instruments, all identified, outputs off, "
        "relays open"
    )
    for inst in identity.instruments:
        print(f"  {inst['name']:>8s}  {inst['model']:<16s} {inst['address']:<40s} {inst['idn']}")
    return 0


def cmd_safe(args: argparse.Namespace) -> int:
    """Bring a bench to its safe state after the process that drove it died: connect, identify,
    every output to 0 and off, every relay open, every pot at the safe code, read it all back and
    report each instrument. A bench another live process holds is refused, with who holds it."""
    from drivers import benchconfig
    from drivers.bench import make_safe

    bench = benchconfig.read(args.config)
    if bench.emulated:
        print(
            f"hil: error: {args.config} is an emulated bench: its emulators live only as long as the run "
            "that started them, so there is nothing left to make safe",
            file=sys.stderr,
        )
        return EXIT_USAGE
    reports = make_safe(bench)
    bad = [r for r in reports if not r.safe]
    width = max(len(r.name) for r in reports)
    for r in reports:
        print(f"  {r.name:>{width}s}  {r.model:<16s} {'safe' if r.safe else 'NOT SAFE':<8s}  {r.detail}")
    if bad:
        print(
            f"hil: error: {', '.join(r.name for r in bad)} not made safe: make sure each is on and "
            "connected, then run `hil safe` again (or switch its outputs off at its front panel)",
            file=sys.stderr,
        )
        return EXIT_FAILED
    print(f"{args.config}: {len(reports)} instruments safe: outputs off, relays open, pots at safe codes")
    return 0


def served_config(bench: config.BenchFile, experiment: Path, addresses: dict[str, str], out: Path) -> str:
    """The bench config with its instruments at `addresses` and no emulator of its own: what a user
    points `hil bench-check` and `hil train` at while `hil emulate` serves."""
    tables: dict[str, Any] = copy.deepcopy(bench.tables)
    tables["bench"]["emulated"] = False
    tables["bench"]["experiment"] = os.path.relpath(experiment.resolve(), out.resolve().parent)
    for name, address in addresses.items():
        tables["instruments"][name]["address"] = address
    header = (
        f"# Written by `hil emulate {bench.path.name} --write-config {out.name}`: {bench.path.name}\n"
        "# with every instrument at the address of the emulator serving it, while that command runs.\n\n"
    )
    return header + tomli_w.dumps(tables)


def cmd_emulate(args: argparse.Namespace) -> int:
    """Serve a virtual bench for a bench config until Ctrl-C or SIGTERM."""
    from sim.factory import bench_config
    from sim.virtual.bench import VirtualBench

    experiment = config.load(args.config)
    bench = bench_config(experiment)
    out = Path(args.write_config) if args.write_config else None
    if out is not None:
        runlog.refuse_overwrite(out, args.force, "--write-config")
        out.parent.mkdir(parents=True, exist_ok=True)
    with StopFlag() as stop:
        virtual = VirtualBench(bench, experiment.network()).start()
        try:
            print(f"virtual bench for {args.config}: {len(virtual.servers)} instruments")
            for name, address in virtual.addresses.items():
                print(f"  {name:>8s}  {address}")
            if out is not None:
                assert experiment.bench is not None
                out.write_text(served_config(experiment.bench, experiment.path, virtual.addresses, out))
                print(f"bench config for these addresses: {out}")
            print("serving; Ctrl-C stops", flush=True)
            stop.wait()
        finally:
            virtual.stop()
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    check = sub.add_parser(
        "bench-check",
        help="connect to a bench, identify every instrument, leave it safe",
        description=cmd_bench_check.__doc__,
    )
    check.add_argument("config", help="bench config (TOML)")
    check.set_defaults(run=cmd_bench_check)
    safe = sub.add_parser(
        "safe",
        help="bring a bench to its safe state (after a run died) and read it back",
        description=cmd_safe.__doc__,
    )
    safe.add_argument("config", help="bench config (TOML)")
    safe.set_defaults(run=cmd_safe)
    emulate = sub.add_parser(
        "emulate", help="serve a virtual bench for a bench config", description=cmd_emulate.__doc__
    )
    emulate.add_argument("config", help="bench config (TOML)")
    emulate.add_argument(
        "--write-config",
        metavar="OUT",
        help="also write a bench config that points at the emulators (for bench-check and train)",
    )
    emulate.add_argument("--force", action="store_true", help="with --write-config: replace an existing file")
    emulate.set_defaults(run=cmd_emulate)
