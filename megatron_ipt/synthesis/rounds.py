"""Multi-round (M-shot) synthesis, as the released code does it (github.com/microsoft/LMOps instruction_pretrain/;
Cheng et al. 2024, arXiv 2406.14491): round r's texts get the chains of round r-1 as demonstrations.

``generate(prompts) -> list[str | None]`` is any engine call; ``None`` marks a failed generation (the engine
did not answer), which yields zero pairs and no chain link and is recorded for ``--resume`` (the released code
crashes there instead). A string is an answer, even one that parses to zero pairs (``""`` included: the rules
engine's answer for a text it cannot mine): that text is kept without pairs and is no failure.

``count_tokens(prompt)`` measures a prompt for the length guard: the engine's real tokenizer when it has one,
otherwise the paper's estimate, whitespace words x 1.5, with long runs without spaces counted by bytes
(``engines.base.words_x15``).
"""

import asyncio
import heapq
import math
from dataclasses import dataclass, field
from typing import List, Optional

from megatron_ipt.errors import ConfigError
from megatron_ipt.formats.records import ENTRY_KEYS, Collection, Entry
from megatron_ipt.formats.wire import cook_context, cook_example, parse_pred

from .engines.base import words_x15
from .engines.batching import DEFAULT_MAX_IN_FLIGHT, BatchingAdapter


def demonstration(chain) -> str:
    """Last entry of a chain, extended backwards while entries have inherit_from_prev=True, in order."""
    start = len(chain) - 1
    while start > 0 and chain[start].inherit_from_prev:
        start -= 1
    return "".join(cook_example(e.context, e.qa_list) for e in chain[start:])


def chain_prompt(text, chain, budget, count_tokens=words_x15):
    """The prompt of ``text`` continuing ``chain`` (its earlier entries, [] for a new chain): the chain's
    demonstration before the text while it fits ``budget`` tokens. Sets the chain's last followed_by_next.
    One chain's prompt depends on that chain alone, which is what lets chains run independently."""
    if not chain:
        return cook_context(text)
    chain[-1].followed_by_next = False
    if chain[-1].qa_list:
        candidate = demonstration(chain) + cook_context(text)
        if count_tokens(candidate) <= budget:
            chain[-1].followed_by_next = True
            return candidate
    return cook_context(text)


def chain_entry(text, chain, pairs, extra):
    """The entry of ``text`` after ``chain`` with its ``pairs`` (None = failed generation: zero pairs, no link)."""
    pairs = pairs or []
    linked = bool(chain) and bool(chain[-1].followed_by_next) and len(pairs) > 0
    return Entry(text, pairs, linked, carried=carried_keys(extra))


def build_round(texts, prev, max_model_len=4096, max_new_tokens=400, count_tokens=words_x15, extras=None):
    """Items ``{"text", "chain", "prompt", "extra"}`` for one round; mutates followed_by_next of previous chains."""
    budget = max_model_len - max_new_tokens
    items = []
    for i, text in enumerate(texts):
        extra = extras[i] if extras else {}
        chain = prev[i] if i < len(prev) else []
        items.append(
            {"text": text, "chain": chain, "prompt": chain_prompt(text, chain, budget, count_tokens), "extra": extra}
        )
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
        pairs = results[k]
        k += 1
        out.append(it["chain"] + [chain_entry(it["text"], it["chain"], pairs, it["extra"])])
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
    demonstrations: int = 0  # generated prompts that carry their chain's demonstration (after a generation of this run)
    extending: int = 0  # of those, the prompts that start with exactly their chain's last prompt + generation
    # indices of the texts generated in this run whose answer parsed to zero pairs (kept without pairs; no failure)
    without_pairs: List[int] = field(default_factory=list)


SCHEDULES = ("pipelined", "barrier")


