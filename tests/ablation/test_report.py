"""The ablation report on a RUN tree written as tools/evaluate.py and training write theirs: every number in
report.json is checked against the per-run files it came from."""

import json
import math
import os

import numpy as np
import pytest

from megatron_ipt.ablation.report import (
    NOT_TESTED,
    ReportInputs,
    RunTokens,
    SynthesisCost,
    collect,
    write_report,
)
from megatron_ipt.ablation.stats import BETTER, NO_DIFFERENCE, WORSE
from megatron_ipt.io.inputs import InputError

ARMS = ("vanilla", "mix", "ipt", "ipt_same")  # ipt_same: an "IPT" arm identical to vanilla, run by run
SEEDS = (1, 2, 3)
GLOBAL_BATCH_TOKENS = 8 * 128
ITEMS = {"rc_choice": 60, "rc_completion": 40, "held_out_text": 50}


def _mc_rows(rng, base, shift):
    """Multiple choice: base option NLLs per item (shared by every run), a run's noise, the gold option helped
    by `shift` nats (the planted effect)."""
    rows = []
    for i, (nll, gold) in enumerate(base):
        nll = nll + rng.normal(0, 0.2, nll.shape)
        nll[gold] -= shift
        loglik = -nll
        pred = int(np.argmin(nll))
        rows.append(
            {
                "line": i + 2,  # after the header line
                "id": f"q{i}",
                "gold": gold,
                "pred": pred,
                "option_nll": nll.tolist(),
                "accuracy": 100.0 if pred == gold else 0.0,
                "gold_loglik": float(loglik[gold]),
                "gold_margin": float(loglik[gold] - np.delete(loglik, gold).max()),
            }
        )
    return rows


def _gen_rows(rng, base, shift):
    rows = []
    for i, nll in enumerate(base):
        gold_nll = float(nll + rng.normal(0, 0.1) - shift)
        em = 100.0 if gold_nll < 1.0 else 0.0
        rows.append(
            {
                "line": i + 1,
                "id": f"g{i}",
                "answers": ["x"],
                "pred": "x" if em else "y",
                "exact_match": em,
                "token_f1": min(100.0, max(0.0, 100.0 - 30.0 * gold_nll)),
                "gold_nll": gold_nll,
            }
        )
    return rows


def _ppl_rows(rng, tokens, shift):
    return [
        {
            "path": "held_out.jsonl",
            "line": i + 1,
            "tokens": int(t),
            "nll_sum": float(t * (3.0 - shift + rng.normal(0, 0.05))),
        }
        for i, t in enumerate(tokens)
    ]


def _write_run(run_dir, arm, seed, iteration, base, shift):
    """One run's report.json and predictions, the numbers computed as tools/evaluate.py computes them."""
    # Each run its own noise, except ipt_same, which repeats vanilla's runs exactly.
    rng = np.random.default_rng([seed, ARMS.index("vanilla" if arm == "ipt_same" else arm)])
    rows = {
        "rc_choice": _mc_rows(rng, base["rc_choice"], shift),
        "rc_completion": _gen_rows(rng, base["rc_completion"], shift),
        "held_out_text": _ppl_rows(rng, base["held_out_text"], shift / 10),
    }
    kinds = {"rc_choice": "multiple_choice", "rc_completion": "generation", "held_out_text": "perplexity"}
    tasks = {}
    for name, task_rows in rows.items():
        if kinds[name] == "perplexity":
            nll = sum(r["nll_sum"] for r in task_rows) / sum(r["tokens"] for r in task_rows)
            metrics = {"nll_per_token": nll, "perplexity": math.exp(nll)}
        else:
            names = ("accuracy", "gold_loglik", "gold_margin")
            names = names if kinds[name] == "multiple_choice" else ("exact_match", "token_f1", "gold_nll")
            metrics = {m: sum(r[m] for r in task_rows) / len(task_rows) for m in names}
            if kinds[name] == "multiple_choice":
                metrics["weighted_f1"] = 50.0 + seed + shift  # a task-level metric without per-item values
        tasks[name] = {"kind": kinds[name], "path": f"tasks/{name}.jsonl", "items": len(task_rows), "metrics": metrics}
        if kinds[name] == "multiple_choice":
            tasks[name]["chance_accuracy"] = 25.0
    directory = os.path.join(run_dir, "eval", arm, f"seed{seed}")
    os.makedirs(os.path.join(directory, "predictions"))
    with open(os.path.join(directory, "report.json"), "w") as f:
        json.dump({"model": "ckpt", "backend": "megatron", "iteration": iteration, "tasks": tasks}, f)
    for name, task_rows in rows.items():
        with open(os.path.join(directory, "predictions", f"{name}.jsonl"), "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in task_rows)


def _write_events(run_dir, arm, seed, shift):
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(os.path.join(run_dir, "tensorboard", f"{arm}-seed{seed}"))
    for it in range(1, 41):
        loss = 6.0 * it**-0.3 - shift / 10 + 0.01 * seed
        writer.add_scalar("lm loss", loss, it)
        writer.add_scalar("lm loss vs samples", loss, it * 8)
        if it % 10 == 0:
            writer.add_scalar("lm loss validation", loss + 0.05, it)
            writer.add_scalar("lm loss validation vs samples", loss + 0.05, it * 8)
    writer.close()


SHIFT = {"vanilla": 0.0, "mix": 0.2, "ipt": 0.6, "ipt_same": 0.0}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    run_dir = str(tmp_path_factory.mktemp("RUN"))
    rng = np.random.default_rng(0)
    base = {
        "rc_choice": [(rng.uniform(1.0, 4.0, 4), int(rng.integers(4))) for _ in range(ITEMS["rc_choice"])],
        "rc_completion": rng.uniform(0.5, 2.5, ITEMS["rc_completion"]),
        "held_out_text": rng.integers(20, 400, ITEMS["held_out_text"]),
    }
    for arm in ARMS:
        for seed in SEEDS:
            _write_run(run_dir, arm, seed, 40, base, SHIFT[arm])
            _write_events(run_dir, arm, seed, SHIFT[arm])
    return run_dir


def _inputs(tokens=None, seeds=SEEDS, **kw):
    tokens = tokens or {a: {s: RunTokens(40 * GLOBAL_BATCH_TOKENS, GLOBAL_BATCH_TOKENS) for s in seeds} for a in ARMS}
    return ReportInputs(
        arms=ARMS,
        ipt_arms=("ipt", "ipt_same"),
        baselines=("vanilla", "mix"),
        seeds=seeds,
        tokens=tokens,
        synthesis={"ipt": SynthesisCost("vllm", 2_000_000, 500_000, 360.0, 1_000_000, gpus=2)},
        stage_seconds={"synthesize": 400.0, "train": 1200.0},
        resamples=2000,
        **kw,
    )


@pytest.fixture(scope="module")
def report(run_dir):
    return write_report(run_dir, _inputs())


def test_every_number_equals_the_run_files(run_dir, report):
    on_disk = json.load(open(os.path.join(run_dir, "report", "report.json")))
    assert on_disk == json.loads(json.dumps(report))
    for arm in ARMS:
        for seed in SEEDS:
            run = json.load(open(os.path.join(run_dir, "eval", arm, f"seed{seed}", "report.json")))
            assert on_disk["iterations"][arm][str(seed)] == run["iteration"]
            for name, task in run["tasks"].items():
                assert on_disk["tasks"][name]["items"] == task["items"]
                for metric, value in task["metrics"].items():
                    assert on_disk["tasks"][name]["metrics"][metric]["arms"][arm]["per_seed"][str(seed)] == value
    for task in on_disk["tasks"].values():
        for m in task["metrics"].values():
            for a in m["arms"].values():
                assert a["mean"] == pytest.approx(np.mean(list(a["per_seed"].values())), rel=1e-12)
                if m["per_item"]:
                    assert a["low"] <= a["high"]
            for d in m["differences"].values():
                runs = [m["arms"][d["a"]]["per_seed"][str(s)] - m["arms"][d["b"]]["per_seed"][str(s)] for s in SEEDS]
                assert d["mean"] == pytest.approx(np.mean(runs), rel=1e-12, abs=1e-15)
    # the task-level metric without rows: means, and no verdict pretended
    wf1 = on_disk["tasks"]["rc_choice"]["metrics"]["weighted_f1"]
    assert not wf1["per_item"] and wf1["differences"]["ipt - vanilla"]["verdict"] == NOT_TESTED


def test_verdicts_planted_and_identical(report):
    tasks = report["tasks"]
    assert {t: tasks[t]["deciding_metric"] for t in tasks} == {
        "rc_choice": "gold_margin",
        "rc_completion": "gold_nll",
        "held_out_text": "nll_per_token",
    }
    for name, task in tasks.items():
        m = task["metrics"][task["deciding_metric"]]
        for baseline in ("vanilla", "mix"):
            d = m["differences"][f"ipt - {baseline}"]
            assert d["verdict"] == BETTER, (name, baseline, d)
            assert (d["mean"] > 0) == m["higher_is_better"]  # lower NLL is better: a negative difference
        same = m["differences"]["ipt_same - vanilla"]
        assert (same["mean"], same["low"], same["high"], same["verdict"]) == (0.0, 0.0, 0.0, NO_DIFFERENCE)
        # a second IPT arm is also compared with the first, with its own interval: here the planted gap, reversed
        assert m["differences"]["ipt_same - ipt"]["verdict"] == WORSE, (name, m["differences"]["ipt_same - ipt"])
    assert report["comparisons"] == [
        "ipt - vanilla",
        "ipt - mix",
        "ipt_same - vanilla",
        "ipt_same - mix",
        "ipt_same - ipt",
    ]
    headline = {(v["task"], v["comparison"]) for v in report["verdicts"]}
    assert len(headline) == 3 * 5 and ("rc_choice", "ipt - mix") in headline


def test_loss_curves_come_from_the_events(report):
    loss = report["loss"]
    assert loss["tag"] == "lm loss validation" and loss["runs_without_curves"] == []
    for arm in ARMS:
        per_seed = loss["arms"][arm]["per_seed"]
        for seed in SEEDS:
            expected = 6.0 * 40**-0.3 - SHIFT[arm] / 10 + 0.01 * seed + 0.05
            assert per_seed[str(seed)]["iteration"] == 40
            assert per_seed[str(seed)]["value"] == pytest.approx(expected, rel=1e-6)  # float32 in the events


def test_tokens_cost_and_files(run_dir, report):
    assert report["tokens"]["equal"] and report["tokens"]["spread"] == 0
    cost = report["synthesis_cost"]["ipt"]["per_billion_raw_tokens"]
    assert cost["engine_seconds"] == pytest.approx(360.0 * 1000)
    assert cost["generated_tokens"] == pytest.approx(500_000 * 1000)
    assert cost["gpu_hours"] == pytest.approx(360.0 * 2 * 1000 / 3600)
    figures = os.path.join(run_dir, "report", "figures")
    for name in ("validation_loss.png", "metrics.png"):
        path = os.path.join(figures, name)
        with open(path, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
        import matplotlib.image

        assert matplotlib.image.imread(path).shape[0] > 100
    md = open(os.path.join(run_dir, "report", "report.md")).read()
    verdict_table = md[md.index("## Verdict") : md.index("Deciding metrics")]
    assert "| rc_choice | gold_margin | " in verdict_table and "**better**" in verdict_table
    assert f"**{NO_DIFFERENCE}**" in verdict_table
    assert "tensorboard --logdir RUN/tensorboard" in md and "per 1B raw tokens" in md
    assert "equal within one global batch" in md and "FAILED" not in md


def test_token_mismatch_beyond_one_global_batch_is_flagged(run_dir, tmp_path):
    tokens = {a: {s: RunTokens(40 * GLOBAL_BATCH_TOKENS, GLOBAL_BATCH_TOKENS) for s in SEEDS} for a in ARMS}
    tokens["ipt"][2] = RunTokens(40 * GLOBAL_BATCH_TOKENS + GLOBAL_BATCH_TOKENS // 2, GLOBAL_BATCH_TOKENS)
    from megatron_ipt.ablation.report import _tokens_report

    assert _tokens_report(_inputs(tokens))["equal"]  # half a batch apart: fine
    tokens["ipt"][2] = RunTokens(42 * GLOBAL_BATCH_TOKENS, GLOBAL_BATCH_TOKENS)
    flagged = _tokens_report(_inputs(tokens))
    assert not flagged["equal"] and flagged["message"].startswith("FAILED")
    # and in the written report, first thing in report.md
    import shutil

    copy = str(tmp_path / "RUN")
    shutil.copytree(os.path.join(run_dir, "eval"), os.path.join(copy, "eval"))
    write_report(copy, _inputs(tokens))
    md = open(os.path.join(copy, "report", "report.md")).read()
    assert md.splitlines()[2].startswith("**FAILED: tokens seen differ by 2,048")
    assert not os.path.exists(os.path.join(copy, "report", "figures", "validation_loss.png"))  # no events: none
    assert "No TensorBoard loss curves" in md


def test_one_seed_resamples_items_only(run_dir):
    tokens = {a: {1: RunTokens(100, 10)} for a in ARMS}
    report = write_report(run_dir, _inputs(tokens, seeds=(1,)))
    assert report["bootstrap"]["resampled"] == "items only (one seed)"
    assert report["tasks"]["rc_choice"]["metrics"]["gold_margin"]["differences"]["ipt - vanilla"]["verdict"] == BETTER
    write_report(run_dir, _inputs())  # back to the three seeds for the other tests' files


def _broken_copy(run_dir, tmp_path):
    import shutil

    copy = str(tmp_path / "RUN")
    shutil.copytree(os.path.join(run_dir, "eval"), os.path.join(copy, "eval"))
    return copy


def test_missing_or_mismatched_runs_are_named(run_dir, tmp_path):
    copy = _broken_copy(run_dir, tmp_path)
    predictions = os.path.join(copy, "eval", "mix", "seed2", "predictions", "rc_completion.jsonl")
    rows = open(predictions).readlines()
    with open(predictions, "w") as f:
        f.writelines(rows[:-1])
    with pytest.raises(InputError, match=r"mix/seed2/predictions/rc_completion.jsonl: 39 rows, but .* 40 items"):
        collect(copy, ARMS, SEEDS)
    with open(predictions, "w") as f:
        f.writelines(rows[1:] + rows[:1])  # the same items in another order
    with pytest.raises(InputError, match="not those of .* in the same order"):
        collect(copy, ARMS, SEEDS)
    with open(predictions, "w") as f:  # a stale file: rows that do not give the run's reported numbers
        f.writelines(json.dumps({**json.loads(r), "gold_nll": 9.0}) + "\n" for r in rows)
    with pytest.raises(InputError, match="rows give gold_nll 9.0, but the run's report.json says"):
        write_report(copy, _inputs())
    os.remove(os.path.join(copy, "eval", "ipt", "seed3", "report.json"))
    with pytest.raises(InputError, match=r"ipt/seed3/report.json: missing"):
        collect(copy, ARMS, SEEDS)


def test_training_loss_stands_in_where_no_validation_was_logged(run_dir, tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    copy = _broken_copy(run_dir, tmp_path)
    for arm in ARMS:
        for seed in SEEDS[:2]:  # seed 3 has no events at all
            writer = SummaryWriter(os.path.join(copy, "tensorboard", f"{arm}-seed{seed}"))
            for it in (1, 2, 3):
                writer.add_scalar("lm loss", 5.0 - it - SHIFT[arm], it)
            writer.close()
    loss = write_report(copy, _inputs())["loss"]
    assert loss["tag"] == "lm loss" and loss["runs_without_curves"] == [f"{a}-seed3" for a in ARMS]
    assert loss["arms"]["ipt"]["final_mean"] == pytest.approx(2.0 - SHIFT["ipt"])
    assert os.path.getsize(os.path.join(copy, "report", "figures", "validation_loss.png")) > 0
    md = open(os.path.join(copy, "report", "report.md")).read()
    assert "Final `lm loss`" in md and "No loss curves for vanilla-seed3" in md


def test_runs_reporting_different_metrics_are_named(run_dir, tmp_path):
    copy = _broken_copy(run_dir, tmp_path)
    path = os.path.join(copy, "eval", "ipt", "seed2", "report.json")
    report = json.load(open(path))
    del report["tasks"]["rc_choice"]["metrics"]["gold_margin"]
    json.dump(report, open(path, "w"))
    with pytest.raises(InputError, match=r"ipt/seed2/report.json: rc_choice: metrics .* != "):
        collect(copy, ARMS, SEEDS)
