"""Model-free reading-comprehension miner (in the spirit of AdaptLLM's pattern mining, Cheng et al. 2023).

Reads the LAST context of a wire-format prompt and emits pairs in the same format, deterministically:
- summary: the lead sentence as the main point (free-form);
- reason: "X because/since Y" -> "Why X?" / "Y." (free-form);
- inference: "X, so / and therefore / thus / hence ... Y" -> a chain-of-thought pair that ends with the
  exact markers ``"\\nLet's think step by step."`` / ``"\\nTherefore, the answer is "`` of the synthesizer's
  chain-of-thought pairs (megatron_ipt/formats/wire.py);
- word-to-text: a sentence that uses a long word;
- completion: the second half of a sentence, with options built from other sentences of the same text.
So users without a GPU can still build augmented corpora; pairs come out in the synthesizer's format.
"""

import re
from dataclasses import dataclass
from itertools import islice
from typing import Optional

from megatron_ipt.errors import ConfigError
from megatron_ipt.formats.wire import COT_ANSWER_MARK, COT_QUESTION_MARK, DELIMITER, OPTIONS_MARK, QA_TEMPLATE
from megatron_ipt.text import sentences
from megatron_ipt.tokenizers import TokenizerSpec

from .base import Engine, Generation, load_token_counter

_WORD = re.compile(r"\b[a-z][a-z-]{7,}\b")
_REASONS = (" because ", " since ")
# ", so that" states a purpose, not a consequence, so it is excluded explicitly.
_INFERENCES = (
    ", and therefore ",
    " and therefore ",
    ", therefore ",
    "; therefore ",
    ", thus ",
    ", hence ",
    ", consequently ",
    ", as a result, ",
    ", so ",
)
_NOT_INFERENCE = (", so that ", ", so as ")
MAX_PER_KIND = 2


def last_context(prompt):
    try:
        return prompt.rsplit("<CON> ", 1)[1].rsplit(" </CON>", 1)[0]
    except IndexError:
        return ""


def _split_at(sentence, connectives):
    """(clause before, connective, clause after) at the first connective with enough text on both sides."""
    for conn in connectives:
        i = sentence.find(conn)
        if i >= 10 and len(sentence) - i - len(conn) > 10:
            return sentence[:i].rstrip(" ,;"), conn, sentence[i + len(conn) :].rstrip(".")
    return None


def _lower_first(s):
    return s[0].lower() + s[1:]


def _upper_first(s):
    return s[0].upper() + s[1:]


def reason_pairs(sents):
    for s in sents:
        found = _split_at(s, _REASONS)
        if found:
            a, _, b = found
            yield f"Why {_lower_first(a)}?", _upper_first(b) + "."


def inference_pairs(sents):
    for s in sents:
        if any(x in s for x in _NOT_INFERENCE):
            continue
        found = _split_at(s, _INFERENCES)
        if found:
            a, conn, b = found
            word = conn.strip(" ,;")
            q = f"What does the text conclude from the fact that {_lower_first(a)}?{COT_QUESTION_MARK}"
            rationale = (
                f'The text first states that {_lower_first(a)}. The words "{word}" then introduce what follows from it.'
            )
            yield q, rationale + COT_ANSWER_MARK + _upper_first(b)


def word_pairs(sents):
    for s in sents[1:]:
        m = _WORD.search(s)
        if m:
            yield f'Write a sentence from the text that uses the word "{m.group(0)}".', s


def completion_pairs(sents):
    for s in sents[1:]:
        words = s.split()
        if len(words) >= 8:
            half = len(words) // 2
            stem, end = " ".join(words[:half]), " ".join(words[half:])
            others = [" ".join(o.split()[len(o.split()) // 2 :]) for o in islice((o for o in sents if o != s), 2)]
            if others:  # options in the wire format; gold first, the renderer shuffles them (corpus/pairs.py)
                yield f"Complete the sentence: {stem} ...{OPTIONS_MARK}" + "\n- ".join([end] + others), end
            else:
                yield f"Complete the sentence: {stem} ...", end


def mine_pairs(text, max_pairs=6):
    sents = sentences(text)
    if not sents:
        return []
    kinds = [
        list(islice(gen(sents), MAX_PER_KIND)) for gen in (reason_pairs, inference_pairs, word_pairs, completion_pairs)
    ]
    # One of each kind first, then the second of each, so the cap keeps the mix varied.
    pairs = [("What is the main point of this text, in one sentence?", sents[0])]
    pairs += [k[i] for i in range(MAX_PER_KIND) for k in kinds if i < len(k)]
    seen, out = set(), []
    for q, a in pairs:
        if q.lower() not in seen:
            seen.add(q.lower())
            out.append((q, a))
    return out[:max_pairs]


@dataclass(frozen=True)
class RulesSettings:
    prompt_style: str = "wire"  # only "wire": the miner reads wire prompts
    max_pairs: int = 6
    tokenizer: Optional[TokenizerSpec] = None  # counts prompt tokens for the length guard; None: words x1.5


class RulesEngine(Engine):
    """A text with nothing to mine (e.g. "Ok.": no sentence of 5 words) is answered with "": kept without pairs,
    as the paper keeps such texts raw; no failure, since no retry can change a deterministic result."""

    name = "rules"
    Settings = RulesSettings
    empty_answer_fails = False

    def __init__(self, settings: Optional[RulesSettings] = None):
        s = settings or RulesSettings()
        if s.prompt_style != "wire":
            raise ConfigError("--prompt-style applies to model engines; the rules engine reads wire prompts")
        counter = load_token_counter(s.tokenizer) if s.tokenizer else None
        super().__init__(max_new_tokens=None, temperature=None, token_counter=counter)
        self.max_pairs = s.max_pairs

    def _generate(self, texts):
        out = [
            Generation(
                DELIMITER.join(
                    QA_TEMPLATE.format(question=q, answer=a) for q, a in mine_pairs(last_context(t), self.max_pairs)
                )
            )
            for t in texts
        ]
        self.progress(len(texts))
        return out
