"""The grammar the emulated instruments speak, shared by every model: a SCPI front end (IEEE 488.2
common commands, a command table per model written in the manuals' notation) and a TSP front end
(the Lua statements scripts send to a Keithley TSP instrument).

SCPI (IEEE 488.2 §7, SCPI-99 vol. 1 §6-7), as the models' manuals describe it:
- headers are case-insensitive, each mnemonic in its short form (the manual's capitals, `VOLT`) or
  its long form (`VOLTAGE`) and nothing in between; `[...]` nodes may be left out; a `#` in a
  pattern takes a numeric suffix (`SOUR2`, `OUTP1`), 1 when absent;
- a line holds several commands separated by `;`; one that does not start with `:` continues
  from the previous command's branch (`:SOUR:VOLT 1;ILIM 1e-3`); common commands (`*RST`) leave
  the branch where it was; the replies of several queries come back on one line, `;`-separated;
- parameters: numbers (or MINimum, MAXimum, DEFault), booleans (ON, OFF, 1, 0), character data
  (short or long form), strings in single or double quotes, channel lists `(@1,2)`;
- errors go to a queue (-350 when it is full) and set the Standard Event Status Register bits
  (command error -1xx: CME, execution error -2xx: EXE, device-specific -3xx and positive: DDE,
  query error -4xx: QYE), read by `*ESR?`; `*STB?` shows the error queue (bit 2) and ESB (bit 5).

TSP (Series 2600B reference manual §5 "Introduction to TSP operation", 707B reference manual
§4): a line is a Lua chunk, compiled whole (a syntax error, -285, runs nothing), then run
statement by statement (a run-time error, -286, stops it there). Statements: assignments
`a.b.c = value` (spaces optional), calls `f(args)` (a value returned is dropped), `print(...)`
(values tab-separated, numbers with `format.asciiprecision` significant digits). Expressions:
numbers, strings, `true`/`false`/`nil`, names of attributes and constants, calls, unary minus
and + - * / on numbers. The Lua beyond that (local variables, loops, functions) is refused with
a syntax error: these emulators are not a Lua interpreter.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

# ---------------------------------------------------------------------------------------- errors


class Refused(Exception):
    """What the instrument puts in its error queue for a command it does not carry out."""

    def __init__(self, code: int, text: str) -> None:
        super().__init__(f"{code}, {text}")
        self.code, self.text = code, text


# SCPI-99 vol. 2 §21.8: the standard error codes the models share.
UNDEFINED_HEADER = (-113, "Undefined header")
SYNTAX = (-102, "Syntax error")
DATA_TYPE = (-104, "Data type error")
NOT_ALLOWED = (-108, "Parameter not allowed")
MISSING = (-109, "Missing parameter")
SUFFIX = (-114, "Header suffix out of range")
CHARACTER_DATA = (-141, "Invalid character data")
STRING_DATA = (-151, "Invalid string data")
CONFLICT = (-221, "Settings conflict")
OUT_OF_RANGE = (-222, "Data out of range")
OVERFLOW = (-350, "Queue overflow")

# IEEE 488.2 §11.5.1: Standard Event Status Register bits.
ESR_OPC, ESR_QYE, ESR_DDE, ESR_EXE, ESR_CME, ESR_PON = 1, 4, 8, 16, 32, 128


def refuse(error: tuple[int, str], detail: str = "") -> Refused:
    code, text = error
    return Refused(code, f"{text}; {detail}" if detail else text)


class ErrorQueue:
    """The instrument's error/event queue with the 488.2 status registers it feeds."""

    def __init__(self, size: int = 32) -> None:
        self.size = size
        self.entries: list[tuple[int, str]] = []
        self.esr = ESR_PON  # the power-on bit, until *ESR? or *CLS reads it away
        self.ese = 0
        self.sre = 0

    def push(self, code: int, text: str) -> None:
        if -199 <= code <= -100:
            self.esr |= ESR_CME
        elif -299 <= code <= -200:
            self.esr |= ESR_EXE
        elif -499 <= code <= -400:
            self.esr |= ESR_QYE
        else:
            self.esr |= ESR_DDE
        if len(self.entries) < self.size:
            self.entries.append((code, text))
        else:
            self.entries[-1] = OVERFLOW

    def pop(self) -> tuple[int, str] | None:
        return self.entries.pop(0) if self.entries else None

    def clear(self) -> None:
        """*CLS: the queue and the event register."""
        self.entries.clear()
        self.esr = 0

    def read_esr(self) -> int:
        value, self.esr = self.esr, 0
        return value

    def stb(self) -> int:
        """Status byte: bit 2 an error is queued, bit 5 an enabled event is set."""
        return (4 if self.entries else 0) | (32 if self.esr & self.ese else 0)

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self) -> Any:
        return iter(list(self.entries))


