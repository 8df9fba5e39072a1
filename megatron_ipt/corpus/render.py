"""Collections -> instruction-augmented pre-training documents, as the released code renders them
(``cook_pt_entries`` in github.com/microsoft/LMOps instruction_pretrain/).

A collection is one synthesis chain: ``[{"context", "QA_list": [{"Q","A"}], "inherit_from_prev"}, ...]``.
Entries linked by ``inherit_from_prev`` form a group and become ONE document (their rendered texts joined by
the collection's ``rc_sep``); an entry left without a valid pair is emitted as its raw text instead.

Per collection, one ``random.Random(seed)`` stream (seed = ``SEED_OFFSET + collection index`` by default, as
the released code's README does) draws, in order: the QA pattern of each pair kind, the option start/markers/ends,
the unanswerable phrasings and rc_sep; then per group the layout and its parts. The released code reseeds a
fresh RNG for every choice, which ties choices from lists of equal length together; one stream keeps them
independent and is just as deterministic. Options are shuffled with ``Random(seed * pair index)`` (pairs.py),
exactly as the released code does. The input is never modified.

Layouts (weights from the paper): a group whose smallest entry has < 2 valid pairs is Classic 95 / Dialog 5;
otherwise Classic 80 / Dialog 5 / Numbered 5 / Inline few-shot 5 / Next-turn dialog 5. Classic and Dialog are
inverted (pairs before the text) 5% of the time.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

from megatron_ipt.formats.records import Entry

from .pairs import Pair, validate_pair
from .templates import MAX_ITEMS, PAIR_KINDS, QAPattern, TemplateLibrary, load_templates

SEED_OFFSET = 12345
MODE_WEIGHTS_FEW_PAIRS = (("classic", 95), ("dialog", 5))
MODE_WEIGHTS = (("classic", 80), ("dialog", 5), ("numbered", 5), ("inline", 5), ("next_turn", 5))
INVERSION_RATE = 0.05
INVERTIBLE_MODES = ("classic", "dialog")
_END_PUNCTUATION = (".", "!", "?", ";", ",", ":")


@dataclass(frozen=True)
class Style:
    """The choices made once per collection."""

    patterns: Dict[str, QAPattern]
    option_start: str
    option_markers: Tuple[str, ...]
    item_end: Tuple[str, str]
    unanswerable_option: str
    unanswerable_answer: str
    rc_sep: str

    @property
    def markers_name_items(self) -> bool:
        return self.option_markers[0] != self.option_markers[1]  # schemes either repeat one string or never


def sample_style(rng: random.Random, lib: TemplateLibrary) -> Style:
    patterns = {kind: rng.choice(lib.qa[kind]) for kind in PAIR_KINDS}
    return Style(
        patterns,
        rng.choice(lib.option_starts),
        rng.choice(lib.option_markers),
        rng.choice(lib.item_ends),
        rng.choice(lib.unanswerable_options),
        rng.choice(lib.unanswerable_answers),
        rng.choice(lib.qa["basic"]).example_separator,
    )


def _itemize(items: Sequence[str], markers: Sequence[str], end: Tuple[str, str]) -> str:
    """marker_i + item_i + end, where an item already ending in punctuation gets no end mark."""
    out = []
    for i, item in enumerate(items):
        mark = end[0] if i < len(items) - 1 else end[1]
        out.append(markers[i] + item + ("" if item.endswith(_END_PUNCTUATION) else mark))
    return "".join(out)


def pair_fields(pair: Pair, style: Style) -> dict:
    """The values a QA pattern may use: question, answer, cot, options_, option_answer."""
    fields = {
        "question": pair.question,
        "answer": pair.answer,
        "cot": pair.cot,
        "options_": "",
        "option_answer": pair.answer,
    }
    if pair.options:
        fields["options_"] = style.option_start + _itemize(pair.options, style.option_markers, style.item_end)
        if style.markers_name_items:  # "(B)" names the answer; a repeated "- " could not
            fields["option_answer"] = style.option_markers[pair.answer_index].strip().rstrip(":").strip()
    return fields


def _sample_layout(rng: random.Random, lib: TemplateLibrary, min_pairs: int, max_pairs: int) -> dict:
    weights = MODE_WEIGHTS if min_pairs >= 2 else MODE_WEIGHTS_FEW_PAIRS
    mode = rng.choices([m for m, _ in weights], [w for _, w in weights])[0]
    if mode == "numbered" and max_pairs > MAX_ITEMS:  # a numbering scheme names at most 26 items
        mode = "classic"
    layout = {"mode": mode, "inverted": rng.random() < INVERSION_RATE and mode in INVERTIBLE_MODES}
    if layout["inverted"]:
        layout.update(
            qa_start=lib.qa_start.sample(rng), qa_end=rng.choice(lib.qa_ends), text_start=lib.text_start.sample(rng)
        )
    if mode == "classic":
        layout.update(
            read_start=lib.read_start.sample(rng),
            compre_start=lib.compre_start.sample(rng),
            read_end=rng.choice(lib.read_ends),
            sep=rng.choice(lib.text_separators),
        )
    elif mode in ("dialog", "next_turn"):
        layout.update(
            speakers=rng.choice(lib.speakers),
            delimiter=rng.choice(lib.dialog_delimiters),
            turn_sep=rng.choice(lib.turn_separators),
            sep=rng.choice(lib.dialog_separators),
            header=rng.choice(lib.dialog_headers),
            next_turn=rng.choice(lib.next_turn + lib.next_turn_inverted),
        )
    elif mode == "numbered":
        layout.update(
            markers=rng.choice(lib.numbering_markers),
            end=rng.choice(lib.item_ends),
            template=rng.choice(lib.numbered_templates),
        )
    elif mode == "inline":
        layout.update(explained=rng.choice(lib.inline_explained), plain=rng.choice(lib.inline_plain))
    return layout


def _speaker_turns(pairs: List[Pair], fields: List[dict], style: Style, layout: dict, last_answer: bool) -> str:
    asker, answerer = layout["speakers"]
    turns = []
    for i, (pair, f) in enumerate(zip(pairs, fields)):
        pattern = style.patterns[pair.kind]
        if i < len(pairs) - 1 or last_answer:
            turns.append(pattern.render(f, asker, answerer, layout["delimiter"]))
        else:
            turns.append(asker + pattern.inputs.format_map(f))
    return layout["turn_sep"].join(turns)


def render_entry(text: str, pairs: List[Pair], style: Style, layout: dict) -> str:
    """One (text, valid pairs) in the group's layout."""
    fields = [pair_fields(p, style) for p in pairs]
    mode = layout["mode"]
    if mode in ("classic", "dialog"):
        if mode == "classic":
            separator = style.patterns["basic"].example_separator
            demos = separator.join(style.patterns[p.kind].render(f) for p, f in zip(pairs, fields))
        else:
            demos = _speaker_turns(pairs, fields, style, layout, last_answer=True)
        if layout["inverted"]:
            return (
                layout["qa_start"].format_map({"QA_demos": demos.lstrip("\n")})
                + layout["qa_end"]
                + layout["text_start"].format_map({"context": text})
            )
        if mode == "dialog":
            head = layout["sep"] + layout["header"]
            return text + head + (demos.lstrip("\n") if head.endswith("\n") else demos)
        opener = layout["compre_start"]
        return (
            layout["read_start"].format_map({"context": text})
            + (layout["read_end"] if opener else "")
            + opener
            + layout["sep"]
            + demos
        )
    if mode == "numbered":
        patterns = [style.patterns[p.kind] for p in pairs]
        questions = _itemize(
            [pt.inputs.format_map(f) for pt, f in zip(patterns, fields)], layout["markers"], layout["end"]
        )
        answers = _itemize(
            [pt.targets.format_map(f) for pt, f in zip(patterns, fields)], layout["markers"], layout["end"]
        )
        return layout["template"].format_map(
            {"context": text, "numbered_questions": questions, "numbered_answers": answers}
        )
    if mode == "inline":
        if all(p.cot for p in pairs):  # worked examples with their reasoning as the explanation
            template = layout["explained"]
            items = [
                {
                    "input": f["question"] + ("\n" + f["options_"].lstrip(" ") if p.options else ""),
                    "output": f["option_answer"],
                    "explanation": f["cot"] + ".",
                }
                for p, f in zip(pairs, fields)
            ]
        else:
            template = layout["plain"]
            items = [
                {
                    "input": style.patterns[p.kind].inputs.format_map(f),
                    "output": style.patterns[p.kind].targets.format_map(f),
                }
                for p, f in zip(pairs, fields)
            ]
        examples = template.separator.join(template.example.format_map(it) for it in items[:-1])
        return template.template.format_map({"context": text, "examples": examples, **items[-1]})
    if mode == "next_turn":
        dialog = _speaker_turns(pairs, fields, style, layout, last_answer=False).lstrip("\n")
        last = style.patterns[pairs[-1].kind].targets.format_map(fields[-1])
        return text + layout["sep"] + layout["next_turn"].format_map({"dialog_": dialog, "answer": last})
    raise ValueError(f"unknown layout mode {mode!r}")


