"""The one JSONL line parser, with errors that name the problem, and the one bad-line counter.

`parse_line` turns one line into its JSON value: orjson parses the common case (several times faster than
`json`); anything it rejects is parsed again by the standard library, which either accepts it (so the accepted
syntax is exactly `json`'s) or says precisely what is wrong. Lone surrogates smuggled in by JSON escapes
("\\ud800") are not text and no tokenizer takes them, so they are rejected too. A bad line raises `LineError`;
`BadLines` turns it into an `InputError` naming the file and line, or (with --skip-bad-lines) counts it.

Nesting is limited to about 1000 levels of `[`/`{` ("too deeply nested"; orjson stops at 1024, `json` recurses
once per level and would die of RecursionError on a line of 100,000 `[`); nothing here walks a value recursively.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Iterator, List, Sequence, Tuple

import orjson

from megatron_ipt.errors import UserError

from .inputs import InputError, Shard, iter_lines

BAD_LINE_EXAMPLES = 10  # skipped lines listed in a summary, the first ones met


class LineError(UserError, ValueError):
    """Why one line is unusable; `kind` groups skipped lines in the summary."""

    def __init__(self, kind: str, detail: str = ""):
        self.kind = kind
        super().__init__(f"{kind}: {detail}" if detail else kind)


def parse_line(raw: bytes) -> object:
    """The JSON value of one line; raises LineError ("malformed JSON", "invalid UTF-8", "invalid Unicode")."""
    value, checked = _load(raw)
    if not checked and _may_hold_surrogates(raw):
        _check_text(value, ())
    return value


def parse_keys(raw: bytes, keys: Sequence[str]) -> List[object]:
    """`key_values` of one line: the packing stage's hot path, where only these values are checked for lone
    surrogates (other keys are never read)."""
    value, checked = _load(raw)
    values = key_values(value, keys)
    if not checked and _may_hold_surrogates(raw):
        for key, value in zip(keys, values):
            _check_text(value, (key,))
    return values


def key_values(record, keys: Sequence[str]) -> List[object]:
    """The values of `keys` in a parsed line, each a string or a list of strings (pre-split sentences, as
    Megatron accepts); raises LineError ("not a JSON object", "missing key", "not a string")."""
    if not isinstance(record, dict):
        raise LineError("not a JSON object", f"got {json_type(record)}")
    values = []
    for key in keys:
        if key not in record:
            raise LineError("missing key", repr(key))
        value = record[key]
        if not (isinstance(value, str) or (isinstance(value, list) and all(isinstance(v, str) for v in value))):
            got = "a list with non-string items" if isinstance(value, list) else json_type(value)
            raise LineError("not a string", f"key {key!r} is {got}, expected a string (or a list of strings)")
        values.append(value)
    return values


def string_field(record: dict, key: str) -> str:
    """`record[key]`, which must be a string; raises LineError ("missing key", "not a string")."""
    if key not in record:
        raise LineError("missing key", repr(key))
    if not isinstance(record[key], str):
        raise LineError("not a string", f"key {key!r} is {json_type(record[key])}")
    return record[key]


def json_type(value) -> str:
    """How an error message names the JSON type of `value`."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    return {str: "a string", list: "a list", dict: "an object"}.get(type(value), type(value).__name__)


def _load(raw: bytes):
    """(the value, whether its strings are known free of lone surrogates). orjson refuses a lone surrogate escape
    ("no low surrogate in string"), so a value it returns needs no check (tests/packing/test_jsonl.py pins this);
    the `json` fallback accepts one."""
    try:
        return orjson.loads(raw), True
    except orjson.JSONDecodeError as e:
        if "depth limit" in str(e):
            raise _too_deep() from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise LineError("invalid UTF-8", f"byte {e.start} of the line") from None
    try:
        return json.loads(text), False
    except json.JSONDecodeError as e:
        raise LineError("malformed JSON", f"{e.msg} (column {e.colno})") from None
    except RecursionError:  # a line orjson refused for another reason, nested deeper than Python recurses
        raise _too_deep() from None


def _too_deep() -> LineError:
    return LineError("too deeply nested", "more levels of [ or { than the parser follows (about 1000)")


def _may_hold_surrogates(raw: bytes) -> bool:
    # Only a \uD8xx-\uDFxx escape can make one; the byte search keeps the check off the common path.
    return b"\\u" in raw and (b"\\ud" in raw or b"\\uD" in raw)  # one scan when no escape at all


def _check_text(value, path: tuple):
    # Iterative: orjson returns values nested up to 1024 deep, past Python's recursion limit.
    stack = [(value, path)]
    while stack:
        value, path = stack.pop()
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError as e:
                raise LineError(
                    "invalid Unicode", f"{_location(path)} has a lone surrogate U+{ord(value[e.start]):04X}"
                ) from None
        elif isinstance(value, list):
            stack.extend((v, path + (i,)) for i, v in reversed(list(enumerate(value))))
        elif isinstance(value, dict):
            stack.extend((v, path + (k,)) for k, v in reversed(list(value.items())))


def _location(path: tuple) -> str:
    """`key 'text'`, `key 'QA_list'[0]['Q']`, `[2]['context']` or, for a bare string, `the line` (a deep path is
    shortened to its first and last steps)."""
    if not path:
        return "the line"
    head, rest = (f"key {path[0]!r}", path[1:]) if isinstance(path[0], str) else ("", path)
    steps = [f"[{p!r}]" for p in rest]
    if len(steps) > 8:
        steps = steps[:4] + [f"...({len(steps) - 8} more)..."] + steps[-4:]
    return head + "".join(steps)


@dataclass
class BadLines:
    """Stops at the first bad line (InputError naming file and line), or with `skip` counts bad lines by kind
    and keeps the first BAD_LINE_EXAMPLES as "file:line: problem"."""

    skip: bool = False
    counts: Counter = field(default_factory=Counter)
    examples: List[str] = field(default_factory=list)

    def handle(self, path: str, line: int, error: LineError):
        if not self.skip:
            raise InputError(path, line, str(error), skippable=True) from None
        self.counts[error.kind] += 1
        if len(self.examples) < BAD_LINE_EXAMPLES:
            self.examples.append(f"{path}:{line}: {error}")

    def add(self, other: "BadLines"):
        """Count `other`'s lines too (the totals of shards read apart, in input order)."""
        self.counts.update(other.counts)
        self.examples.extend(other.examples[: max(BAD_LINE_EXAMPLES - len(self.examples), 0)])

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def read_jsonl(path: str, bad: BadLines, check: Callable = lambda value: value) -> Iterator[Tuple[int, object]]:
    """`(line number, check(value))` for every non-blank line of `path`; `check` raises LineError on a value it
    cannot use, and a bad line goes to `bad`."""
    for _, number, raw in iter_lines(Shard(path)):
        if not raw.strip():
            continue
        try:
            value = check(parse_line(raw))
        except LineError as e:
            bad.handle(path, number, e)
            continue
        yield number, value
