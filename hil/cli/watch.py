"""`hil watch`: follow a training from its run log, in a window or a PNG that keeps refreshing."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hil.cli.common import EXIT_FAILED, EXIT_INTERRUPTED, StopFlag

DEFAULT_WAIT = 60.0  # s a missing run log is waited for (the training may still be starting)


def cmd_watch(args: argparse.Namespace) -> int:
    from hil.studies import watch

    path = Path(args.run_log)
    png = Path(args.png) if args.png else watch.default_png(path)
    wait = args.wait if args.wait is not None else (0.0 if args.once else DEFAULT_WAIT)
    if wait < 0:
        raise ValueError(f"--wait {wait:g} must be ≥ 0 seconds")
    with StopFlag() as flag:
        # A window only for a live view; --png asks for the file, which a window would not refresh.
        window = None if args.once or args.png else watch.open_window()
        ended = watch.watch(
            path,
            png,
            interval=args.interval,
            once=args.once,
            wait=wait,
            window=window,
            pacing=watch.Pacing(stop=lambda: flag.requested),
            say=lambda message: print(f"hil: {message}", file=sys.stderr),
        )
    if ended is None:
        print(f"hil: stopped ({flag.caught}) before {path} appeared", file=sys.stderr)
        return EXIT_INTERRUPTED
    print(ended.line())
    if ended.reason == "stopped":
        return EXIT_INTERRUPTED
    if ended.reason == "run ended" and ended.status != "completed":
        return EXIT_FAILED
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    w = sub.add_parser(
        "watch",
        help="live view of a training from its run log",
        description=(
            "Follow a training while `hil train` writes its run log: error, accuracy and conductances "
            "per layer, redrawn as epochs finish. In a window where there is a display; otherwise (or "
            "with --png) into a PNG replaced every refresh. Ends by itself when the run ends, printing how "
            "it ended. Exit status: 0 run completed (or --once, or the window closed), 1 run "
            "interrupted or failed, 2 not a run log or it never appeared, 130 stopped by Ctrl-C or SIGTERM."
        ),
    )
    w.add_argument("run_log", metavar="RUN.h5", help="the run log `hil train --out` writes")
    w.add_argument(
        "--interval",
        type=float,
        default=2.0,
        metavar="S",
        help="seconds between looks at the run log (default 2)",
    )
    w.add_argument(
        "--png",
        metavar="OUT.png",
        help="write the view to this PNG instead of a window (default RUN-watch.png)",
    )
    w.add_argument(
        "--once", action="store_true", help="draw the run log as it is now into the PNG, then exit"
    )
    w.add_argument(
        "--wait",
        type=float,
        metavar="S",
        help=f"seconds to wait for a run log not there yet (default {DEFAULT_WAIT:g}; 0 with --once)",
    )
    w.set_defaults(run=cmd_watch)
