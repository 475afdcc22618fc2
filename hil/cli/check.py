"""`hil check CONFIG`: every check that needs no instrument, and one line of verdict.

The same checks every other command runs first (`hil.config.load`): the keys and their windows,
the ranges, the sizes and the simulator's cost, the circuit against its data set, and for a
bench config its tables and wiring against the network, the limits against the data set's
levels and the pots against the device range. Nothing is built beyond the network description,
nothing is written, no instrument is touched.
"""

from __future__ import annotations

import argparse

from hil import config
from hil.cli.common import add_command, overrides


def verdict(experiment: config.Experiment, shown: str) -> str:
    """The one line `hil check` prints for a config that passed."""
    network = experiment.network()
    backend = experiment["backend"]["name"]
    if experiment.dry_run:
        backend += " (dry run of the bench)"
    return f"{shown}: ok ({network.name}, {len(network.conductances)} conductances, {backend})"


def cmd_check(args: argparse.Namespace) -> int:
    """Check a config as every command would before it starts; print one line."""
    experiment = config.load(args.config, overrides(args))
    print(verdict(experiment, args.config))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    add_command(
        sub,
        "check",
        cmd_check,
        "check a config (experiment or bench) without running anything",
        "Run every check that needs no instrument on an experiment or bench config and print one line: "
        "'CONFIG: ok (network, N conductances, backend)', or the error and exit code 2. Nothing is "
        "written and no instrument is touched.",
        sample=False,
    )
