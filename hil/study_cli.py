"""`hil sweep` and `hil report`: the method studies (registered into the `hil` parser)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    """Add the study commands to `hil`'s subparsers."""