# ---------------------------------------------------------------------------------------- SCPI


@dataclass(frozen=True)
class _Node:
    long: str
    short: str
    optional: bool
    suffix: bool


_PATTERN_NODE = re.compile(r"(\[)?:([A-Za-z]+)(#)?\]?")
_TOKEN = re.compile(r"([A-Za-z_]+?)(\d*)")


def _compile(pattern: str) -> tuple[_Node, ...]:
    nodes = []
    for m in _PATTERN_NODE.finditer(pattern):
        mnemonic = m[2]
        short = "".join(ch for ch in mnemonic if ch.isupper())
        nodes.append(_Node(mnemonic.upper(), short, bool(m[1]), bool(m[3])))
    if "".join(m[0] for m in _PATTERN_NODE.finditer(pattern)) != pattern:
        raise ValueError(f"SCPI pattern {pattern!r} is not in the manual's notation")
    return tuple(nodes)


def _tokens(header: str) -> tuple[tuple[str, int | None], ...] | None:
    out = []
    for part in header.split(":"):
        m = _TOKEN.fullmatch(part)
        if m is None:
            return None
        out.append((m[1].upper(), int(m[2]) if m[2] else None))
    return tuple(out)


def _match(nodes: tuple[_Node, ...], tokens: tuple[tuple[str, int | None], ...]) -> tuple[int, ...] | None:
    """The numeric suffixes (1 when left out) of a header that fits the pattern, else None."""

    def walk(i: int, j: int, found: tuple[int, ...]) -> tuple[int, ...] | None:
        if i == len(nodes):
            return found if j == len(tokens) else None
        node = nodes[i]
        if j < len(tokens):
            name, suffix = tokens[j]
            if name in (node.short, node.long) and (suffix is None or node.suffix):
                taken = (suffix if suffix is not None else 1,) if node.suffix else ()
                result = walk(i + 1, j + 1, found + taken)
                if result is not None:
                    return result
        if node.optional:
            return walk(i + 1, j, found + ((1,) if node.suffix else ()))
        return None

    return walk(0, 0, ())


def split_outside(text: str, separators: str) -> list[str]:
    """`text` cut at the separators that are not inside quotes or parentheses."""
    parts, depth, quote, start = [], 0, "", 0
    for i, ch in enumerate(text):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch in separators and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return parts


