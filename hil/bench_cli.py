"""`hil bench-check` and `hil emulate`: bench commands (registered into the `hil` parser)."""

from __future__ import annotations

import argparse
import signal
import threading

from hil import config as config_mod


def _bench_experiment(path: str) -> tuple[config_mod.Experiment, object]:
    from drivers import benchconfig

    bench = benchconfig.read(path)
    return config_mod.load(path), bench


def cmd_bench_check(args: argparse.Namespace) -> int:
    """Connect, identify and configure every instrument, report them, leave everything safe."""
    from sim.factory import open_backend

    experiment, _ = _bench_experiment(args.config)
    network = experiment.network()
    backend = open_backend(
        "bench", network, experiment["backend"], experiment.hyper().method, experiment.dataset().inputs
    )
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


def cmd_emulate(args: argparse.Namespace) -> int:
    """Serve a virtual bench for a bench config until Ctrl-C or SIGTERM."""
    from sim.virtual.bench import VirtualBench

    experiment, bench = _bench_experiment(args.config)
    virtual = VirtualBench(bench, experiment.network()).start()  # type: ignore[arg-type]
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    print(f"virtual bench for {args.config}: {len(virtual.servers)} instruments")
    for name, address in virtual.addresses.items():
        print(f"  {name:>8s}  {address}")
    print("serving; Ctrl-C stops", flush=True)
    stop.wait()
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
    emulate = sub.add_parser(
        "emulate", help="serve a virtual bench for a bench config", description=cmd_emulate.__doc__
    )
    emulate.add_argument("config", help="bench config (TOML)")
    emulate.set_defaults(run=cmd_emulate)
