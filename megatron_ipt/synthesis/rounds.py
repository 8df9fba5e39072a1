"""Multi-round (M-shot) synthesis, as the released code does it (github.com/microsoft/LMOps instruction_pretrain/;
Cheng et al. 2024, arXiv 2406.14491): round r's texts get the chains of round r-1 as demonstrations.

``generate(prompts) -> list[str | None]`` is any engine call; ``None`` or "" marks a failed generation,
which yields zero pairs and no chain link (the released code crashes there instead).

``count_tokens(prompt)`` measures a prompt for the length guard: the engine's real tokenizer when it has one,
otherwise the paper's estimate, whitespace words x 1.5, with long runs without spaces counted by bytes
(``words_x15``).
"""

import math
import re
from dataclasses import dataclass
from typing import List, Optional

from megatron_ipt.formats.records import ENTRY_KEYS, Collection, Entry
from megatron_ipt.formats.wire import cook_context, cook_example, parse_pred

# A run of more than this many characters without a space is no ordinary word (a URL, a table rule, base64,
# text in a script written without spaces); words x 1.5 would count a 50 MB one as 1.5 tokens.
LONG_RUN = 32
_LONG_RUN = re.compile(f"[^ ]{{{LONG_RUN + 1},}}")


def words_x15(text: str) -> float:
    """The paper's cheap token estimate, whitespace words x 1.5, except that a run of more than LONG_RUN
    characters without a space counts as its UTF-8 bytes: a conservative bound, since byte-level BPE and
    SentencePiece with byte fallback never make more tokens than bytes. Ordinary text (no such run) is
    counted exactly as the paper does."""
    n = (text.count(" ") + 1) * 1.5
    for m in _LONG_RUN.finditer(text):
        n += len(m.group().encode("utf-8", "surrogatepass")) - 1.5
    return n


def demonstration(chain) -> str:
    """Last entry of a chain, extended backwards while entries have inherit_from_prev=True, in order."""
    start = len(chain) - 1
    while start > 0 and chain[start].inherit_from_prev:
        start -= 1
    return "".join(cook_example(e.context, e.qa_list) for e in chain[start:])


def build_round(texts, prev, max_model_len=4096, max_new_tokens=400, count_tokens=words_x15, extras=None):
    """Items ``{"text", "chain", "prompt", "extra"}`` for one round; mutates followed_by_next of previous chains."""
    budget = max_model_len - max_new_tokens
    items = []
    for i, text in enumerate(texts):
        extra = extras[i] if extras else {}
        if i >= len(prev):
            items.append({"text": text, "chain": [], "prompt": cook_context(text), "extra": extra})
            continue
        chain = prev[i]
        prompt = cook_context(text)
        chain[-1].followed_by_next = False
        if chain[-1].qa_list:
            candidate = demonstration(chain) + cook_context(text)
            if count_tokens(candidate) <= budget:
                chain[-1].followed_by_next = True
                prompt = candidate
        items.append({"text": text, "chain": chain, "prompt": prompt, "extra": extra})
    # Leftover chains are kept: prepended (never connected) to the chains of this round's items.
    for k, chain in enumerate(prev[len(texts) :]):
        chain[-1].followed_by_next = False
        if k < len(items):
            items[k]["chain"] = chain + items[k]["chain"]
        else:  # fewer texts than leftovers (only when a round slice is empty): keep as its own item
            items.append({"text": None, "chain": chain, "prompt": None, "extra": {}})
    return items


def finish_round(items, results):
    """Extend chains with each prompted item's pairs (``results``, in item order; None = failed generation,
    zero pairs); returns the chains. Each new entry carries the item's extra keys (e.g. the input record's
    ``id``/``source``); ``followed_by_next`` is left for a later round to decide."""
    out, k = [], 0
    for it in items:
        if it["prompt"] is None:
            out.append(it["chain"])
            continue
        pairs = results[k] or []
        k += 1
        linked = bool(it["chain"]) and bool(it["chain"][-1].followed_by_next) and len(pairs) > 0
        out.append(it["chain"] + [Entry(it["text"], pairs, linked, carried=carried_keys(it["extra"]))])
    return out


def carried_keys(extra):
    """The input record's keys an entry carries; they never replace the entry's own keys."""
    return {k: v for k, v in extra.items() if k not in ENTRY_KEYS}


@dataclass
class PartResult:
    collections: List[Collection]  # one per chain, in output order
    failed: List[int]  # indices (into the texts) of the texts whose generation failed: zero pairs, no link
    prompts: List[Optional[str]]  # the prompt each text got
    generated: int  # prompts sent to the engine (the others reused ``earlier`` results)


