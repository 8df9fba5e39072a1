import asyncio

import pytest

from megatron_ipt.formats.wire import cook_context
from megatron_ipt.synthesis.rounds import synthesize_part, synthesize_rounds


def echo_engine(log):
    """Real deterministic generator: one pair naming the last context of the prompt; None (a failed generation)
    for a context starting with FAIL, "" (an answer without pairs) for one starting with NONE."""

    def generate(prompts):
        log.append(list(prompts))
        out = []
        for p in prompts:
            ctx = p.rsplit("<CON> ", 1)[1].split(" </CON>")[0]
            if ctx.startswith(("FAIL", "NONE")):
                out.append(None if ctx.startswith("FAIL") else "")
            else:
                out.append(f"<QUE> about {ctx}? <ANS> {ctx} </END>")
        return out

    return generate


def test_two_rounds_chain_and_prompt_layout():
    log = []
    cols, failures = synthesize_rounds(["T0", "T1", "T2", "T3"], echo_engine(log), rounds=2)
    assert failures == 0
    assert log[0] == [cook_context("T0"), cook_context("T1")]
    assert log[1][0] == ("<s> <CON> T0 </CON>\n\n<QUE> about T0? <ANS> T0 </END></s><s> <CON> T2 </CON>\n\n")
    assert len(cols) == 2
    assert [e.context for e in cols[0]] == ["T0", "T2"]
    assert cols[0][0].followed_by_next is True and cols[0][1].inherit_from_prev is True
    # every text appears exactly once
    assert sorted(e.context for c in cols for e in c) == ["T0", "T1", "T2", "T3"]


def test_three_rounds_demo_extends_back_along_chain():
    log = []
    synthesize_rounds(["A", "B", "C"], echo_engine(log), rounds=3)
    assert log[2][0].count("<CON>") == 3  # A and B as demonstrations, then C


def test_length_guard_breaks_chain():
    log = []
    cols, _ = synthesize_rounds(["x " * 50, "y"], echo_engine(log), rounds=2, max_model_len=60, max_new_tokens=10)
    assert log[1] == [cook_context("y")]
    assert cols[0][0].followed_by_next is False and cols[0][1].inherit_from_prev is False


def test_failure_gives_zero_pairs_and_no_link():
    log = []
    cols, failures = synthesize_rounds(["T0", "FAIL1"], echo_engine(log), rounds=2)
    assert failures == 1
    assert cols[0][1].qa_list == [] and cols[0][1].inherit_from_prev is False
    # the next round after a zero-pair entry gets no demonstration
    cols, _ = synthesize_rounds(["FAIL0", "T1"], echo_engine(log := []), rounds=2)
    assert log[1] == [cook_context("T1")] and cols[0][0].followed_by_next is False


def test_an_answer_without_pairs_is_no_failure():
    """None is a failed generation (recorded, retried by --resume); a string that parses to zero pairs, "" too, is
    an answer: the text is kept without pairs, not failed (issue 25)."""
    for schedule in ("barrier", "pipelined"):
        r = synthesize_part(["T0", "NONE1", "FAIL2", "T3"], echo_engine([]), 2, schedule=schedule)
        assert r.failed == [2] and r.without_pairs == [1], schedule
        assert [len(e.qa_list) for c in r.collections for e in c] == [1, 0, 0, 1]


def test_leftover_chains_are_kept():
    log = []
    cols, _ = synthesize_rounds(["a", "b", "c", "d", "e"], echo_engine(log), rounds=2)
    # round 0 has 3 texts, round 1 has 2: the third chain is prepended to item 0's chain, unconnected
    assert sorted(e.context for c in cols for e in c) == ["a", "b", "c", "d", "e"]
    first = cols[0]
    assert [e.context for e in first] == ["c", "a", "d"]
    assert first[0].followed_by_next is False
    assert first[2].inherit_from_prev is True


def test_split_long_text_fits_and_preserves_words():
    from megatron_ipt.synthesis.engines.base import words_x15
    from megatron_ipt.synthesis.rounds import split_long_text

    text = " ".join(f"w{i}" for i in range(300))
    pieces = split_long_text(text, max_model_len=120, max_new_tokens=20)
    assert len(pieces) > 1 and " ".join(pieces) == text
    assert all(words_x15(cook_context(p)) <= 100 for p in pieces)
    assert split_long_text("short") == ["short"]


def test_extras_are_copied_into_entries():
    cols, _ = synthesize_rounds(
        ["T0", "T1", "T2"],
        echo_engine([]),
        rounds=2,
        extras=[{"id": 0}, {"id": 1, "source": "s"}, {"id": 2, "context": "not me"}],
    )
    by_ctx = {e.context: e for c in cols for e in c}
    assert by_ctx["T1"].carried["source"] == "s" and [by_ctx[t].carried["id"] for t in ("T0", "T1", "T2")] == [0, 1, 2]
    assert by_ctx["T2"].context == "T2"  # an extra key never overrides the format's own keys


