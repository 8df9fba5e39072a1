"""The continuous metrics for small-scale ablations (issue 22) on the tiny random Llama: per-item gold_loglik /
gold_margin (multiple choice) and gold_nll (generation) against values recomputed independently, task metrics
equal to the means of the per-item values, and held-out perplexity against a manual log-softmax over the model's
logits (one window, and a document cut into windows). The HF backend and ours agree on all of them in
test_backends.py."""

import json
import math
import re

import pytest
import torch

from megatron_ipt import assets
from megatron_ipt.evaluation import held_out, metrics, scoring, tasks
from megatron_ipt.evaluation.hf_backend import HFModel
from megatron_ipt.formats.records import TaskItem
from megatron_ipt.io.inputs import InputError
from tests.conftest import write_jsonl
from tests.evaluation.test_tasks import _cli
from tests.evaluation.tiny_llama import make_tiny_llama

PROMPTS = [
    "The capital of France is",
    "Light passing through a prism is",
    "A function in Python is defined with",
    "The sum of two and two is",
]
WORDS = ["Paris", "split into colours", "the def keyword", "four", "blue", "a cat", "never", "x y z"]


@pytest.fixture(scope="module")
def tiny_hf(tmp_path_factory):
    return make_tiny_llama(str(tmp_path_factory.mktemp("tiny") / "hf"))


@pytest.fixture(scope="module")
def lm(tiny_hf):
    return HFModel(tiny_hf, batch_size=3)


def _choice_task(items, name="mc"):
    for line, item in enumerate(items, 1):
        item.line = line
    return tasks.Task(name, f"{name}.jsonl", tasks.CHOICE, ["accuracy", "weighted_f1"], items)


def _evaluate(lm, task_list, **kwargs):
    report = scoring.evaluate(task_list, lm, max_new_tokens=4, log=lambda m: None, **kwargs)
    return report["tasks"], report["_predictions"]


def test_gold_loglik_and_margin_per_item_and_their_task_means(lm):
    items = [TaskItem(p, options=WORDS[i : i + 4], gold=i % 4) for i, p in enumerate(PROMPTS)]
    results, predictions = _evaluate(lm, [_choice_task(items)])
    rows = predictions["mc"]
    for row in rows:
        nll = row["option_nll"]
        assert row["gold_loglik"] == -nll[row["gold"]]
        best_wrong = max(-x for j, x in enumerate(nll) if j != row["gold"])
        assert row["gold_margin"] == pytest.approx(-nll[row["gold"]] - best_wrong, abs=1e-12)
        assert (row["gold_margin"] > 0) == (row["pred"] == row["gold"])  # no ties on random weights
        assert row["accuracy"] == (100.0 if row["pred"] == row["gold"] else 0.0)
    scores = results["mc"]["metrics"]
    assert list(scores) == ["accuracy", "weighted_f1", "gold_loglik", "gold_margin"]
    for name in ("accuracy", "gold_loglik", "gold_margin"):
        assert scores[name] == sum(r[name] for r in rows) / len(rows)


def test_the_models_favourite_as_gold_has_a_positive_margin_and_its_least_favourite_a_negative_one(lm):
    """The gold option chosen from the model's own NLLs: its favourite option (lowest NLL) as gold gives a margin
    equal to the gap to the runner-up; its least favourite gives a negative margin (the gap to the favourite)."""
    options = WORDS[:5]
    first = _evaluate(lm, [_choice_task([TaskItem(PROMPTS[0], options=options, gold=0)])])[1]["mc"][0]
    ranked = sorted(range(len(options)), key=first["option_nll"].__getitem__)
    nll = sorted(first["option_nll"])
    favourite = TaskItem(PROMPTS[0], options=options, gold=ranked[0])
    least = TaskItem(PROMPTS[0], options=options, gold=ranked[-1])
    results, predictions = _evaluate(lm, [_choice_task([favourite, least])])
    best, worst = predictions["mc"]
    assert best["gold_margin"] > 0 and best["gold_margin"] == pytest.approx(nll[1] - nll[0], abs=1e-5)
    assert worst["gold_margin"] < 0 and worst["gold_margin"] == pytest.approx(nll[0] - nll[-1], abs=1e-5)
    assert results["mc"]["metrics"]["accuracy"] == 50.0


def test_gold_nll_is_the_best_answers_mean_nll_as_the_continuation_space_answer(lm):
    items = [TaskItem(p, answers=[WORDS[i], WORDS[i + 3]]) for i, p in enumerate(PROMPTS)]
    for line, item in enumerate(items, 1):
        item.line = line
    task = tasks.Task("qa", "qa.jsonl", tasks.GENERATION, ["exact_match", "token_f1"], items)
    lm.start_ids = [1]  # a start token before the prompt, as --start-token bos puts it
    try:
        results, predictions = _evaluate(lm, [task])
        rows = predictions["qa"]
        for item, row in zip(items, rows):
            prompt = lm.encode_batch([item.prompt])[0]
            means = []
            for answer in item.answers:
                joint = lm.encode_batch([item.prompt + " " + answer])[0]
                (nll,) = lm.continuation_nlls([([1] + prompt, joint[len(prompt) :])])
                means.append(sum(nll) / len(nll))
            assert row["gold_nll"] == pytest.approx(min(means), abs=1e-6)
            assert row["exact_match"] == metrics.exact_match([item.answers], [row["pred"]])
            assert row["token_f1"] == metrics.token_f1([item.answers], [row["pred"]])
    finally:
        lm.start_ids = []
    scores = results["qa"]["metrics"]
    assert list(scores) == ["exact_match", "token_f1", "gold_nll"]
    for name in scores:
        assert scores[name] == sum(r[name] for r in rows) / len(rows)


def test_gold_nll_leaves_out_answers_too_long_for_the_context_and_an_item_with_none_is_an_error(lm):
    long_answer = " ".join(WORDS * 3)
    item = TaskItem(PROMPTS[0], answers=[long_answer, "Paris"], line=1)
    task = tasks.Task("qa", "qa.jsonl", tasks.GENERATION, ["exact_match", "token_f1"], [item])
    saved = lm.max_length
    try:
        lm.max_length = 12  # room for "Paris" after a cut prompt, not for the long answer
        row = _evaluate(lm, [task])[1]["qa"][0]
        alone = _evaluate(
            lm,
            [
                tasks.Task(
                    "p", "p.jsonl", tasks.GENERATION, ["exact_match"], [TaskItem(PROMPTS[0], answers=["Paris"], line=1)]
                )
            ],
        )[1]["p"][0]
        assert row["gold_nll"] == alone["gold_nll"]
        item.answers = [long_answer]
        with pytest.raises(InputError, match=r"^qa.jsonl:1: no answer can be scored: answer 0 is \d+ tokens, too long"):
            _evaluate(lm, [task])
    finally:
        lm.max_length = saved


def test_generation_item_metrics_average_to_the_task_metrics():
    answers = [["The cat sat."], ["dog", "a red fox"], ["12.5%"]]
    preds = ["cat sat", "red fox jumps", "0.125"]
    for name, task_metric in (
        ("exact_match", metrics.exact_match),
        ("token_f1", metrics.token_f1),
        ("numeric_em", metrics.numeric_em),
    ):
        items = [metrics.generation_item_scores([name], g, p)[name] for g, p in zip(answers, preds)]
        assert task_metric(answers, preds) == sum(items) / len(items), name
    assert [metrics.exact_match_item(g, p) for g, p in zip(answers, preds)] == [100.0, 0.0, 0.0]


def _manual_nll_sum(lm, window):
    """The NLL of window[1:] given the tokens before each: the model's logits, log-softmax, gathered by hand."""
    with torch.no_grad():
        logits = lm.model(input_ids=torch.tensor([window])).logits[0].float()
    return -torch.log_softmax(logits[:-1], dim=-1).gather(1, torch.tensor(window[1:])[:, None]).sum().item()


@pytest.mark.parametrize("start_ids", [[], [1]])
def test_held_out_perplexity_equals_a_manual_log_softmax_in_one_window_and_in_many(lm, tmp_path, start_ids):
    short, long = assets.pydoc_topics()[0][:200], assets.pydoc_topics()[1][:2000]
    path = write_jsonl(tmp_path / "held.jsonl", [{"text": short}, {"text": "  "}, {"text": long, "id": 7}])
    held = held_out.load_held_out(path)
    assert [line for _, line, _ in held.documents] == [1, 3] and held.empty == 1
    saved = lm.start_ids, lm.max_length
    try:
        lm.start_ids, lm.max_length = start_ids, 64
        results, predictions = _evaluate(lm, [], held_out=held)
    finally:
        lm.start_ids, lm.max_length = saved
    streams = [start_ids + ids for ids in lm.encode_batch([short, long])]
    assert len(streams[0]) <= 64 < len(streams[1])  # one window, then several
    rows = predictions["held_out_text"]
    expected = [_manual_nll_sum(lm, streams[0])]
    windows = [streams[1][i : i + 64] for i in range(0, len(streams[1]) - 1, 63)]
    assert len(windows) >= 3 and sum(len(w) - 1 for w in windows) == len(streams[1]) - 1
    expected.append(sum(_manual_nll_sum(lm, w) for w in windows))
    for row, stream, nll_sum in zip(rows, streams, expected):
        assert row["tokens"] == len(stream) - 1  # every token after the stream's first, once
        assert row["nll_sum"] == pytest.approx(nll_sum, rel=1e-5)
    assert [r["line"] for r in rows] == [1, 3] and rows[0]["path"] == path
    result = results["held_out_text"]
    total = sum(len(s) - 1 for s in streams)
    assert (result["kind"], result["items"], result["tokens"], result["empty_documents"]) == ("perplexity", 2, total, 1)
    assert result["metrics"]["nll_per_token"] == pytest.approx(sum(expected) / total, rel=1e-5)
    assert result["metrics"]["perplexity"] == pytest.approx(math.exp(sum(expected) / total), rel=1e-5)


@pytest.mark.parametrize(
    "content, problem",
    [
        ('{"text": "ok"}\n{"txt": "x"}\n', ":2: missing key: 'text'"),
        ('{"text": "ok"}\n\n{"text": 3}\n', ":3: not a string: key 'text' is a number"),
        ('{"text": "ok"}\n{"text": ["a", "b"]}\n', ":2: not a string: key 'text' is a list"),
        ('{"text": "ok"}\n["text"]\n', ":2: not a JSON object: got a list"),
        ('{"text": "ok"}\n{"text": "x"\n', ":2: malformed JSON"),
        ("", ": no documents with a non-empty 'text' \\(0 empty, 0 bad lines skipped\\)"),
        ('{"text": ""}\n{"text": " "}\n', ": no documents with a non-empty 'text' \\(2 empty"),
    ],
)
def test_bad_held_out_text_names_file_and_line_before_any_model_loads(tmp_path, capsys, content, problem):
    path = tmp_path / "held.jsonl"
    path.write_text(content)
    with pytest.raises(InputError, match=re.escape(str(path)) + problem):
        held_out.load_held_out(str(path))
    argv = ["--held-out-text", str(path), "--hf-model", str(tmp_path / "no-such-model")]
    assert _cli().main(argv) == 1  # no model directory there: the error came first
    assert capsys.readouterr().err.startswith(f"error: {path}")


def test_cli_held_out_text_alone_and_nothing_to_evaluate(tiny_hf, tmp_path, capsys):
    docs = [{"body": t[:400]} for t in assets.pydoc_topics()[:3]]
    path = write_jsonl(tmp_path / "held.jsonl", docs)
    argv = ["--hf-model", tiny_hf, "--held-out-text", str(tmp_path / "*.jsonl"), "--held-out-text-key", "body"]
    argv += ["--predictions-dir", str(tmp_path / "preds"), "--output", str(tmp_path / "r.json")]
    assert _cli().main(argv) == 0
    out = capsys.readouterr().out
    assert "held_out_text  perplexity" in out and "(tokens)" in out and "nll_per_token" in out
    result = json.loads((tmp_path / "r.json").read_text())["tasks"]["held_out_text"]
    rows = [json.loads(line) for line in (tmp_path / "preds" / "held_out_text.jsonl").read_text().splitlines()]
    assert [(r["path"], r["line"]) for r in rows] == [(path, 1), (path, 2), (path, 3)]
    assert sum(r["tokens"] for r in rows) == result["tokens"]
    assert sum(r["nll_sum"] for r in rows) / result["tokens"] == pytest.approx(result["metrics"]["nll_per_token"])
    with pytest.raises(SystemExit) as e:
        _cli().main(["--hf-model", tiny_hf])
    assert e.value.code == 2 and "nothing to evaluate: give --tasks, --held-out-text or both" in capsys.readouterr().err