def groups_of(collection: Sequence[Entry]) -> List[List[int]]:
    """Entry indices per group: a group starts at every entry not inheriting from the previous one."""
    groups = []
    for i, entry in enumerate(collection):
        if not groups or not entry.inherit_from_prev:
            groups.append([])
        groups[-1].append(i)
    return groups


def render_collection(
    collection: Sequence[Entry], seed: int, lib: Optional[TemplateLibrary] = None, stats: Optional[Counter] = None
) -> List[Tuple[str, str]]:
    """``[(source, text), ...]`` with source "augmented" (a rendered group) or "raw" (an entry without valid
    pairs). Per group: its document first, then the raw texts of its entries without pairs; empty texts are
    counted and skipped. ``stats`` (a Counter) receives layouts, pair kinds and drop reasons."""
    lib = lib or load_templates()
    stats = Counter() if stats is None else stats
    rng = random.Random(seed)
    style = sample_style(rng, lib)
    out = []
    stats["collections"] += 1
    for group in groups_of(collection):
        rendered, raw = [], []
        for i in group:
            entry = collection[i]
            pairs = []
            for index, qa in enumerate(entry.qa_list):
                pair, reason = validate_pair(qa, seed, index, style.unanswerable_option, style.unanswerable_answer, lib)
                if pair is None:
                    stats[f"dropped:{reason}"] += 1
                else:
                    pairs.append(pair)
                    stats[f"pairs:{pair.kind}"] += 1
            (rendered if pairs else raw).append((entry.context, pairs))
        stats["entries"] += len(group)
        if rendered:
            layout = _sample_layout(rng, lib, min(len(p) for _, p in rendered), max(len(p) for _, p in rendered))
            stats[f"layout:{layout['mode']}"] += 1
            stats["layout:inverted"] += layout["inverted"]
            stats["entries:augmented"] += len(rendered)
            out.append(("augmented", style.rc_sep.join(render_entry(t, p, style, layout) for t, p in rendered)))
        for text, _ in raw:
            if text.strip():
                stats["entries:raw"] += 1
                out.append(("raw", text))
            else:
                stats["entries:empty"] += 1
    return out