def synthesize_part(
    texts,
    engine,
    rounds=1,
    max_model_len=4096,
    max_new_tokens=400,
    count_tokens=words_x15,
    extras=None,
    earlier=None,
    schedule="barrier",
    max_in_flight=None,
):
    """Run all M rounds over ``texts`` (round r gets texts[r*B:(r+1)*B]); returns a PartResult.

    ``engine``: an engine (``generate(prompts)``; for ``pipelined``, ``agenerate(prompt)`` and ``run(coroutine)``
    too, see engines/base.py) or a plain batch function ``generate(prompts)``.

    ``schedule``: ``barrier`` (the reference procedure) asks for each round's generations in one ``generate``
    call and starts round r+1 when all of round r is back. ``pipelined`` runs each chain on its own: text
    r*B+i (chain i's round r) is asked for as soon as chain i's round r-1 is parsed, while other chains are in
    flight. At most ``max_in_flight`` chains run at once (default: the engine's ``max_in_flight``, else
    DEFAULT_MAX_IN_FLIGHT), each with at most one generation asked; a chain keeps its place from its first
    generation to its last, so its next round goes to the engine at once, while its prefix (last prompt +
    generation) is still in the engine's prefix cache, instead of queueing behind chains that have not started.
    Both give the same result: a text's prompt depends on its own chain alone (``chain_prompt``), so the order in
    which generations come back changes nothing; the pipelined run's prompts are checked against the barrier
    layout on assembly. If a generation raises (not a failed item: those are None), the other chains are
    cancelled and the error propagates.

    Prefix check: a prompt with a demonstration is ``demonstration(chain) + cook_context(text)``, and the
    demonstration re-renders the chain's last entry from its parsed pairs; when the model wrote its pairs in the
    template's exact form, the prompt therefore starts with the chain's last prompt followed by its generation,
    which is what an engine's prefix cache can reuse. ``PartResult.demonstrations``/``extending`` count how
    often that held (see ``prefix_extends``).

    ``extras`` (optional, one dict per text) are extra keys copied into that text's entry. ``earlier``
    (optional) is ``{text index: (prompt, pairs)}`` from an earlier run of the same texts: a text whose prompt
    equals its earlier prompt (any prompt, where that is None) gets those pairs (None: failed) without a
    generation. A run is determined by each text's pairs, so giving the earlier results of every text that did
    not fail regenerates exactly the failed texts and the later-round texts whose prompts (demonstrations)
    they change: the result is the run that had no failures."""
    if schedule not in SCHEDULES:
        raise ConfigError(f"--schedule {schedule!r}: choose one of {', '.join(SCHEDULES)}")
    generate = engine if not hasattr(engine, "generate") else engine.generate
    if schedule == "barrier" or not texts:
        part, preds = _barrier(texts, generate, rounds, max_model_len, max_new_tokens, count_tokens, extras, earlier)
        return _with_prefix_check(part, texts, rounds, preds)
    if hasattr(engine, "agenerate"):
        agenerate, run = engine.agenerate, engine.run
        if max_in_flight is None:
            max_in_flight = getattr(engine, "max_in_flight", None)
    else:
        agenerate, run = BatchingAdapter(generate).agenerate, asyncio.run
    results, preds = _pipelined(
        texts,
        agenerate,
        run,
        rounds,
        max_model_len - max_new_tokens,
        count_tokens,
        extras,
        earlier,
        DEFAULT_MAX_IN_FLIGHT if max_in_flight is None else max_in_flight,
    )
    # The chains' results laid out as the barrier schedule lays them out; every prompt must be the one the
    # pipelined run sent (else the replay would ask for a generation).
    part, _ = _barrier(texts, _replay_only, rounds, max_model_len, max_new_tokens, count_tokens, extras, results)
    return _with_prefix_check(PartResult(part.collections, part.failed, part.prompts, len(preds)), texts, rounds, preds)


def prefix_extends(prompt, last_prompt, last_generation):
    """Whether ``prompt`` starts with exactly its chain's last prompt followed by that prompt's generation: the
    condition for an engine's prefix cache to serve all of them (at the token level a tokenizer may still merge
    differently across the join; the engine's reported cache hits are the measure of that)."""
    return prompt.startswith(last_prompt + last_generation)