def test_split_long_text_with_a_real_tokenizer(mistral_model):
    from megatron_ipt.assets import pydoc_topics
    from megatron_ipt.synthesis.engines.base import load_token_counter
    from megatron_ipt.synthesis.rounds import split_long_text
    from megatron_ipt.tokenizers import TokenizerSpec

    count = load_token_counter(TokenizerSpec("SentencePieceTokenizer", mistral_model))
    calls = []

    def counting(text):
        calls.append(1)
        return count(text)

    text = max(pydoc_topics(), key=len)  # ~30k characters of real text
    pieces = split_long_text(text, max_model_len=1024, max_new_tokens=24, count_tokens=counting)
    assert " ".join(pieces) == text and len(pieces) > 5
    assert all(count(cook_context(p)) <= 1000 for p in pieces)
    # each piece is maximal: one more word would not fit
    words = text.split(" ")
    first = len(pieces[0].split(" "))
    assert count(cook_context(" ".join(words[: first + 1]))) > 1000
    assert len(calls) < 20 * len(pieces)  # binary search, not one count per word


def test_split_long_text_cuts_an_unbreakable_word():
    from megatron_ipt.synthesis.rounds import split_long_text

    pieces = split_long_text(
        "ab " + "x" * 100 + " cd", max_model_len=40, max_new_tokens=0, count_tokens=len
    )  # 1 token per character
    assert "".join(pieces).replace(" ", "") == "ab" + "x" * 100 + "cd"
    assert all(len(cook_context(p)) <= 40 for p in pieces)


def test_pipelined_schedule_equals_barrier():
    """Chains run on their own (round r+1 of a chain asked as soon as its round r is parsed, a few in flight):
    same collections, failures, prompts and generation count as one generate call per round, for every layout
    of texts over rounds (short last rounds, leftover chains) and with failed generations."""
    from megatron_ipt.synthesis.rounds import synthesize_part

    names = [f"FAIL{i}" if i % 7 == 3 else f"T{i}" for i in range(23)]
    for rounds in (1, 2, 3, 4):
        for n in (1, 2, 5, 7, 23):
            a = synthesize_part(names[:n], echo_engine(barrier := []), rounds, schedule="barrier")
            b = synthesize_part(names[:n], echo_engine(piped := []), rounds, schedule="pipelined", max_in_flight=2)
            assert [c.to_json() for c in a.collections] == [c.to_json() for c in b.collections], (rounds, n)
            assert (a.failed, a.prompts, a.generated) == (b.failed, b.prompts, b.generated)
            assert sorted(p for call in barrier for p in call) == sorted(p for call in piped for p in call)
            assert max(len(call) for call in piped) <= 2  # the in-flight bound holds the batches too


@pytest.mark.parametrize("schedule", ["barrier", "pipelined"])
def test_prefix_check_counts_prompts_extending_their_chains_last_prompt_and_generation(schedule):
    """A generation in the template's exact form comes back verbatim in the next prompt (the prefix an engine can
    reuse); one with a tail after its last </END> (cut by max tokens) is re-rendered without it."""
    names = [f"T{i}" for i in range(6)] + ["FAIL6", "T7"]
    echo = echo_engine([])
    r = synthesize_part(names, echo, 2, schedule=schedule)
    # chains T0->T4, T1->T5, T2->FAIL6, T3->T7: four round-2 prompts, each with its chain's demonstration
    assert (r.demonstrations, r.extending) == (4, 4)
    r = synthesize_part(names, lambda prompts: [g and g + " And then" for g in echo(prompts)], 2, schedule=schedule)
    assert (r.demonstrations, r.extending) == (4, 0) and r.failed == [6]


def test_a_raising_generation_cancels_the_other_chains():
    """An engine error (not a failed item: those are None) stops the part at once: the other chains are
    cancelled, and nothing of this part is left on the engine's event loop to run during its next part."""

    class Engine:
        def __init__(self):
            self.loop, self.finished = asyncio.new_event_loop(), []

        def generate(self, prompts):
            raise AssertionError("the pipelined schedule uses agenerate")

        def run(self, coroutine):
            return self.loop.run_until_complete(coroutine)

        async def agenerate(self, prompt):
            ctx = prompt.rsplit("<CON> ", 1)[1].split(" </CON>")[0]
            if ctx == "BOOM":
                await asyncio.sleep(0.01)
                raise RuntimeError("engine broke")
            await asyncio.sleep(0.2)
            self.finished.append(ctx)
            return f"<QUE> about {ctx}? <ANS> {ctx} </END>"

    eng = Engine()
    with pytest.raises(RuntimeError, match="engine broke"):
        synthesize_part(["T0", "BOOM", "T2", "T3", "T4", "T5"], eng, 2, schedule="pipelined", max_in_flight=4)
    assert eng.finished == [] and not asyncio.all_tasks(eng.loop)
    eng.run(asyncio.sleep(0.3))
    assert eng.finished == []
    eng.loop.close()


def test_a_chain_keeps_its_place_until_its_last_round():
    """With one chain in flight, a chain's next round is asked before any chain that has not started: its prefix
    (last prompt + generation) is then still in the engine's cache."""
    log = []
    synthesize_part([f"T{i}" for i in range(6)], echo_engine(log), 2, schedule="pipelined", max_in_flight=1)
    asked = [p.rsplit("<CON> ", 1)[1].split(" </CON>")[0] for call in log for p in call]
    assert asked == ["T0", "T3", "T1", "T4", "T2", "T5"]  # chain i is texts i, 3 + i
