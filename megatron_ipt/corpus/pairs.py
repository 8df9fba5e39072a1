"""Per-pair validation and typing at templating time, the checks of the released code (github.com/microsoft/LMOps
instruction_pretrain/).

A synthesized pair is ``{"Q": str, "A": str}`` in the synthesizer's wire format (megatron_ipt.formats.wire):
options are listed after OPTIONS_MARK, one per ``"\\n- "``; a chain of thought is asked for with
COT_QUESTION_MARK and answered as ``{reasoning}`` + COT_ANSWER_MARK + ``{answer}``. Pairs that break these forms
are dropped, with the reason counted; nothing is repaired by guessing.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Optional, Tuple

from megatron_ipt.formats.wire import COT_ANSWER_MARK, COT_QUESTION_MARK, OPTIONS_MARK

from .templates import MAX_ITEMS, TemplateLibrary, normalize_phrase

# Options after the first are separated by a newline and the same item mark the options block starts with.
OPTION_SEPARATOR = "\n" + OPTIONS_MARK.rsplit("\n", 1)[1]

DROP_REASONS = {
    "empty": "empty question or answer",
    "cot": "malformed chain of thought",
    "options": "malformed options",
    "too_many_options": f"more than {MAX_ITEMS - 1} options",
    "answer_not_in_options": "answer is not one of the options",
}


@dataclass(frozen=True)
class Pair:
    kind: str  # basic | options | cot | options_cot (the QA pattern pools of templates.PAIR_KINDS)
    question: str  # the stem: without the options block and the chain-of-thought request
    answer: str  # the free-form answer, or the text of the correct option
    cot: str = ""  # the reasoning, without its final "." (templates put it back)
    options: Tuple[str, ...] = ()  # shuffled; an unanswerable choice, if any, is last
    answer_index: int = -1


def is_unanswerable(text: str, lib: TemplateLibrary) -> bool:
    # The length test skips normalizing long answers, which can never be one of the short phrases.
    return len(text) <= 2 * lib.longest_unanswerable and normalize_phrase(text) in lib.recognized_unanswerable


def validate_pair(
    qa: dict, seed: int, index: int, unanswerable_option: str, unanswerable_answer: str, lib: TemplateLibrary
) -> Tuple[Optional[Pair], Optional[str]]:
    """``(Pair, None)`` or ``(None, reason)`` with reason a key of DROP_REASONS.

    ``index`` is the pair's position in its entry: options are shuffled with ``random.Random(seed * index)`` as
    the released code does (the synthesizer tends to put the gold option first). Answers that say "no answer"
    are rewritten to this collection's unanswerable phrasing.
    """
    question, answer = qa["Q"].strip(), qa["A"].strip()
    if not question or not answer:
        return None, "empty"
    cot = ""
    if COT_QUESTION_MARK in question or COT_ANSWER_MARK in answer:
        parts = answer.split(COT_ANSWER_MARK)
        if not question.endswith(COT_QUESTION_MARK) or len(parts) != 2:
            return None, "cot"
        question = question[: -len(COT_QUESTION_MARK)].strip()
        cot, answer = parts[0].strip(), parts[1].strip()
        if cot.endswith("."):
            cot = cot[:-1].rstrip()
        if not question or not cot or not answer:
            return None, "cot"
    unanswerable = is_unanswerable(answer, lib)
    if question.startswith(OPTIONS_MARK.lstrip("\n")):  # an options block with no question before it
        return None, "options"
    if OPTIONS_MARK not in question:
        if unanswerable:
            answer = unanswerable_answer
        return Pair("cot" if cot else "basic", question, answer, cot), None

    parts = question.split(OPTIONS_MARK)
    if len(parts) != 2:
        return None, "options"
    stem = parts[0].strip()
    options = [o.strip() for o in parts[1].split(OPTION_SEPARATOR)]
    if not stem or len(options) < 2 or not all(options) or len(set(options)) != len(options):
        return None, "options"
    # "None of the above"-style options are replaced by this collection's phrasing and always listed last.
    real = [o for o in options if not is_unanswerable(o, lib)]
    has_unanswerable_option = len(real) < len(options)
    if len(real) + 1 > MAX_ITEMS:
        return None, "too_many_options"
    if answer in real:
        gold = answer
    elif unanswerable or answer in options:  # in options but not in real: it is an unanswerable option
        gold, has_unanswerable_option = None, True
    else:
        return None, "answer_not_in_options"
    random.Random(seed * index).shuffle(real)
    if has_unanswerable_option:
        real.append(unanswerable_option)
    answer_index = real.index(gold) if gold is not None else len(real) - 1
    return Pair("options_cot" if cot else "options", stem, real[answer_index], cot, tuple(real), answer_index), None
