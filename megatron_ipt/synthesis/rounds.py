"""Multi-round (M-shot) synthesis, as the released code does it (github.com/microsoft/LMOps instruction_pretrain/;
Cheng et al. 2024, arXiv 2406.14491): round r's texts get the chains of round r-1 as demonstrations.

``generate(prompts) -> list[str | None]`` is any engine call; ``None`` or "" marks a failed generation,
which yields zero pairs and no chain link (the released code crashes there instead).

``count_tokens(prompt)`` measures a prompt for the length guard: the engine's real tokenizer when it has one,
otherwise the paper's estimate, whitespace words x 1.5 (``words_x15``).
"""

import math

from megatron_ipt.formats.records import ENTRY_KEYS, Collection, Entry
from megatron_ipt.formats.wire import cook_context, cook_example, parse_pred


def words_x15(text: str) -> float:
    """The paper's cheap token estimate: whitespace words x 1.5."""
    return len(text.split(" ")) * 1.5


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


def finish_round(items, preds):
    """Parse generations and extend chains; returns (chains, failures). Each new entry carries the item's extra
    keys (e.g. the input record's ``id``/``source``); ``followed_by_next`` is left for a later round to decide."""
    out, failures = [], 0
    pi = 0
    for it in items:
        if it["prompt"] is None:
            out.append(it["chain"])
            continue
        pred = preds[pi]
        pi += 1
        if not pred:
            failures += 1
        pairs = parse_pred(pred or "", dedup=True)
        linked = bool(it["chain"]) and bool(it["chain"][-1].followed_by_next) and len(pairs) > 0
        out.append(it["chain"] + [Entry(it["text"], pairs, linked, carried=carried_keys(it["extra"]))])
    return out, failures


def carried_keys(extra):
    """The input record's keys an entry carries; they never replace the entry's own keys."""
    return {k: v for k, v in extra.items() if k not in ENTRY_KEYS}


def synthesize_rounds(
    texts, generate, rounds=1, max_model_len=4096, max_new_tokens=400, count_tokens=words_x15, extras=None
):
    """Run all M rounds over ``texts``; returns (list of Collection, failures). Round r gets texts[r*B:(r+1)*B].

    ``extras`` (optional, one dict per text) are extra keys copied into that text's entry."""
    bsz = math.ceil(len(texts) / rounds) if texts else 0
    prev, failures = [], 0
    for r in range(rounds):
        cur = texts[r * bsz : (r + 1) * bsz]
        items = build_round(
            cur, prev, max_model_len, max_new_tokens, count_tokens, extras[r * bsz : (r + 1) * bsz] if extras else None
        )
        prompts = [it["prompt"] for it in items if it["prompt"] is not None]
        preds = list(generate(prompts)) if prompts else []
        if len(preds) != len(prompts):
            raise RuntimeError(f"engine returned {len(preds)} generations for {len(prompts)} prompts")
        prev, f = finish_round(items, preds)
        failures += f
    return [Collection(chain) for chain in prev], failures


def split_long_text(text, max_model_len=4096, max_new_tokens=400, count_tokens=words_x15):
    """Rule for raw texts too long for one round-0 prompt.

    The text is cut at single spaces into consecutive pieces, each the longest run of words whose
    ``cook_context`` prompt fits ``max_model_len - max_new_tokens`` (found by binary search, so a long text
    costs O(pieces x log words) token counts). ``" ".join(pieces) == text``. A single word that alone does not
    fit (e.g. a long run without spaces) is cut by characters; those pieces join back with no separator, which
    is the only case where the join above does not hold.
    """
    budget = max_model_len - max_new_tokens

    def fits(s):
        return count_tokens(cook_context(s)) <= budget

    if fits(text):
        return [text]
    words = text.split(" ")
    pieces, start = [], 0
    while start < len(words):
        lo, hi = 0, len(words) - start  # the longest fitting run has between lo and hi words
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if fits(" ".join(words[start : start + mid])):
                lo = mid
            else:
                hi = mid - 1
        if lo == 0:  # one word longer than a prompt: cut it by characters
            pieces.extend(_split_chars(words[start], fits))
            start += 1
        else:
            pieces.append(" ".join(words[start : start + lo]))
            start += lo
    return pieces


def _split_chars(word, fits):
    out = []
    while word:
        lo, hi = 1, len(word)
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if fits(word[:mid]):
                lo = mid
            else:
                hi = mid - 1
        out.append(word[:lo])
        word = word[lo:]
    return out