@dataclass
class Call:
    """One command or query as received: the numeric suffixes of its header and its parameters."""

    header: str
    suffixes: tuple[int, ...]
    params: list[str]
    query: bool

    def count(self, low: int, high: int | None = None) -> None:
        high = low if high is None else high
        if len(self.params) < low:
            raise refuse(MISSING, self.header)
        if len(self.params) > high:
            raise refuse(NOT_ALLOWED, self.header)

    def word(self, i: int = 0) -> str:
        return self.params[i].strip().upper()

    def number(
        self,
        i: int = 0,
        low: float = -math.inf,
        high: float = math.inf,
        default: float | None = None,
        clip: bool = False,
    ) -> float:
        """NRf, or MINimum/MAXimum/DEFault; outside [low, high] a -222, or the nearest bound when
        the manual says the instrument clips."""
        if i >= len(self.params):
            raise refuse(MISSING, self.header)
        text = self.word(i)
        if text in ("MIN", "MINIMUM"):
            return low
        if text in ("MAX", "MAXIMUM"):
            return high
        if text in ("DEF", "DEFAULT") and default is not None:
            return default
        try:
            value = float(text)
        except ValueError:
            raise refuse(DATA_TYPE, f"{self.params[i].strip()!r} is not a number") from None
        if not math.isfinite(value):
            raise refuse(DATA_TYPE, f"{self.params[i].strip()!r} is not a number")
        if not low <= value <= high:
            if clip:
                return min(max(value, low), high)
            raise refuse(OUT_OF_RANGE, f"{value:g} is outside [{low:g}, {high:g}]")
        return value

    def boolean(self, i: int = 0) -> bool:
        if i >= len(self.params):
            raise refuse(MISSING, self.header)
        text = self.word(i)
        if text in ("ON", "OFF"):
            return text == "ON"
        try:
            return round(float(text)) != 0
        except ValueError:
            raise refuse(CHARACTER_DATA, f"{self.params[i].strip()!r} is not ON, OFF, 1 or 0") from None

    def choice(self, options: Iterable[str], i: int = 0) -> str:
        """Character data given in the manual's notation (`VOLTage`): the short form back."""
        if i >= len(self.params):
            raise refuse(MISSING, self.header)
        return keyword(self.word(i), options, self.header)

    def string(self, i: int = 0) -> str:
        if i >= len(self.params):
            raise refuse(MISSING, self.header)
        text = self.params[i].strip()
        if len(text) < 2 or text[0] not in "'\"" or text[-1] != text[0]:
            raise refuse(STRING_DATA, f"{text!r} is not a quoted string")
        return text[1:-1]

    def channels(self, i: int, allowed: Sequence[int]) -> list[int]:
        """A channel list `(@1,2)` or `(@1:2)` of the channels this model has."""
        text = self.params[i].strip() if i < len(self.params) else ""
        if not (text.startswith("(@") and text.endswith(")")):
            raise refuse(SYNTAX, f"{text!r} is not a channel list (@...)")
        found: list[int] = []
        for item in text[2:-1].split(","):
            first, _, last = item.strip().partition(":")
            try:
                span = range(int(first), int(last or first) + 1)
            except ValueError:
                raise refuse(SYNTAX, f"channel {item.strip()!r}") from None
            for ch in span:
                if ch not in allowed:
                    raise refuse(OUT_OF_RANGE, f"channel {ch} does not exist")
                found.append(ch)
        return found


def keyword(word: str, options: Iterable[str], where: str = "") -> str:
    """`word` (any case) as one of `options` written in the manual's notation; the short form."""
    for option in options:
        short = "".join(ch for ch in option if ch.isupper() or ch.isdigit())
        if word.upper() in (short, option.upper()):
            return short
    raise refuse(CHARACTER_DATA, f"{word!r} ({where})" if where else repr(word))


Setter = Callable[[Call], None]
Getter = Callable[[Call], str]


