"""The template library (FLAN v2 few-shot patterns and AdaptLLM reading templates, as modified by the released code,
github.com/microsoft/LMOps instruction_pretrain/): loads the pools in ``templates/*.json``, expands and checks them.

Templates are data. Every phrasing lives in the JSON files next to this module. We wrote them for this
project: they follow the structure of the paper's library (QA patterns for four pair kinds, option markers,
unanswerable phrasings, reading openers, dialog speakers, numbering schemes, inline few-shot and next-turn
templates) but none is copied from FLAN or LMOps. This module only loads them and checks that each template
uses exactly the placeholders its layout fills, so a typo in a data file fails at load time, not mid-corpus.
"""

from __future__ import annotations

import functools
import json
import os
import string
from dataclasses import dataclass
from typing import Dict, Tuple

TEMPLATE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "templates")
MAX_ITEMS = 26  # option / numbering markers per scheme, as in the paper's library
PAIR_KINDS = ("basic", "options", "cot", "options_cot")

# Placeholders a QA pattern of each kind may use. The option kinds also accept "no options" patterns that show
# the stem and the answer text only (the paper's library has these too).
_QA_FIELDS = {
    "basic": {"question", "answer"},
    "options": {"question", "options_", "option_answer", "answer"},
    "cot": {"question", "cot", "answer"},
    "options_cot": {"question", "options_", "cot", "option_answer", "answer"},
}
_SEQUENCES = {
    "{A}": lambda i: chr(ord("A") + i),
    "{a}": lambda i: chr(ord("a") + i),
    "{1}": lambda i: str(i + 1),
    "{I}": lambda i: _roman(i + 1),
    "{i}": lambda i: _roman(i + 1).lower(),
}


@dataclass(frozen=True)
class QAPattern:
    """One way to render a pair: inputs_prefix + inputs + x_y_delimiter + targets_prefix + targets."""

    inputs_prefix: str
    inputs: str
    x_y_delimiter: str
    targets_prefix: str
    targets: str
    example_separator: str

    def render(self, fields: dict, inputs_prefix: str = None, targets_prefix: str = None, delimiter: str = None) -> str:
        return (
            (self.inputs_prefix if inputs_prefix is None else inputs_prefix)
            + self.inputs.format_map(fields)
            + (self.x_y_delimiter if delimiter is None else delimiter)
            + (self.targets_prefix if targets_prefix is None else targets_prefix)
            + self.targets.format_map(fields)
        )


@dataclass(frozen=True)
class BarePool:
    """A placeholder used bare with probability ``bare_share``, else wrapped in one of the phrasings."""

    bare: str
    bare_share: float
    phrasings: Tuple[str, ...]

    def sample(self, rng) -> str:
        return self.bare if rng.random() < self.bare_share else rng.choice(self.phrasings)


@dataclass(frozen=True)
class InlineTemplate:
    template: str
    example: str
    separator: str


@dataclass(frozen=True)
class TemplateLibrary:
    qa: Dict[str, Tuple[QAPattern, ...]]
    option_starts: Tuple[str, ...]
    option_markers: Tuple[Tuple[str, ...], ...]  # each MAX_ITEMS item names
    item_ends: Tuple[Tuple[str, str], ...]  # (after each item, after the last)
    unanswerable_options: Tuple[str, ...]
    unanswerable_answers: Tuple[str, ...]
    recognized_unanswerable: frozenset  # normalized phrases that mean "no answer"
    read_start: BarePool
    read_ends: Tuple[str, ...]
    compre_start: BarePool
    text_separators: Tuple[str, ...]
    qa_start: BarePool
    qa_ends: Tuple[str, ...]
    text_start: BarePool
    dialog_separators: Tuple[str, ...]
    dialog_headers: Tuple[str, ...]
    speakers: Tuple[Tuple[str, str], ...]
    dialog_delimiters: Tuple[str, ...]
    turn_separators: Tuple[str, ...]
    next_turn: Tuple[str, ...]
    next_turn_inverted: Tuple[str, ...]
    numbering_markers: Tuple[Tuple[str, ...], ...]
    numbered_templates: Tuple[str, ...]
    inline_explained: Tuple[InlineTemplate, ...]
    inline_plain: Tuple[InlineTemplate, ...]

    @functools.cached_property
    def longest_unanswerable(self) -> int:
        return max(len(p) for p in self.recognized_unanswerable)

    def sizes(self) -> Dict[str, int]:
        """Pool sizes, for docs/corpus.md and the tests."""
        out = {f"qa/{k}": len(v) for k, v in self.qa.items()}
        for name in (
            "option_starts",
            "option_markers",
            "item_ends",
            "unanswerable_options",
            "unanswerable_answers",
            "dialog_headers",
            "speakers",
            "next_turn",
            "next_turn_inverted",
            "numbering_markers",
            "numbered_templates",
            "inline_explained",
            "inline_plain",
        ):
            out[name] = len(getattr(self, name))
        for name in ("read_start", "compre_start", "qa_start", "text_start"):
            out[name] = len(getattr(self, name).phrasings)
        return out