def _with_prefix_check(part, texts, rounds, preds):
    """``part`` with the prefix check of its generated prompts (``preds``: {text index: generation} of this run;
    text j's chain predecessor is j - B), and the texts of this run answered without pairs."""
    part.without_pairs = [
        j for j, pred in sorted(preds.items()) if pred is not None and not parse_pred(pred, dedup=True)
    ]
    bsz = math.ceil(len(texts) / rounds) if texts else 0
    for j, prompt in enumerate(part.prompts):
        last = j - bsz
        if last < 0 or j not in preds or not preds.get(last) or prompt == cook_context(texts[j]):
            continue
        part.demonstrations += 1
        part.extending += prefix_extends(prompt, part.prompts[last], preds[last])
    return part


def _replay_only(prompts):
    raise AssertionError("pipelined and barrier schedules built different prompts")


def _barrier(texts, generate, rounds, max_model_len, max_new_tokens, count_tokens, extras, earlier):
    bsz = math.ceil(len(texts) / rounds) if texts else 0
    prev, failed, prompts, preds = [], [], [None] * len(texts), {}
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
            generations = list(generate([asked[i]["prompt"] for i in todo]))
            if len(generations) != len(todo):
                raise RuntimeError(f"engine returned {len(generations)} generations for {len(todo)} prompts")
            for i, pred in zip(todo, generations):
                preds[lo + i] = pred
                results[i] = parse_pred(pred, dedup=True) if pred is not None else None
        prev = finish_round(items, results)
        failed += [lo + i for i, pairs in enumerate(results) if pairs is None]
    return PartResult([Collection(chain) for chain in prev], failed, prompts, len(preds)), preds


def _pipelined(texts, agenerate, run, rounds, budget, count_tokens, extras, earlier, max_in_flight):
    """``({text index: (prompt, pairs)}, {text index: generation asked in this run})``, chain by chain: chain i
    is texts i, B+i, 2B+i, ..."""
    bsz = math.ceil(len(texts) / rounds)
    results, preds = {}, {}

    async def chain(i, gate):
        entries, holding = [], False
        try:
            for r in range(rounds):
                j = r * bsz + i
                if j >= len(texts):
                    break
                prompt = chain_prompt(texts[j], entries, budget, count_tokens)
                known = earlier.get(j) if earlier else None
                if known is not None and known[0] in (None, prompt):
                    pairs = known[1]
                else:
                    if not holding:  # from its first generation on, the chain keeps its place (see synthesize_part)
                        await gate.acquire(i)
                        holding = True
                    preds[j] = pred = await agenerate(prompt)
                    pairs = parse_pred(pred, dedup=True) if pred is not None else None
                results[j] = (prompt, pairs)
                entries.append(chain_entry(texts[j], entries, pairs, extras[j] if extras else {}))
        finally:
            if holding:
                gate.release()

    async def main():
        gate = _Gate(max_in_flight)
        chains = [asyncio.ensure_future(chain(i, gate)) for i in range(bsz)]
        try:
            await asyncio.gather(*chains)
        finally:  # one chain raising cancels the others (nothing is left to run on the engine's loop)
            for task in chains:
                task.cancel()
            await asyncio.gather(*chains, return_exceptions=True)

    run(main())
    return results, preds


class _Gate:
    """At most ``slots`` holders; waiters are let in by smallest key (not arrival), so the scheduler decides
    which generation goes next."""

    def __init__(self, slots):
        if slots < 1:
            raise ConfigError(f"--max-in-flight {slots}: expected at least 1")
        self.free, self.waiting = slots, []

    async def acquire(self, key):
        if self.free > 0 and not self.waiting:
            self.free -= 1
            return
        turn = asyncio.get_running_loop().create_future()
        heapq.heappush(self.waiting, (key, id(turn), turn))
        await turn  # the slot is handed over by release()

    def release(self):
        while self.waiting:
            turn = heapq.heappop(self.waiting)[2]
            if not turn.done():  # skip a waiter that was cancelled
                turn.set_result(None)
                return
        self.free += 1


def synthesize_rounds(
    texts,
    generate,
    rounds=1,
    max_model_len=4096,
    max_new_tokens=400,
    count_tokens=words_x15,
    extras=None,
    schedule="barrier",
):
    """Run all M rounds over ``texts``; returns (list of Collection, number of failed generations)."""
    r = synthesize_part(texts, generate, rounds, max_model_len, max_new_tokens, count_tokens, extras, schedule=schedule)
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
