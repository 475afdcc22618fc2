"""`hil`: train, solve, print netlists, check gradients, run studies and drive benches.

One parser; the commands live in `run` (train, solve, netlist), `watch` (the live view of a
training), `study` (gradcheck, sweep, report), `bench` (bench-check, safe, emulate), `noise` (how noisy the
readings are, and the nudge to use), `calibrate` (calibrate-pots), `keys` (the config reference) and
`check` (a config checked whole, touching nothing). Nothing imports this
package: it is the top of the stack.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from hil.cli import bench, calibrate, check, keys, noise, run, study, watch
from hil.cli.common import EXIT_FAILED, EXIT_USAGE
from hil.config import ConfigError
from hil.interface import BackendError


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="hil", description="Train physical resistive networks with Equilibrium Propagation."
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in (run, check, study, bench, noise, calibrate, keys, watch):
        group.register(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return int(args.run(args))
    except (ConfigError, FileExistsError, FileNotFoundError, ValueError) as exc:
        print(f"hil: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except BackendError as exc:
        print(f"hil: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