def normalize_phrase(text: str) -> str:
    """How unanswerable answers are recognized: lower case, single spaces, no trailing punctuation."""
    return " ".join(text.lower().split()).rstrip(" .!;,")


def expand_marker(marker: str) -> Tuple[str, ...]:
    """``" ({A}) "`` -> ``(" (A) ", " (B) ", ...)``; a marker without a sequence placeholder repeats."""
    present = [p for p in _SEQUENCES if p in marker]
    if len(present) > 1:
        raise ValueError(f"marker {marker!r} mixes sequences {present}")
    if not present:
        return (marker,) * MAX_ITEMS
    return tuple(marker.replace(present[0], _SEQUENCES[present[0]](i)) for i in range(MAX_ITEMS))


def markers_are_distinct(markers: Tuple[str, ...]) -> bool:
    return len(set(markers)) == len(markers)


def _roman(n: int) -> str:
    out = ""
    for value, numeral in ((10, "X"), (9, "IX"), (5, "V"), (4, "IV"), (1, "I")):
        while n >= value:
            out += numeral
            n -= value
    return out


def _fields(template: str, where: str) -> set:
    try:
        return {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as e:
        raise ValueError(f"{where}: bad template {template!r}: {e}") from None


def _check(template: str, where: str, required: set, allowed: set = None) -> str:
    if not isinstance(template, str):
        raise ValueError(f"{where}: expected a string, got {template!r}")
    used = _fields(template, where)
    allowed = required if allowed is None else allowed
    if not required <= used or not used <= allowed:
        raise ValueError(
            f"{where}: template {template!r} uses {sorted(used)}; needs {sorted(required)}"
            f" and may use {sorted(allowed)}"
        )
    return template


def _qa_pattern(row, kind: str, where: str) -> QAPattern:
    if not (isinstance(row, list) and len(row) == 6 and all(isinstance(x, str) for x in row)):
        raise ValueError(
            f"{where}: a QA pattern is 6 strings [inputs_prefix, inputs, x_y_delimiter, "
            f"targets_prefix, targets, example_separator]"
        )
    pattern = QAPattern(*row)
    for prefix in (pattern.inputs_prefix, pattern.targets_prefix, pattern.x_y_delimiter, pattern.example_separator):
        _check(prefix, where, set())
    used = _fields(pattern.inputs, where) | _fields(pattern.targets, where)
    allowed = _QA_FIELDS[kind]
    if not used <= allowed or "question" not in used or not used & {"answer", "option_answer"}:
        raise ValueError(
            f"{where}: pattern {row!r} uses {sorted(used)}: it needs {{question}} and an answer "
            f"field, and may use only {sorted(allowed)}"
        )
    if "cot" in kind and "cot" not in used:
        raise ValueError(f"{where}: chain-of-thought pattern {row!r} does not show {{cot}}")
    if "options_" in used and "option_answer" not in used:
        raise ValueError(f"{where}: pattern {row!r} lists options but answers with {{answer}}, not {{option_answer}}")
    return pattern


def _pool(data: dict, name: str, placeholder) -> BarePool:
    """``placeholder`` None: a pool of plain phrasings whose "bare" choice is the empty string."""
    where = f"reading.json:{name}"
    share = data[name]["bare_share"]
    if not 0 <= share <= 1:
        raise ValueError(f"{where}: bare_share {share} not in [0, 1]")
    required = {placeholder} if placeholder else set()
    phrasings = tuple(_check(p, f"{where}[{i}]", required) for i, p in enumerate(data[name]["phrasings"]))
    return BarePool("{" + placeholder + "}" if placeholder else "", share, phrasings)


def _load_json(name: str) -> dict:
    with open(os.path.join(TEMPLATE_DIR, name), encoding="utf-8") as f:
        return json.load(f)


def _markers(values, where: str, distinct: bool) -> Tuple[Tuple[str, ...], ...]:
    out = []
    for i, marker in enumerate(values):
        _check(marker.replace("{", "").replace("}", ""), f"{where}[{i}]", set())
        names = expand_marker(marker)
        if distinct and not markers_are_distinct(names):
            raise ValueError(f"{where}[{i}]: numbering marker {marker!r} must give {MAX_ITEMS} different names")
        out.append(names)
    return tuple(out)


def _inline(rows, where: str, explained: bool) -> Tuple[InlineTemplate, ...]:
    out = []
    for i, row in enumerate(rows):
        w = f"{where}[{i}]"
        item = {"input", "output"} | ({"explanation"} if explained else set())
        _check(row["template"], w, {"context", "examples", "input", "output"}, {"context", "examples"} | item)
        _check(row["example"], w, item)
        _check(row["separator"], w, set())
        out.append(InlineTemplate(row["template"], row["example"], row["separator"]))
    return tuple(out)


@functools.lru_cache(maxsize=None)
def load_templates() -> TemplateLibrary:
    """The library shipped with the package (cached; the objects are immutable)."""
    qa, options, reading = _load_json("qa.json"), _load_json("options.json"), _load_json("reading.json")
    dialog, numbered, inline = _load_json("dialog.json"), _load_json("numbered.json"), _load_json("inline_fewshot.json")
    speakers = []
    for i, pair in enumerate(dialog["speakers"]):
        if not (len(pair) == 2 and all(isinstance(s, str) and s.startswith("\n") for s in pair)):
            raise ValueError(f"dialog.json:speakers[{i}]: two names, each starting with a newline: {pair!r}")
        speakers.append(tuple(pair))
    ends = []
    for i, end in enumerate(options["ends"]):
        if not (len(end) == 2 and all(isinstance(s, str) for s in end)):
            raise ValueError(f"options.json:ends[{i}]: [after each item, after the last item]: {end!r}")
        ends.append(tuple(end))
    return TemplateLibrary(
        qa={
            kind: tuple(_qa_pattern(row, kind, f"qa.json:{kind}[{i}]") for i, row in enumerate(qa[kind]))
            for kind in PAIR_KINDS
        },
        option_starts=tuple(_check(s, "options.json:starts", set()) for s in options["starts"]),
        option_markers=_markers(options["markers"], "options.json:markers", distinct=False),
        item_ends=tuple(ends),
        unanswerable_options=tuple(options["unanswerable_options"]),
        unanswerable_answers=tuple(options["unanswerable_answers"]),
        recognized_unanswerable=frozenset(
            normalize_phrase(p)
            for p in options["recognized_unanswerable"]
            + options["unanswerable_options"]
            + options["unanswerable_answers"]
        ),
        read_start=_pool(reading, "read_start", "context"),
        read_ends=tuple(reading["read_ends"]),
        compre_start=_pool(reading, "compre_start", None),
        text_separators=tuple(reading["separators"]),
        qa_start=_pool(reading, "qa_start", "QA_demos"),
        qa_ends=tuple(reading["qa_ends"]),
        text_start=_pool(reading, "text_start", "context"),
        dialog_separators=tuple(dialog["separators"]),
        dialog_headers=tuple(_check(h, "dialog.json:headers", set()) for h in dialog["headers"]),
        speakers=tuple(speakers),
        dialog_delimiters=tuple(dialog["x_y_delimiters"]),
        turn_separators=tuple(dialog["turn_separators"]),
        next_turn=tuple(_check(t, "dialog.json:next_turn", {"dialog_", "answer"}) for t in dialog["next_turn"]),
        next_turn_inverted=tuple(
            _check(t, "dialog.json:next_turn_inverted", {"dialog_", "answer"}) for t in dialog["next_turn_inverted"]
        ),
        numbering_markers=_markers(numbered["markers"], "numbered.json:markers", distinct=True),
        numbered_templates=tuple(
            _check(t, "numbered.json:templates", {"context", "numbered_questions", "numbered_answers"})
            for t in numbered["templates"]
        ),
        inline_explained=_inline(inline["explained"], "inline_fewshot.json:explained", explained=True),
        inline_plain=_inline(inline["plain"], "inline_fewshot.json:plain", explained=False),
    )