def synthesize_part(
    texts,
    generate,
    rounds=1,
    max_model_len=4096,
    max_new_tokens=400,
    count_tokens=words_x15,
    extras=None,
    earlier=None,
):
    """Run all M rounds over ``texts`` (round r gets texts[r*B:(r+1)*B]); returns a PartResult.

    ``extras`` (optional, one dict per text) are extra keys copied into that text's entry. ``earlier``
    (optional) is ``{text index: (prompt, pairs)}`` from an earlier run of the same texts: a text whose prompt
    equals its earlier prompt (any prompt, where that is None) gets those pairs (None: failed) without a
    generation. A run is determined by each text's pairs, so giving the earlier results of every text that did
    not fail regenerates exactly the failed texts and the later-round texts whose prompts (demonstrations)
    they change: the result is the run that had no failures."""
    bsz = math.ceil(len(texts) / rounds) if texts else 0
    prev, failed, prompts, generated = [], [], [None] * len(texts), 0
    for r in range(rounds):
        lo = r * bsz
        cur = texts[lo : lo + bsz]
        items = build_round(
            cur, prev, max_model_len, max_new_tokens, count_tokens, extras[lo : lo + bsz] if extras else None
        )
        asked = [it for it in items if it["prompt"] is not None]  # asked[i] is the item of text lo + i
        results, todo = [None] * len(asked), []
        for i, it in enumerate(asked):
            prompts[lo + i] = it["prompt"]
            known = earlier.get(lo + i) if earlier else None
            if known is not None and known[0] in (None, it["prompt"]):
                results[i] = known[1]
            else:
                todo.append(i)
        if todo:
            preds = list(generate([asked[i]["prompt"] for i in todo]))
            if len(preds) != len(todo):
                raise RuntimeError(f"engine returned {len(preds)} generations for {len(todo)} prompts")
            generated += len(todo)
            for i, pred in zip(todo, preds):
                results[i] = parse_pred(pred, dedup=True) if pred else None
        prev = finish_round(items, results)
        failed += [lo + i for i, pairs in enumerate(results) if pairs is None]
    return PartResult([Collection(chain) for chain in prev], failed, prompts, generated)


def synthesize_rounds(
    texts, generate, rounds=1, max_model_len=4096, max_new_tokens=400, count_tokens=words_x15, extras=None
):
    """Run all M rounds over ``texts``; returns (list of Collection, number of failed generations)."""
    r = synthesize_part(texts, generate, rounds, max_model_len, max_new_tokens, count_tokens, extras)
    return r.collections, len(r.failed)


def entry_sources(n, rounds):
    """The text index of each entry of the collections ``synthesize_part`` makes of n texts, in output order
    (chain by chain, oldest entry first). Which chain a text's entry lands in depends on n and M only."""
    result = synthesize_part(
        [""] * n, lambda prompts: [None] * len(prompts), rounds, extras=[{"_text": j} for j in range(n)]
    )
    return [e.carried["_text"] for c in result.collections for e in c]


def split_long_text(text, max_model_len=4096, max_new_tokens=400, count_tokens=words_x15):
    """Rule for raw texts too long for one round-0 prompt.

    The text is cut at single spaces into consecutive pieces, each the longest run of words whose
    ``cook_context`` prompt fits ``max_model_len - max_new_tokens``. ``" ".join(pieces) == text``. A single word
    that alone does not fit (e.g. a long run without spaces) is cut by characters; those pieces join back with
    no separator, which is the only case where the join above does not hold.

    Linear in the text's length: each piece's length is searched outwards from the previous piece's, so the
    counted strings stay within about twice a piece (never the rest of the text), and nothing is copied per
    piece but the piece.
    """
    budget = max_model_len - max_new_tokens

    def fits(s):
        return count_tokens(cook_context(s)) <= budget

    words = text.split(" ")
    # Counting the whole text first is a shortcut for the common short text (the search below would find a text
    # that fits as one piece too) and gives the first piece's guess; a huge text is never counted (or tokenized)
    # whole.
    guess = max(1, budget // 2)
    if len(text) <= 64 * max(budget, 1):
        total = count_tokens(cook_context(text))
        if total <= budget:
            return [text]
        guess = max(1, int(len(words) * budget / total))
    pieces, start = [], 0
    while start < len(words):
        n = _longest_fit(lambda k, s=start: fits(" ".join(words[s : s + k])), len(words) - start, guess)
        if n == 0:  # one word longer than a prompt: cut it by characters
            pieces.extend(_split_chars(words[start], fits))
            start += 1
        else:
            pieces.append(" ".join(words[start : start + n]))
            start, guess = start + n, n
    return pieces


def _split_chars(word, fits):
    out, start, guess = [], 0, 1
    while start < len(word):
        n = max(1, _longest_fit(lambda k, s=start: fits(word[s : s + k]), len(word) - start, guess))
        out.append(word[start : start + n])
        start, guess = start + n, n
    return out


def _longest_fit(fits_n, limit, guess):
    """The largest n in [0, limit] with ``fits_n(n)``, for a monotone ``fits_n`` (true up to some n, false
    after; n = 0 counts as fitting). Probes step outwards from ``guess`` by 1, 2, 4, ... and then bisect, so
    an answer near the guess costs few probes, and no probe is much longer than max(guess, 2 x answer)."""
    guess = min(max(guess, 1), limit)
    if fits_n(guess):  # the answer is in [guess, limit]
        lo, hi, step = guess, limit, 1
        while lo < hi:
            probe = min(lo + step, hi)
            if not fits_n(probe):
                hi = probe - 1
                break
            lo, step = probe, step * 2
    else:  # the answer is in [0, guess - 1]
        lo, hi, step = 0, guess - 1, 1
        while hi > 0:
            probe = max(hi - step + 1, 0)
            if probe == 0 or fits_n(probe):
                lo = probe
                break
            hi, step = probe - 1, step * 2
    while lo < hi:  # fits_n(lo) holds and the answer is at most hi
        mid = (lo + hi + 1) // 2
        if fits_n(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo
