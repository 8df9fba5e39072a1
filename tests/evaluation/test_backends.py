"""Both backends on the same weights: a tiny random Llama (HF) converted to our checkpoint by
tools/convert_checkpoint.py; our backend at TP=1 (one process) and TP=2 (torchrun, gloo) gives HF's per-option
NLLs and greedy generations. Plus a checkpoint trained by tools/pretrain.py (SentencePiece tokenizer), and the
real SmolLM2-135M-Instruct above chance on a built reading-comprehension task."""

import json
import os

import pytest

from megatron_ipt import assets
from megatron_ipt.evaluation import build_tasks, held_out, scoring, tasks
from megatron_ipt.evaluation.hf_backend import HFModel
from megatron_ipt.evaluation.lm import LanguageModel
from tests.conftest import write_jsonl
from tests.evaluation.tiny_llama import make_tiny_llama
from tests.launch import run

NLL_TOLERANCE = 1e-4  # float32, different kernels and reduction orders (measured: ~2e-6)


def evaluate_tiny(checkpoint, task_dir, *flags, nproc=None):
    """tools/evaluate.py as the backend comparisons run it: 12 new tokens, micro-batches of 3."""
    return run(
        "tools/evaluate.py",
        "--load",
        checkpoint,
        "--tasks",
        task_dir,
        "--max-new-tokens",
        "12",
        "--micro-batch-size",
        "3",
        *flags,
        nproc=nproc,
    )


def _predictions(directory, name):
    with open(os.path.join(directory, f"{name}.jsonl")) as f:
        return [json.loads(line) for line in f]


def _scalars(tb_dir, tag):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(tb_dir)
    acc.Reload()
    return {e.step: e.value for e in acc.Scalars(tag)}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    hf = make_tiny_llama(str(root / "hf"))
    run("tools/convert_checkpoint.py", "hf-to-megatron", "--hf-dir", hf, "--save", str(root / "ck"))
    return hf, str(root / "ck")


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("tasks")
    build_tasks.build_tasks(assets.pydoc_topics()[:40], str(out), max_passage_words=60, max_items=5)
    sentiments = ["negative", "neutral", "positive"]
    write_jsonl(
        out / "FPB.jsonl",
        [  # the AdaptLLM format, scored with FPB's metric
            {
                "input": f"{text[:200]}\nQuestion: what is the sentiment?\nAnswer:",
                "options": sentiments,
                "gold_index": i % 3,
            }
            for i, text in enumerate(assets.opticks_paragraphs()[:4])
        ],
    )
    return str(out)


@pytest.fixture(scope="module")
def held_out_text(tmp_path_factory):
    """Held-out documents: short ones and one longer than the tiny model's 512 positions (scored in windows)."""
    texts = [t[:300] for t in assets.opticks_paragraphs()[:3]] + [assets.pydoc_topics()[1][:3000]]
    return write_jsonl(tmp_path_factory.mktemp("held") / "held_out.jsonl", [{"text": t} for t in texts])


@pytest.fixture(scope="module")
def hf_lm(tiny):
    return HFModel(tiny[0], batch_size=4)


def test_megatron_backend_matches_hf_at_tp1_and_tp2(tiny, task_dir, held_out_text, hf_lm, tmp_path):
    hf_dir, ck = tiny
    loaded = tasks.load_tasks([task_dir])
    held = held_out.load_held_out(held_out_text)
    report = scoring.evaluate(loaded, hf_lm, max_new_tokens=12, log=lambda m: None, held_out=held)
    hf_predictions = report.pop("_predictions")
    assert report["tasks"]["FPB"]["metrics"].keys() == {"accuracy", "weighted_f1", "gold_loglik", "gold_margin"}
    assert report["tasks"]["held_out_text"]["windows"] == len(held.documents) + 1  # the long one: 2 windows
    evaluate_tiny(ck, task_dir, "--held-out-text", held_out_text, "--predictions-dir", str(tmp_path / "tp1"))
    out = evaluate_tiny(
        ck,
        task_dir,
        "--held-out-text",
        held_out_text,
        "--tensor-model-parallel-size",
        "2",
        "--predictions-dir",
        str(tmp_path / "tp2"),
        "--output",
        str(tmp_path / "report.json"),
        "--tensorboard-dir",
        str(tmp_path / "tb"),
        nproc=2,
    )
    assert "rc_sentence_choice" in out and "(chance accuracy)" in out and "(tokens)" in out  # the console table
    for task in loaded:
        for layout in ("tp1", "tp2"):
            ours = _predictions(str(tmp_path / layout), task.name)
            theirs = hf_predictions[task.name]
            assert len(ours) == len(theirs) == len(task.items)
            for a, b in zip(ours, theirs):
                assert a["pred"] == b["pred"], (layout, task.name, a, b)
                if task.kind == tasks.CHOICE:
                    assert max(abs(x - y) for x, y in zip(a["option_nll"], b["option_nll"])) < NLL_TOLERANCE
                    assert len(set(round(x, 3) for x in a["option_nll"])) > 1  # options really differ
                    for name in ("gold_loglik", "gold_margin"):
                        assert a[name] == pytest.approx(b[name], abs=2 * NLL_TOLERANCE)
                else:
                    assert a["gold_nll"] == pytest.approx(b["gold_nll"], abs=NLL_TOLERANCE)
    for layout in ("tp1", "tp2"):  # held-out text: the same tokens, the same NLL sums
        ours, theirs = _predictions(str(tmp_path / layout), "held_out_text"), hf_predictions["held_out_text"]
        assert [(r["line"], r["tokens"]) for r in ours] == [(r["line"], r["tokens"]) for r in theirs]
        for a, b in zip(ours, theirs):
            assert a["nll_sum"] == pytest.approx(b["nll_sum"], abs=NLL_TOLERANCE * a["tokens"])
    generated = [p["pred"] for p in hf_predictions["rc_sentence_completion"]]
    assert any(generated)  # the random model says something, and both backends say the same
    with open(tmp_path / "report.json") as f:
        saved = json.load(f)
    assert saved["iteration"] == 0 and saved["tasks"]["rc_sentence_choice"]["items"] == 5
    for name, result in saved["tasks"].items():
        for metric, value in result["metrics"].items():
            assert _scalars(str(tmp_path / "tb"), f"eval/{name}/{metric}") == {0: pytest.approx(value)}


def test_kv_cached_generation_matches_the_recomputing_reference(hf_lm, task_dir):
    task = next(t for t in tasks.load_tasks([task_dir]) if t.kind == tasks.GENERATION)
    prompts = [ids[-40:] for ids in hf_lm.encode_batch([item.prompt for item in task.items])]
    prompts.append(prompts[0][:3])  # uneven lengths in one batch
    assert hf_lm.greedy(prompts, 10) == LanguageModel.greedy(hf_lm, prompts, 10)
    saved = hf_lm.max_length
    try:
        hf_lm.max_length = 45  # 5 tokens of room after a 40-token prompt
        assert [len(g) <= 5 for g in hf_lm.greedy(prompts[:2], 10)] == [True, True]
    finally:
        hf_lm.max_length = saved


def test_trained_checkpoint_sentencepiece_tp1(tmp_path):
    """A checkpoint written by tools/pretrain.py: its iteration is the TensorBoard step; long prompts are cut on
    the left to the model's 64 positions and counted."""
    from tests.training.make_data import make

    tokenizer = assets.mistral_tokenizer_model()
    data = make(str(tmp_path / "pydoc_text_document"), assets.pydoc_topics()[:20], tokenizer)
    ck = str(tmp_path / "ck")
    run(
        "tools/pretrain.py",
        "--model",
        "tiny",
        "--micro-batch-size",
        "1",
        "--train-iters",
        "3",
        "--data-path",
        data,
        "--split",
        "100,0,0",
        "--tokenizer-model",
        tokenizer,
        "--save",
        ck,
        nproc=1,
    )
    task_dir = str(tmp_path / "tasks")
    build_tasks.build_tasks(assets.pydoc_topics()[40:], task_dir, max_sentence_words=20, max_items=4)
    run(
        "tools/evaluate.py",
        "--load",
        ck,
        "--model",
        "tiny",
        "--tokenizer-model",
        tokenizer,
        "--tasks",
        task_dir,
        "--start-token",
        "eod",
        "--output",
        str(tmp_path / "r.json"),
        "--tensorboard-dir",
        str(tmp_path / "tb"),
    )
    with open(tmp_path / "r.json") as f:
        report = json.load(f)
    assert (report["iteration"], report["max_length"], report["start_ids"]) == (3, 64, [2])  # Mistral </s> = 2
    assert report["tasks"]["rc_sentence_choice"]["truncated_prompts"] > 0
    accuracy = report["tasks"]["rc_next_sentence_choice"]["metrics"]["accuracy"]
    assert _scalars(str(tmp_path / "tb"), "eval/rc_next_sentence_choice/accuracy") == {3: pytest.approx(accuracy)}


def test_smollm2_reads_passages_above_chance(tmp_path):
    """Real weights on real held-out text: which sentence appears in the passage (4 options, chance 25%)."""
    build_tasks.build_tasks(assets.opticks_paragraphs()[-60:], str(tmp_path), max_passage_words=50, max_items=10)
    task = tasks.load_task(str(tmp_path / "rc_sentence_choice.jsonl"))
    lm = HFModel(assets.smollm2_hf_dir(), batch_size=8)
    report = scoring.evaluate([task], lm, log=lambda m: None)
    accuracy = report["tasks"]["rc_sentence_choice"]["metrics"]["accuracy"]
    # measured 100.0 (10/10); P(>= 7 of 10 right by chance at 1/4) < 0.004
    assert accuracy >= 70, accuracy
