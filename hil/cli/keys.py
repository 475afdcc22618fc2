"""`hil keys`: every section and key of experiment and bench configs, from their schemas."""

from __future__ import annotations

import argparse
from typing import Any

from hil.config import REQUIRED, SCHEMA, Key


def _default(key: Key) -> str:
    if key.default is REQUIRED:
        return "required"
    if key.default == "":
        return "—"
    value: Any = key.default
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, dict) and not value:
        return "{}"
    return repr(value)


def _cell(text: str) -> str:
    return text.replace("|", "\\|")  # a bare | would end the Markdown cell


def _rows(file: str, tables: dict[str, dict[str, Key]]) -> list[str]:
    return [
        f"| {file} | `[{section}]` | `{name}` | {_cell(_default(key))} | {_cell(key.doc)} |"
        for section, keys in tables.items()
        for name, key in keys.items()
    ]


def reference() -> str:
    """The config reference as a Markdown table (the README carries it verbatim)."""
    from drivers.benchconfig import KEYS, MAPS

    lines = ["| file | section | key | default | meaning |", "|---|---|---|---|---|"]
    lines += _rows("experiment", SCHEMA)
    lines += _rows("bench", KEYS)
    lines += [f"| bench | `[{section}]` | *each entry* | — | {_cell(doc)} |" for section, doc in MAPS.items()]
    return "\n".join(lines) + "\n"


def cmd_keys(args: argparse.Namespace) -> int:
    print(reference(), end="")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    k = sub.add_parser(
        "keys",
        help="every config section and key, with defaults and meaning (Markdown)",
        description="Print the reference of experiment and bench config keys, generated from their schemas.",
    )
    k.set_defaults(run=cmd_keys)