@dataclass
class Scpi:
    """One line of a model's command table: a header in the manual's notation (with `#` for a
    numeric suffix) and what the command and its query do. `manual` says where the model's manual
    describes it."""

    pattern: str
    set: Setter | None = None
    get: Getter | None = None
    manual: str = ""
    nodes: tuple[_Node, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.nodes = _compile(self.pattern)


def nr1(flag: bool | int) -> str:
    return str(int(flag))


def nr3(value: float) -> str:
    return f"{value:.9E}"


class ScpiFrontEnd:
    """A SCPI instrument: `handle(line)` parses, runs and answers (None when nothing is to be
    sent back). Subclasses give `table()` and the 488.2 behaviour of `*RST` (`reset`)."""

    identity: str = ""
    options: str = "0"
    queue_size: int = 32
    no_error: str = '0,"No error"'

    def __init__(self) -> None:
        self.queue = ErrorQueue(self.queue_size)
        self._table = self.table()
        self._cache: dict[tuple[tuple[str, int | None], ...], tuple[Scpi, tuple[int, ...]] | None] = {}

    # -- what a model provides
    def table(self) -> list[Scpi]:
        raise NotImplementedError

    def reset(self) -> None:
        """*RST."""

    def common(self) -> dict[str, Callable[[], str | None]]:
        """IEEE 488.2 §10 common commands and queries every SCPI model here answers."""
        return {
            "*IDN?": lambda: self.identity,
            "*RST": self.reset,
            "*CLS": self.queue.clear,
            "*OPC?": lambda: "1",  # commands run in order: once this is read, all before it are done
            "*OPC": self._opc,
            "*WAI": lambda: None,
            "*ESR?": lambda: str(self.queue.read_esr()),
            "*ESE?": lambda: str(self.queue.ese),
            "*SRE?": lambda: str(self.queue.sre),
            "*STB?": lambda: str(self.queue.stb()),
            "*TST?": lambda: "0",
            "*OPT?": lambda: self.options,
            "*TRG": lambda: None,
        }

    def _opc(self) -> None:
        self.queue.esr |= ESR_OPC

    # -- the queue, as the drivers and tests see it
    @property
    def errors(self) -> list[tuple[int, str]]:
        return list(self.queue.entries)

    def push(self, code: int, text: str) -> None:
        self.queue.push(code, text)

    def next_error(self) -> str:
        entry = self.queue.pop()
        if entry is None:
            return self.no_error
        code, text = entry
        return f'{code:+d},"{text}"' if self.no_error.startswith("+") else f'{code},"{text}"'

    # -- parsing
    def handle(self, line: str) -> str | None:
        replies: list[str] = []
        path: tuple[tuple[str, int | None], ...] = ()
        for unit in split_outside(line.strip(), ";"):
            unit = unit.strip()
            if not unit:
                continue
            try:
                reply, path = self._unit(unit, path)
            except Refused as exc:
                self.push(exc.code, exc.text)
                continue
            if reply is not None:
                replies.append(reply)
        return ";".join(replies) if replies else None

    def _unit(
        self, unit: str, path: tuple[tuple[str, int | None], ...]
    ) -> tuple[str | None, tuple[tuple[str, int | None], ...]]:
        header, _, rest = unit.partition(" ")
        if "\t" in header:
            header, _, more = header.partition("\t")
            rest = f"{more} {rest}"
        rest = rest.strip()
        if header.lstrip(":").startswith("*"):
            return self._common(header.lstrip(":").upper(), rest), path
        query = header.endswith("?")
        bare = header[:-1] if query else header
        absolute = bare.startswith(":")
        tokens = _tokens(bare.lstrip(":"))
        if tokens is None or not bare.strip(":"):
            raise refuse(SYNTAX, header)
        found = None
        if not absolute and path:
            found = self._lookup(path + tokens, query)
        if found is None:
            found = self._lookup(tokens, query)
            path_base: tuple[tuple[str, int | None], ...] = tokens
        else:
            path_base = path + tokens
        if found is None:
            raise refuse(UNDEFINED_HEADER, header)
        command, suffixes = found
        params = [p for p in split_outside(rest, ",")] if rest else []
        call = Call(header, suffixes, params, query)
        new_path = path_base[:-1]
        if query:
            assert command.get is not None
            return command.get(call), new_path
        assert command.set is not None
        command.set(call)
        return None, new_path

    def _lookup(
        self, tokens: tuple[tuple[str, int | None], ...], query: bool
    ) -> tuple[Scpi, tuple[int, ...]] | None:
        key = (*tokens, ("?", None)) if query else tokens
        if key not in self._cache:
            self._cache[key] = None
            for command in self._table:
                if (command.get if query else command.set) is None:
                    continue
                suffixes = _match(command.nodes, tokens)
                if suffixes is not None:
                    self._cache[key] = (command, suffixes)
                    break
        return self._cache[key]

    def _common(self, header: str, rest: str) -> str | None:
        if header in ("*ESE", "*SRE"):
            call = Call(header, (), [rest] if rest else [], False)
            value = int(call.number(0, 0, 255))
            if header == "*ESE":
                self.queue.ese = value
            else:
                self.queue.sre = value
            return None
        commands = self.common()
        if header not in commands:
            raise refuse(UNDEFINED_HEADER, header)
        if rest:
            raise refuse(NOT_ALLOWED, header)
        return commands[header]()


# ---------------------------------------------------------------------------------------- TSP

TSP_SYNTAX = -285
TSP_RUNTIME = -286

_LUA_TOKEN = re.compile(
    r"""\s*(?:
    (?P<number>(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)
  | (?P<name>[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)
  | (?P<string>"[^"\n]*"|'[^'\n]*')
  | (?P<op>==|[(),=;+\-*/\[\]{}<>~#:.])
    )""",
    re.VERBOSE,
)
_KEYWORDS = {
    "and", "break", "do", "else", "elseif", "end", "for", "function", "if", "in", "local",
    "not", "or", "repeat", "return", "then", "until", "while",
}  # fmt: skip


class TspSyntaxError(Exception):
    pass


@dataclass(frozen=True)
class _Expr:
    kind: str  # "value", "name", "call", "neg", "arith"
    value: Any = None
    args: tuple[_Expr, ...] = ()


@dataclass(frozen=True)
class _Stmt:
    kind: str  # "assign", "call", "print"
    name: str
    args: tuple[_Expr, ...]


def _lex(line: str) -> list[tuple[str, str]]:
    tokens, pos = [], 0
    text = line.rstrip()
    while pos < len(text):
        m = _LUA_TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            raise TspSyntaxError(text[pos:].strip()[:20] or text[-1])
        kind = m.lastgroup or ""
        tokens.append((kind, m[kind]))
        pos = m.end()
    return tokens


class _Parser:
    def __init__(self, tokens: list[tuple[str, str]]) -> None:
        self.tokens, self.i = tokens, 0

    def peek(self) -> tuple[str, str]:
        return self.tokens[self.i] if self.i < len(self.tokens) else ("eof", "<eof>")

    def take(self, value: str | None = None, kind: str | None = None) -> str:
        k, v = self.peek()
        if (value is not None and v != value) or (kind is not None and k != kind) or k == "eof":
            raise TspSyntaxError(v)
        self.i += 1
        return v

    def chunk(self) -> list[_Stmt]:
        out = []
        while self.peek()[0] != "eof":
            if self.peek()[1] == ";":
                self.i += 1
                continue
            out.append(self.statement())
        return out

    def statement(self) -> _Stmt:
        kind, value = self.peek()
        if kind != "name" or value.split(".")[0] in _KEYWORDS:
            raise TspSyntaxError(value)
        name = self.take(kind="name")
        if self.peek()[1] == "=":
            self.i += 1
            return _Stmt("assign", name, (self.expression(),))
        if self.peek()[1] == "(":
            args = self.arguments()
            return _Stmt("print" if name == "print" else "call", name, args)
        raise TspSyntaxError(self.peek()[1])

    def arguments(self) -> tuple[_Expr, ...]:
        self.take("(")
        args: list[_Expr] = []
        if self.peek()[1] != ")":
            args.append(self.expression())
            while self.peek()[1] == ",":
                self.i += 1
                args.append(self.expression())
        self.take(")")
        return tuple(args)

    def expression(self) -> _Expr:
        left = self.term()
        while self.peek()[1] in ("+", "-"):
            op = self.take()
            left = _Expr("arith", op, (left, self.term()))
        return left

    def term(self) -> _Expr:
        left = self.unary()
        while self.peek()[1] in ("*", "/"):
            op = self.take()
            left = _Expr("arith", op, (left, self.unary()))
        return left

    def unary(self) -> _Expr:
        if self.peek()[1] == "-":
            self.i += 1
            return _Expr("neg", None, (self.unary(),))
        if self.peek()[1] == "+":
            raise TspSyntaxError("+")  # Lua has no unary plus
        return self.primary()

    def primary(self) -> _Expr:
        kind, value = self.peek()
        if kind == "number":
            self.i += 1
            return _Expr("value", float(value))
        if kind == "string":
            self.i += 1
            return _Expr("value", value[1:-1])
        if value == "(":
            self.i += 1
            inner = self.expression()
            self.take(")")
            return inner
        if kind == "name":
            self.i += 1
            if value in ("true", "false", "nil"):
                return _Expr("value", {"true": True, "false": False, "nil": None}[value])
            if value.split(".")[0] in _KEYWORDS:
                raise TspSyntaxError(value)
            if self.peek()[1] == "(":
                return _Expr("call", value, self.arguments())
            return _Expr("name", value)
        raise TspSyntaxError(value)


def parse_tsp(line: str) -> list[_Stmt]:
    """A line as TSP statements; `TspSyntaxError` names the symbol it stopped at."""
    return _Parser(_lex(line)).chunk()


class TspRuntimeError(Exception):
    pass


def runtime(text: str) -> Refused:
    return Refused(TSP_RUNTIME, f"TSP Runtime error at line 1: {text}")


def nil_index(name: str, call: bool = False) -> Refused:
    """What Lua says about a name that leads nowhere: a call of a function the instrument does
    not have, or an attribute it does not have."""
    parts = name.split(".")
    if call:
        scope = "global" if len(parts) == 1 else "field"
        return runtime(f"attempt to call {scope} `{parts[-1]}' (a nil value)")
    return runtime(f"attempt to index field `{parts[-1]}' (a nil value)")


Value = float | str | bool | None


class TspFrontEnd:
    """A TSP instrument. Subclasses say what its names are: `read(name)` (an attribute or a
    constant), `write(name, value)` and `call(name, args)`, each raising `Refused` (or
    `LookupError` for a name the instrument does not have)."""

    identity: str = ""
    queue_size: int = 32

    def __init__(self) -> None:
        self.queue = ErrorQueue(self.queue_size)
        self.asciiprecision = 6  # format.asciiprecision at reset (2600B reference manual §7)

    # -- what a model provides
    def read(self, name: str) -> Value:
        raise LookupError(name)

    def write(self, name: str, value: Value) -> None:
        raise LookupError(name)

    def call(self, name: str, args: list[Value]) -> tuple[Value, ...]:
        raise LookupError(name)

    def reset(self) -> None:
        """reset() and *RST."""

    # -- shared names
    def _shared_call(self, name: str, args: list[Value]) -> tuple[Value, ...] | None:
        if name == "reset":
            self.reset()
            self.asciiprecision = 6
            return ()
        if name in ("waitcomplete", "opc", "delay", "beeper.beep", "collectgarbage", "display.clear"):
            return ()
        if name == "errorqueue.clear":
            self.queue.entries.clear()
            return ()
        if name == "errorqueue.next":
            entry = self.queue.pop()
            if entry is None:
                return (0.0, "Queue Is Empty", 0.0, 0.0)
            code, text = entry
            return (float(code), text, 20.0 if code < 0 else 30.0, 1.0)  # severity, node
        if name in ("tostring",):
            return (self.format(args[0] if args else None),)
        if name in ("tonumber",):
            try:
                return (float(str(args[0])),)
            except (ValueError, IndexError):
                return (None,)
        return None

    def _shared_read(self, name: str) -> tuple[bool, Value]:
        if name == "errorqueue.count":
            return True, float(len(self.queue))
        if name == "format.asciiprecision":
            return True, float(self.asciiprecision)
        return False, None

    def _shared_write(self, name: str, value: Value) -> bool:
        if name == "format.asciiprecision":
            digits = self.number(value, name)
            if not 1 <= digits <= 16:
                raise runtime(f"{name} must be from 1 to 16")
            self.asciiprecision = int(digits)
            return True
        return False

    @staticmethod
    def number(value: Value, name: str) -> float:
        if isinstance(value, bool) or not isinstance(value, float):
            raise runtime(f"bad argument to `{name}' (number expected, got {type_name(value)})")
        return value

    @property
    def errors(self) -> list[tuple[int, str]]:
        return list(self.queue.entries)

    def push(self, code: int, text: str) -> None:
        self.queue.push(code, text)

    def format(self, value: Value) -> str:
        if value is None:
            return "nil"
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, float):
            return f"{value:.{self.asciiprecision - 1}e}"
        return str(value)

    # -- parsing and running
    def handle(self, line: str) -> str | None:
        text = line.strip()
        if not text:
            return None
        if text.startswith("*"):
            return self._common(text)
        try:
            statements = parse_tsp(text)
        except TspSyntaxError as exc:
            self.push(TSP_SYNTAX, f"TSP Syntax error at line 1: unexpected symbol near `{exc}'")
            return None
        printed: list[str] = []
        for statement in statements:
            try:
                out = self._run(statement)
            except Refused as exc:
                self.push(exc.code, exc.text)
                break
            if out is not None:
                printed.append(out)
        return "\n".join(printed) if printed else None

    def _common(self, text: str) -> str | None:
        """The IEEE 488.2 common commands a TSP instrument takes besides its Lua (2600B reference
        manual §7 "Common commands")."""
        word = text.upper()
        if word == "*IDN?":
            return self.identity
        if word == "*OPC?":
            return "1"
        if word == "*RST":
            self.reset()
            self.asciiprecision = 6
            return None
        if word == "*CLS":
            self.queue.clear()
            return None
        if word == "*ESR?":
            return str(self.queue.read_esr())
        if word == "*STB?":
            return str(self.queue.stb())
        if word in ("*WAI", "*TRG", "*OPC"):
            if word == "*OPC":
                self.queue.esr |= ESR_OPC
            return None
        if word == "*TST?":
            return "0"
        self.push(TSP_SYNTAX, f"TSP Syntax error at line 1: unexpected symbol near `{text[:20]}'")
        return None

    def _run(self, statement: _Stmt) -> str | None:
        if statement.kind == "print":
            values: list[Value] = []
            for k, arg in enumerate(statement.args):
                got = self._values(arg)
                # Lua: a call's values all reach print only when it is the last argument
                values.extend(got if k == len(statement.args) - 1 else got[:1] or (None,))
            return "\t".join(self.format(v) for v in values)
        if statement.kind == "assign":
            value = self._value(statement.args[0])
            try:
                handled = self._shared_write(statement.name, value)
                if not handled:
                    self.write(statement.name, value)
            except LookupError:
                raise nil_index(statement.name) from None
            return None
        self._invoke(statement.name, [self._value(a) for a in statement.args])
        return None

    def _invoke(self, name: str, args: list[Value]) -> tuple[Value, ...]:
        shared = self._shared_call(name, args)
        if shared is not None:
            return shared
        try:
            return self.call(name, args)
        except LookupError:
            raise nil_index(name, call=True) from None

    def _values(self, expr: _Expr) -> tuple[Value, ...]:
        if expr.kind == "call":
            return self._invoke(expr.value, [self._value(a) for a in expr.args])
        return (self._value(expr),)

    def _value(self, expr: _Expr) -> Value:
        if expr.kind == "value":
            return expr.value
        if expr.kind == "name":
            known, value = self._shared_read(expr.value)
            if known:
                return value
            try:
                return self.read(expr.value)
            except LookupError:
                if "." not in expr.value:
                    return None  # an unknown global is nil in Lua
                raise nil_index(expr.value) from None
        if expr.kind == "call":
            values = self._values(expr)
            return values[0] if values else None
        if expr.kind == "neg":
            operand = self._value(expr.args[0])
            if isinstance(operand, bool) or not isinstance(operand, float):
                raise runtime(f"attempt to perform arithmetic on a {type_name(operand)} value")
            return -operand
        a, b = (self._value(x) for x in expr.args)
        if isinstance(a, bool) or isinstance(b, bool) or not isinstance(a, float) or not isinstance(b, float):
            raise runtime(
                f"attempt to perform arithmetic on a {type_name(a if not isinstance(a, float) else b)} value"
            )
        if expr.value == "+":
            return a + b
        if expr.value == "-":
            return a - b
        if expr.value == "*":
            return a * b
        return a / b if b else math.copysign(math.inf, a)


def type_name(value: Value) -> str:
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "boolean"
    return "number" if isinstance(value, float) else "string"
