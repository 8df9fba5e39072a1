"""Model-free reading-comprehension miner (in the spirit of AdaptLLM's pattern mining).

Reads the LAST context of a wire-format prompt and emits pairs in the same format, deterministically:
title/summary (lead sentence), word-to-text, causal/inference connectives, sentence completion
(free-form and with options built from other sentences of the same text).
"""
import re

from .engines.base import Engine
from .format import QA_TEMPLATE, DELIMITER, OPTIONS_MARK

_SENT = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'(])")
_WORD = re.compile(r"\b[a-z][a-z-]{7,}\b")
# connective -> (question template over the clause before it, answers with the clause after it)
_CAUSAL = [
    (" because ", "Why {a}?"),
    (" since ", "Why {a}?"),
    (", so ", "What follows from the fact that {a}?"),
    (", therefore ", "What can be inferred from the fact that {a}?"),
    (", thus ", "What can be inferred from the fact that {a}?"),
    (" as a result ", "What is a result of the fact that {a}?"),
]


def last_context(prompt):
    try:
        return prompt.rsplit("<CON> ", 1)[1].rsplit(" </CON>", 1)[0]
    except IndexError:
        return ""


def sentences(text):
    return [s.strip() for s in _SENT.split(" ".join(text.split())) if len(s.split()) >= 5]


def mine_pairs(text, max_pairs=6):
    sents = sentences(text)
    if not sents:
        return []
    pairs = [("What is the main point of this text, in one sentence?", sents[0])]
    for s in sents:
        for conn, tmpl in _CAUSAL:
            i = s.find(conn)
            if i >= 10 and len(s) - i - len(conn) > 10:
                a, b = s[:i].rstrip(" ,"), s[i + len(conn):].rstrip(".")
                pairs.append((tmpl.format(a=a[0].lower() + a[1:]), b[0].upper() + b[1:] + "."))
                break
    for s in sents[1:]:
        m = _WORD.search(s)
        if m:
            pairs.append((f'Write a sentence from the text that uses the word "{m.group(0)}".', s))
            break
    for k, s in enumerate(sents[1:], 1):
        words = s.split()
        if len(words) >= 8:
            half = len(words) // 2
            stem, end = " ".join(words[:half]), " ".join(words[half:])
            others = [" ".join(o.split()[len(o.split()) // 2:]) for o in sents if o != s][:2]
            if others:  # options in the reference format; gold first, the renderer shuffles (§4.2)
                q = f"Complete the sentence: {stem} ...{OPTIONS_MARK}" + "\n- ".join([end] + others)
            else:
                q = f"Complete the sentence: {stem} ..."
            pairs.append((q, end))
            break
    seen, out = set(), []
    for q, a in pairs:
        if q.lower() not in seen:
            seen.add(q.lower())
            out.append((q, a))
    return out[:max_pairs]


class RulesEngine(Engine):
    name = "rules"

    def __init__(self, max_pairs=6, **_):
        self.max_pairs = max_pairs

    def generate(self, prompts):
        return [DELIMITER.join(QA_TEMPLATE.format(question=q, answer=a)
                               for q, a in mine_pairs(last_context(p), self.max_pairs)) or None
                for p in prompts]
